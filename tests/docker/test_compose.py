"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

``docker-compose config`` (Debian's docker-compose v1, which CI installs) validates and resolves the compose file;
the resolved services are then checked for fairness (both servers get the same cores, memory, model and BLAS
threads), scalability and the command lines each service's role produces through the real entrypoint.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from servingbench.cli import build_parser
from servingbench.harness import distributed

from .conftest import COMPOSE_FILE, DOCKERFILE, DOCKERIGNORE, ENTRYPOINT, ROOT, entrypoint_env

COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
COMMAND_TIMEOUT_S = 60.0
SERVERS = ("fastapi", "flask")
PER_SERVER_KEYS = ("SB_FRAMEWORK", "SB_SERVER")
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RUNTIME_STAGE = "runtime"


def _compose_env(**overrides: str) -> dict[str, str]:
    # The knobs come from the caller's environment; the test sees the defaults unless it overrides one.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SB_", "COMPOSE_"))}
    env.update(overrides)
    return env


def _compose(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    return subprocess.run(
        [COMPOSE, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        env=_compose_env(**overrides),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _services(**overrides: str) -> dict[str, dict[str, Any]]:
    done = _compose("config", **overrides)
    assert done.returncode == 0, done.stderr
    services: dict[str, dict[str, Any]] = yaml.safe_load(done.stdout)["services"]
    return services


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    return _services()


@needs_compose
def test_compose_config_accepts_the_file() -> None:
    done = _compose("config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"fastapi", "flask", "locust-master", "locust-worker"}
    assert {service["image"] for service in services.values()} == {"servingbench:local"}
    assert all(service["build"]["dockerfile"] == "docker/Dockerfile" for service in services.values())


def _without_framework(environment: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environment.items() if key not in PER_SERVER_KEYS}


def test_servers_get_the_same_resources(services: dict[str, dict[str, Any]]) -> None:
    fastapi, flask = (services[name] for name in SERVERS)
    for key in ("cpuset", "mem_limit", "volumes", "healthcheck", "init", "expose"):
        assert fastapi[key] == flask[key], key
    assert _without_framework(fastapi["environment"]) == _without_framework(flask["environment"])
    environment = fastapi["environment"]
    assert {environment[name] for name in BLAS_VARS} == {environment["SB_BLAS_THREADS"]}
    assert fastapi["volumes"] == [f"{ROOT / 'models'}:/models:ro"]
    assert environment["SB_MODELS_DIR"] == "/models"


@needs_compose
def test_resource_knobs_reach_both_servers_alike() -> None:
    services = _services(SB_SERVER_CPUS="2,3", SB_BLAS_THREADS="2", SB_SERVER_MEMORY="1g")
    for name in SERVERS:
        assert services[name]["cpuset"] == "2,3"
        assert services[name]["mem_limit"] == "1g"
        assert {services[name]["environment"][var] for var in BLAS_VARS} == {"2"}


def test_load_runs_on_other_cores_and_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["locust-worker"]
    assert worker["cpuset"] != services["fastapi"]["cpuset"]
    # --scale needs interchangeable replicas: no fixed name, no published host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["SB_MASTER"] == "locust-master"


def test_master_waits_for_healthy_servers(services: dict[str, dict[str, Any]]) -> None:
    master = services["locust-master"]
    assert master["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVERS}
    assert master["volumes"] == [f"{ROOT / 'results'}:/work/results:rw"]
    assert master["environment"]["SB_MASTER_BIND"] == "0.0.0.0"


def _role_argv(service: dict[str, Any]) -> list[str]:
    """The command the service's role runs, printed by the real entrypoint with the service's environment."""
    environment = {key: str(value) for key, value in service["environment"].items()}
    done = subprocess.run(
        [str(ENTRYPOINT), *service["command"]],
        env=entrypoint_env(SB_DRY_RUN="1", **environment),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


@pytest.mark.parametrize("name", SERVERS)
def test_server_command_is_accepted_by_the_cli(services: dict[str, dict[str, Any]], name: str) -> None:
    argv = _role_argv(services[name])
    assert argv[0] == "servingbench"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.framework, args.host, args.port) == ("serve", name, "0.0.0.0", 8000)
    assert str(args.models_dir) == "/models"


def test_worker_command_is_accepted(services: dict[str, dict[str, Any]]) -> None:
    argv = _role_argv(services["locust-worker"])
    assert argv[:3] == ["python", "-m", "servingbench.harness.distributed"]
    parser = argparse.ArgumentParser()
    distributed.add_arguments(parser)
    args = parser.parse_args(argv[3:])
    assert (args.master, args.master_port, args.once) == ("locust-master", distributed.DEFAULT_MASTER_PORT, False)


def test_master_runs_the_benchmark_against_both_servers(services: dict[str, dict[str, Any]]) -> None:
    master = services["locust-master"]
    argv = _role_argv(master)
    assert argv[:2] == ["servingbench", "run"]
    targets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--target"]
    assert targets == ["http://fastapi:8000", "http://flask:8000"]
    remote = argv[argv.index("--remote-load-workers") + 1]
    assert remote == master["environment"]["SB_REMOTE_LOAD_WORKERS"]


# ---- Dockerfile -----------------------------------------------------------------------------------------------


def _instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return logical


def _runtime_stage() -> list[str]:
    instructions = _instructions()
    start = next(i for i, text in enumerate(instructions) if text.startswith("FROM ") and text.endswith(RUNTIME_STAGE))
    return instructions[start:]


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    instructions = _instructions()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", instructions[0])
    assert [text for text in instructions if text.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        f"FROM ${{PYTHON_IMAGE}} AS {RUNTIME_STAGE}",
    ]


def test_runtime_runs_unprivileged_with_a_healthcheck() -> None:
    runtime = _runtime_stage()
    users = [text.split()[1] for text in runtime if text.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in " ".join(runtime) and '["sb-entrypoint", "healthcheck"]' in " ".join(runtime)
    assert 'ENTRYPOINT ["sb-entrypoint"]' in runtime
    assert 'CMD ["serve"]' in runtime


def test_models_are_trained_at_build_time_by_the_entrypoint() -> None:
    assert any(text.startswith("RUN ") and "sb-entrypoint train" in text for text in _instructions())


def _runtime_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        requirements: list[str] = tomllib.load(handle)["project"]["dependencies"]
    return requirements


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_dependency_command_lists_the_runtime_requirements() -> None:
    """Runs the Dockerfile's own command that lists what the image installs."""
    command = next(text for text in _instructions() if text.startswith("RUN ") and "tomllib" in text)
    listing = command.removeprefix("RUN ").split(">", 1)[0]
    done = subprocess.run(
        ["sh", "-c", listing],
        cwd=ROOT,
        env=entrypoint_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == _runtime_requirements()


def test_lock_pins_every_runtime_requirement() -> None:
    """``--constraint requirements.lock`` pins only what the lock names."""
    locked = {
        _name(line) for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines() if "==" in line
    }
    assert {_name(requirement) for requirement in _runtime_requirements()} <= locked | {"servingbench"}


def _allowed(path: str, patterns: list[str]) -> bool:
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if body == "*" or path == body or path.startswith(body + "/"):
            allowed = negate
    return allowed


def test_dockerignore_lets_every_copied_file_through() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source
        for text in _instructions()
        if text.startswith("COPY ") and "--from=" not in text
        for source in text.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert _allowed(source, patterns), f"{source} is excluded by .dockerignore"
    assert not _allowed(".venv", patterns) and not _allowed("results", patterns) and not _allowed("models", patterns)


def test_docs_show_the_container_and_remote_worker_commands() -> None:
    text = (ROOT / "docs" / "containers.md").read_text(encoding="utf-8")
    for command in ("make compose-bench", "--scale locust-worker=", "servingbench load-worker --master"):
        assert command in text, command
