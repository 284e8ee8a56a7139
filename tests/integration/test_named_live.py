"""Named-column probes over real HTTP: an imported DataFrame model served by uvicorn and by gunicorn (sync and gthread),
each probe answered with the same bytes by every server kind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx2 as httpx
import pytest
import skops.io as sio

from servingbench.harness.processes import free_port, running_server
from servingbench.servers import launch_command
from servingbench.shared_model import Settings
from servingbench.shared_model.importer import import_model
from tests.contract.checks import check_contract, signature
from tests.contract.named_cases import NAMED_CASES, RECORD, NamedCase
from tests.integration.conftest import KINDS, STARTUP_TIMEOUT_S
from tests.unit.byo_models import frame, onehot_pipeline

pytestmark = pytest.mark.slow
LIVE_KINDS = ("fastapi-uvicorn", "fastapi-gunicorn-uvicorn", "flask-gunicorn-sync", "flask-gunicorn-gthread")
SAMPLE_ROWS = 30


@pytest.fixture(scope="module")
def named_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, httpx.Client]]:
    root = tmp_path_factory.mktemp("named-live")
    frame(SAMPLE_ROWS, seed=5).to_csv(root / "rows.csv", index=False)
    sio.dump(onehot_pipeline(), root / "churn.skops")
    model = import_model(root / "churn.skops", models_dir=root / "models", sample=root / "rows.csv").path
    settings = Settings(models_dir=str(model.parent))
    with ExitStack() as stack:
        clients = {}
        for name in LIVE_KINDS:
            port = free_port()
            command = launch_command(KINDS[name], host="127.0.0.1", port=port, model=str(model), settings=settings)
            server = stack.enter_context(
                running_server(
                    command.argv,
                    command.env,
                    port=port,
                    log_path=root / f"{name}.log",
                    startup_timeout_s=STARTUP_TIMEOUT_S,
                )
            )
            clients[name] = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=60.0))
        yield clients


def _send(client: httpx.Client, case: NamedCase) -> httpx.Response:
    return client.post(case.path, content=case.body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("case", NAMED_CASES, ids=[c.name for c in NAMED_CASES])
def test_live_named_case_is_answered_alike(named_live: dict[str, httpx.Client], case: NamedCase) -> None:
    answers = {name: _send(client, case) for name, client in named_live.items()}
    assert len({signature(response) for response in answers.values()}) == 1, case.name
    check_contract(next(iter(answers.values())), case.as_case())


def test_live_batch_of_sample_rows(named_live: dict[str, httpx.Client]) -> None:
    info = named_live["flask-gunicorn-sync"].get("/model").json()
    body = {"instances": info["sample"][:SAMPLE_ROWS]}
    answers = {signature(client.post("/predict/batch", json=body)) for client in named_live.values()}
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    single = named_live["fastapi-uvicorn"].post("/predict", json={"features": RECORD})
    assert single.status_code == 200
