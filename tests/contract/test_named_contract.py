"""Named-column requests (a model fitted on a DataFrame), run on every adapter in process: each mistake is a 422
naming the column, the same bytes on every adapter, and no record ever gets a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servingbench.shared_model import Settings
from servingbench.shared_model.importer import import_model
from tests.contract.checks import check_contract, signature
from tests.contract.conftest import ADAPTERS, ClientFactory, adapter_client
from tests.contract.named_cases import NAMED_CASES, RECORD, NamedCase
from tests.unit.byo_models import CITIES, frame, hgb_from_dtype, onehot_pipeline

SAMPLE_ROWS = 30
COLUMN_TYPES = {"age": "integer", "income": "number", "city": "string", "member": "boolean"}


@pytest.fixture(scope="module")
def named_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-hot pipeline (unseen cities and nulls refused) and a HistGradientBoosting model answering probabilities."""
    root = tmp_path_factory.mktemp("named")
    sample = root / "rows.csv"
    frame(SAMPLE_ROWS, seed=5).to_csv(sample, index=False)
    sio.dump(onehot_pipeline(), root / "churn.skops")
    sio.dump(hgb_from_dtype(), root / "churn-hgb.skops")
    models = root / "models"
    return {
        "churn": import_model(root / "churn.skops", models_dir=models, sample=sample).path,
        "proba": import_model(root / "churn-hgb.skops", models_dir=models, sample=sample, output="predict_proba").path,
    }


def _clients(model: Path) -> Iterator[dict[str, httpx.Client]]:
    settings = Settings(model=str(model), models_dir=str(model.parent))
    with ExitStack() as stack:
        yield {name: stack.enter_context(adapter_client(name, settings)) for name in ADAPTERS}


@pytest.fixture(scope="module")
def named(named_models: dict[str, Path]) -> Iterator[dict[str, httpx.Client]]:
    yield from _clients(named_models["churn"])


@pytest.fixture(scope="module")
def proba(named_models: dict[str, Path]) -> Iterator[dict[str, httpx.Client]]:
    yield from _clients(named_models["proba"])


def _send(client: httpx.Client, case: NamedCase) -> httpx.Response:
    return client.post(case.path, content=case.body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("case", NAMED_CASES, ids=[c.name for c in NAMED_CASES])
def test_named_case_names_the_column_identically_on_every_adapter(
    named: dict[str, httpx.Client], case: NamedCase
) -> None:
    answers = {name: _send(client, case) for name, client in named.items()}
    assert len({signature(response) for response in answers.values()}) == 1, case.name
    response = answers["fastapi"]
    check_contract(response, case.as_case())
    if case.column is not None:
        doc = response.json()
        assert case.column in [e["loc"][-1] for e in doc["errors"]], doc
        assert f"column {case.column!r}" in doc["detail"], doc["detail"]
        if case.error_type:
            assert case.error_type in [e["type"] for e in doc["errors"]], doc


def test_empty_record_lists_every_missing_column(named: dict[str, httpx.Client]) -> None:
    doc = named["flask"].post("/predict", json={"features": {}}).json()
    assert sorted(e["loc"][-1] for e in doc["errors"]) == sorted(COLUMN_TYPES)


def test_a_record_predicts_like_the_model(named: dict[str, httpx.Client]) -> None:
    single = named["fastapi"].post("/predict", json={"features": RECORD}).json()
    batch = named["flask"].post("/predict/batch", json={"instances": [RECORD, RECORD]}).json()
    expected = onehot_pipeline().predict(frame(1).assign(**{k: [v] for k, v in RECORD.items()}))[0]
    assert single == {"prediction": expected}
    assert batch == {"predictions": [expected, expected]}


def test_probabilities_come_back_keyed_by_class(proba: dict[str, httpx.Client]) -> None:
    for client in proba.values():
        one = client.post("/predict", json={"features": RECORD}).json()
        assert list(one) == ["probabilities"] and list(one["probabilities"]) == ["no", "yes"]
        assert sum(one["probabilities"].values()) == pytest.approx(1.0)
        many = client.post("/predict/batch", json={"instances": [RECORD, RECORD]}).json()
        assert many == {"probabilities": [one["probabilities"]] * 2}


def test_a_model_that_takes_nulls_and_unseen_categories_answers_them(proba: dict[str, httpx.Client]) -> None:
    record = {**RECORD, "income": None, "city": "Stavanger"}
    answers = {signature(c.post("/predict", json={"features": record})) for c in proba.values()}
    assert len(answers) == 1 and next(iter(answers))[0] == 200


def test_openapi_gives_each_column_its_type(named: dict[str, httpx.Client]) -> None:
    schemas = named["flask"].get("/openapi.json").json()["components"]["schemas"]
    record = schemas["Record"]
    # member is dropped by the ColumnTransformer, so the model takes null there
    assert {name: prop["type"] for name, prop in record["properties"].items()} == {
        **COLUMN_TYPES,
        "member": ["boolean", "null"],
    }
    assert record["properties"]["city"]["enum"] == list(CITIES)
    assert record["required"] == list(COLUMN_TYPES) and record["additionalProperties"] is False
    assert schemas["PredictRequest"]["properties"]["features"] == {"$ref": "#/components/schemas/Record"}


def test_get_model_describes_the_input_and_samples(named: dict[str, httpx.Client]) -> None:
    info = named["fastapi"].get("/model").json()
    assert [c["name"] for c in info["input"]["columns"]] == list(COLUMN_TYPES)
    assert info["output"]["kind"] == "label" and info["sample_source"] == "file rows.csv"
    assert len(info["sample"]) == SAMPLE_ROWS


def test_client_factory_serves_a_named_model(client_factory: ClientFactory, named_models: dict[str, Path]) -> None:
    path = named_models["churn"]
    with client_factory(model=str(path), models_dir=str(path.parent), max_batch_rows=2) as client:
        too_many = client.post("/predict/batch", json={"instances": [RECORD] * 3})
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["type"] == "batch_too_large"


_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.sampled_from(CITIES)
_nested = st.recursive(_values, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner))
_keys = st.sampled_from([*COLUMN_TYPES, "zip", ""])
_records = st.dictionaries(_keys, _nested, max_size=6) | st.fixed_dictionaries({k: _values for k in COLUMN_TYPES})
_bodies = st.one_of(
    st.fixed_dictionaries({"features": _records}).map(lambda d: ("/predict", d)),
    st.fixed_dictionaries({"instances": st.lists(_records, max_size=3)}).map(lambda d: ("/predict/batch", d)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_bodies)
def test_no_record_gives_a_server_error(named: dict[str, httpx.Client], request: tuple[str, object]) -> None:
    path, doc = request
    body = json.dumps(doc, allow_nan=True).encode()
    answers = {
        signature(client.post(path, content=body, headers={"Content-Type": "application/json"}))
        for client in named.values()
    }
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] < 500, answers
