"""The container files, checked without a Docker engine: paths, and the environment that runs the image's entrypoint
outside Docker (this virtualenv's ``servingbench`` and ``python`` first on ``PATH``, as ``/opt/venv/bin`` is in the
image)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from servingbench.harness.processes import LOCALHOST, free_port, running_server
from servingbench.servers import ServerConfig, launch_command

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
VENV_BIN = Path(sys.executable).parent


def entrypoint_env(**variables: str) -> dict[str, str]:
    """This process's environment without any ``SB_*`` variable, plus ``variables``, with the venv first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SB_")}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(variables)
    return env


#: The model of the live server the distributed-load tests drive: 1 ms per call.
SERVER_MODEL = "synthetic:sleep_ms=1"


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """A FastAPI/uvicorn server on a free loopback port whose model sleeps 1 ms per call."""
    port = free_port()
    command = launch_command(ServerConfig("fastapi", "uvicorn"), host=LOCALHOST, port=port, model=SERVER_MODEL)
    with running_server(command.argv, command.env, port=port, log_path=tmp_path / "server.log") as server:
        yield server.base_url


def payload_for(base_url: str) -> bytes:
    """A valid single-row body for the server at ``base_url`` (its feature count read from ``GET /model``)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url + "/model", timeout=5) as response:
        n_features = int(json.loads(response.read())["n_features"])
    return json.dumps({"features": [0.5] * n_features}).encode()
