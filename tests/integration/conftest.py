"""Real servers on loopback: every server kind started once per session on a free port, always reaped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from servingbench.harness.processes import free_port, running_server
from servingbench.servers import ServerConfig, launch_command
from servingbench.shared_model import Settings

#: Every server kind of the matrix, plus FastAPI's labelled ``async def`` variant.
KINDS: dict[str, ServerConfig] = {
    "fastapi-uvicorn": ServerConfig("fastapi", "uvicorn"),
    "fastapi-uvicorn-async": ServerConfig("fastapi", "uvicorn", route="async"),
    "fastapi-gunicorn-uvicorn": ServerConfig("fastapi", "gunicorn-uvicorn"),
    "flask-gunicorn-sync": ServerConfig("flask", "gunicorn-sync"),
    "flask-gunicorn-gthread": ServerConfig("flask", "gunicorn-gthread", threads=4),
}
STARTUP_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def live_servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of every server kind, serving the ``fast`` model; all stopped at the end of the session."""
    logs = tmp_path_factory.mktemp("server-logs")
    settings = Settings(models_dir=str(models_dir))
    with ExitStack() as stack:
        urls = {}
        for name, config in KINDS.items():
            port = free_port()
            command = launch_command(config, host="127.0.0.1", port=port, model="fast", settings=settings)
            server = stack.enter_context(
                running_server(
                    command.argv,
                    command.env,
                    port=port,
                    log_path=logs / f"{name}.log",
                    startup_timeout_s=STARTUP_TIMEOUT_S,
                )
            )
            urls[name] = server.base_url
        yield urls
