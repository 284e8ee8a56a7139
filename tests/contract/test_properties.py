"""Property-based: whatever the body, no adapter answers 5xx, and every adapter answers the same bytes."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contract.cases import N_FEATURES
from tests.contract.checks import signature
from tests.contract.conftest import ADAPTERS

# slow: 150 generated cases (hypothesis) per test against every adapter; the fixed cases of test_contract.py stay in
# make test-fast
pytestmark = pytest.mark.slow

PATHS = st.sampled_from(["/predict", "/predict/batch"])
MEDIA = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"])
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner))
_row = st.lists(st.floats() | st.integers(), min_size=N_FEATURES - 1, max_size=N_FEATURES + 1)
_documents = st.one_of(
    _json,
    st.fixed_dictionaries({"features": _row}),
    st.fixed_dictionaries({"instances": st.lists(_row, max_size=3)}),
    st.fixed_dictionaries({"features": _json}),
)


def _encode(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


BODIES = st.one_of(st.binary(max_size=200), _documents.map(_encode))
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(path=PATHS, body=BODIES, media=MEDIA)
def test_no_body_gives_a_server_error(clients: dict[str, httpx.Client], path: str, body: bytes, media: str) -> None:
    headers = {"Content-Type": media} if media else {}
    for name in ADAPTERS:
        response = clients[name].post(path, content=body, headers=headers)
        assert response.status_code < 500, (name, body, response.content)


@_SETTINGS
@given(path=PATHS, body=BODIES)
def test_adapters_answer_the_same_bytes(clients: dict[str, httpx.Client], path: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    answers = {name: signature(clients[name].post(path, content=body, headers=headers)) for name in ADAPTERS}
    assert len(set(answers.values())) == 1, answers


@_SETTINGS
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), path=st.text(max_size=20))
def test_any_method_and_path_is_answered_alike(clients: dict[str, httpx.Client], method: str, path: str) -> None:
    url = "/" + "".join(c for c in path if (c.isascii() and c.isalnum()) or c in "/-_.")
    answers = {name: signature(clients[name].request(method, url)) for name in ADAPTERS}
    assert len(set(answers.values())) == 1, answers
    assert all(answer[0] < 500 for answer in answers.values())
