"""The container files, checked without a Docker engine: paths, and the environment that runs the image's entrypoint
outside Docker (this virtualenv's ``servingbench`` and ``python`` first on ``PATH``, as ``/opt/venv/bin`` is in the
image)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
