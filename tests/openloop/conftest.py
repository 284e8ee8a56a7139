"""A real server for the open-loop Locust tests: FastAPI on uvicorn (thread pool, so it serves requests
concurrently) with a model that sleeps 5 ms, pinned to the first CPU; Locust goes on the last."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from servingbench.harness.processes import LOCALHOST, ServerProcess, free_port, running_server
from servingbench.servers.launch import ServerConfig, launch_command

SLEEPY_MODEL = "synthetic:sleep_ms=5"
SERVER_CPUS = [min(os.sched_getaffinity(0))]
LOAD_CPUS = [max(os.sched_getaffinity(0))]
PAYLOAD = b'{"features": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}'
"""One row of the 10 features every default and synthetic model takes."""


@pytest.fixture(scope="session")
def sleepy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A started server (its own process group, so it can be frozen with SIGSTOP), stopped after the session."""
    port = free_port()
    command = launch_command(ServerConfig("fastapi", "uvicorn"), host=LOCALHOST, port=port, model=SLEEPY_MODEL)
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(command.argv, command.env, port=port, log_path=log_path, cpus=SERVER_CPUS) as server:
        yield server
