"""The contract suite again, over real HTTP, against every framework on every server kind; the idiomatic variants
over real HTTP too, held to no 5xx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.contract.cases import CASES, JSON_CT, Case
from tests.contract.checks import check_contract, send, signature
from tests.integration.conftest import KINDS, VARIANT_KINDS

pytestmark = pytest.mark.slow
HUGE_BODY_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def live_clients(live_servers: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    clients = {name: httpx.Client(base_url=url, timeout=60.0) for name, url in live_servers.items()}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_live_case(live_clients: dict[str, httpx.Client], kind: str, case: Case) -> None:
    check_contract(send(live_clients[kind], case), case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_live_kinds_answer_identical_bytes(live_clients: dict[str, httpx.Client], case: Case) -> None:
    answers = {name: signature(send(live_clients[name], case)) for name in KINDS}
    assert len(set(answers.values())) == 1, answers


@pytest.mark.parametrize("kind", list(VARIANT_KINDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_live_variant_never_answers_5xx(live_clients: dict[str, httpx.Client], kind: str, case: Case) -> None:
    response = send(live_clients[kind], case)
    assert response.status_code < 500, (kind, case.name, response.content[:300])


@pytest.mark.parametrize("kind", list(VARIANT_KINDS))
def test_live_variant_survives_a_hundred_megabyte_body(live_clients: dict[str, httpx.Client], kind: str) -> None:
    response = live_clients[kind].post("/predict", content=b"0" * HUGE_BODY_BYTES, headers=JSON_CT)
    assert response.status_code < 500
    assert live_clients[kind].get("/healthz").status_code == 200


@pytest.mark.parametrize("kind", list(KINDS))
def test_chunked_body_over_limit_is_413(live_clients: dict[str, httpx.Client], kind: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"features":['
        for _ in range(160):
            yield b"0," * 8192
        yield b"0]}"

    response = live_clients[kind].post("/predict", content=chunks(), headers=JSON_CT)
    assert response.status_code == 413


@pytest.mark.parametrize("kind", list(KINDS))
def test_hundred_megabyte_body_is_413(live_clients: dict[str, httpx.Client], kind: str) -> None:
    response = live_clients[kind].post("/predict", content=b"0" * HUGE_BODY_BYTES, headers=JSON_CT)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert live_clients[kind].get("/healthz").status_code == 200


FUZZ_EXAMPLES = "30"


@pytest.mark.parametrize(
    "kind", ["fastapi-uvicorn", "flask-gunicorn-sync", "litestar-uvicorn", "asgi-granian", "wsgi-granian"]
)
def test_openapi_fuzzer_finds_nothing(live_servers: dict[str, str], kind: str, tmp_path: Path) -> None:
    """Schemathesis, driven by the served OpenAPI document, with every check it has."""
    argv = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{live_servers[kind]}/openapi.json"]
    argv += ["--checks", "all", "--max-examples", FUZZ_EXAMPLES, "--seed", "7", "--no-color"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
