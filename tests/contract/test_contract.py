"""The HTTP contract of DESIGN.md, run on every adapter in process."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from servingbench.shared_model import Settings
from tests.contract.cases import CASES, JSON_CT, ROW, Case
from tests.contract.checks import check_contract, send, signature
from tests.contract.conftest import ADAPTERS, ClientFactory


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_status_and_body(clients: dict[str, httpx.Client], adapter: str, case: Case) -> None:
    check_contract(send(clients[adapter], case), case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adapters_answer_identical_bytes(clients: dict[str, httpx.Client], case: Case) -> None:
    answers = {name: signature(send(clients[name], case)) for name in ADAPTERS}
    assert len(set(answers.values())) == 1, answers


def test_prediction_is_a_number(clients: dict[str, httpx.Client], adapter: str) -> None:
    doc = clients[adapter].post("/predict", json={"features": ROW}).json()
    assert list(doc) == ["prediction"]
    assert isinstance(doc["prediction"], float)


def test_batch_predicts_each_row_like_single(clients: dict[str, httpx.Client], adapter: str) -> None:
    client = clients[adapter]
    rows = [[v * k for v in ROW] for k in range(1, 5)]
    batch = client.post("/predict/batch", json={"instances": rows}).json()["predictions"]
    singles = [client.post("/predict", json={"features": row}).json()["prediction"] for row in rows]
    assert batch == pytest.approx(singles, rel=1e-12)


def test_model_info_describes_the_loaded_model(clients: dict[str, httpx.Client], adapter: str) -> None:
    info = clients[adapter].get("/model").json()
    assert info["name"] == "fast"
    assert info["n_features"] == len(ROW) == len(info["feature_names"])
    assert len(info["sha256"]) == 64


def test_openapi_describes_the_contract(clients: dict[str, httpx.Client], adapter: str) -> None:
    doc = clients[adapter].get("/openapi.json").json()
    assert set(doc["paths"]) == {"/predict", "/predict/batch", "/healthz", "/model"}
    features = doc["components"]["schemas"]["PredictRequest"]["properties"]["features"]
    assert features["minItems"] == features["maxItems"] == len(ROW)


def test_settings_override_limits(client_factory: ClientFactory) -> None:
    with client_factory(max_body_bytes=64) as client:
        big = client.post("/predict", content=json.dumps({"features": ROW}).encode(), headers=JSON_CT)
    with client_factory(max_batch_rows=2) as client:
        rows = client.post("/predict/batch", json={"instances": [ROW] * 3})
    assert big.status_code == 413
    assert rows.status_code == 422
    assert rows.json()["errors"][0]["type"] == "batch_too_large"


def test_settings_override_model(client_factory: ClientFactory) -> None:
    with client_factory(model="synthetic:cpu_us=1") as client:
        info = client.get("/model").json()
        prediction = client.post("/predict", json={"features": [1.0] * len(ROW)}).json()["prediction"]
    assert info["kind"] == "synthetic"
    assert prediction == pytest.approx(float(len(ROW)))


def test_settings_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVINGBENCH_MODEL", "synthetic:sleep_ms=1")
    monkeypatch.setenv("SERVINGBENCH_MAX_BATCH_ROWS", "7")
    settings = Settings.from_env()
    assert (settings.model, settings.max_batch_rows) == ("synthetic:sleep_ms=1", 7)
