"""The idiomatic variants: not held to byte parity, held to the same predictions as their equal-work counterpart
for every valid request, to no 5xx for any input, and to a list of their differences that cannot go stale."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servingbench.servers.registry import FRAMEWORKS
from servingbench.shared_model.limits import MAX_ABS_FEATURE
from tests.contract.cases import CASES, JSON_CT, N_FEATURES, Case
from tests.contract.checks import send
from tests.contract.conftest import VARIANTS
from tests.contract.differences import DOC, differences_block, documented_block
from tests.contract.test_properties import BODIES, MEDIA, PATHS

_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: Valid feature values: finite JSON numbers within the schema's bounds, integers included (the schema takes them).
_value = st.floats(min_value=-MAX_ABS_FEATURE, max_value=MAX_ABS_FEATURE, allow_nan=False) | st.integers(
    -(10**9), 10**9
)
_row = st.lists(_value, min_size=N_FEATURES, max_size=N_FEATURES)


def _counterpart(variant: str) -> str:
    counterpart = FRAMEWORKS[variant].counterpart
    assert counterpart is not None, f"{variant} names no equal-work counterpart"
    return counterpart


def _predictions(client: httpx.Client, path: str, doc: object) -> object:
    response = client.post(path, content=json.dumps(doc).encode(), headers=JSON_CT)
    assert response.status_code == 200, (path, response.content[:300])
    return response.json()


def test_every_variant_is_in_the_suite() -> None:
    assert set(VARIANTS) == {name for name, entry in FRAMEWORKS.items() if entry.role == "variant"}
    assert VARIANTS, "the registry lists the idiomatic variants"


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@_SETTINGS
@given(row=_row)
def test_variant_predicts_like_its_counterpart(
    clients: dict[str, httpx.Client], variant: str, row: list[float]
) -> None:
    doc = {"features": row}
    ours = _predictions(clients[variant], "/predict", doc)
    assert ours == _predictions(clients[_counterpart(variant)], "/predict", doc)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@_SETTINGS
@given(rows=st.lists(_row, min_size=1, max_size=5))
def test_variant_batch_predicts_like_its_counterpart(
    clients: dict[str, httpx.Client], variant: str, rows: list[list[float]]
) -> None:
    doc = {"instances": rows}
    ours = _predictions(clients[variant], "/predict/batch", doc)
    assert ours == _predictions(clients[_counterpart(variant)], "/predict/batch", doc)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_variant_answers_every_probe_without_a_server_error(
    clients: dict[str, httpx.Client], variant: str, case: Case
) -> None:
    response = send(clients[variant], case)
    assert response.status_code < 500, (variant, case.name, response.content[:300])
    if case.status == 200 and case.path.startswith("/predict"):
        assert response.status_code == 200, (variant, case.name, response.content[:300])


@pytest.mark.parametrize("variant", VARIANTS)
@_SETTINGS
@given(path=PATHS, body=BODIES, media=MEDIA)
def test_no_body_gives_a_variant_a_server_error(
    clients: dict[str, httpx.Client], variant: str, path: str, body: bytes, media: str
) -> None:
    headers = {"Content-Type": media} if media else {}
    response = clients[variant].post(path, content=body, headers=headers)
    assert response.status_code < 500, (variant, body, response.content[:300])


def test_docs_list_the_variants_contract_differences(clients: dict[str, httpx.Client]) -> None:
    generated = differences_block(clients, VARIANTS)
    assert documented_block(DOC.read_text()) == generated, "run `python -m tests.contract.differences` to update"
