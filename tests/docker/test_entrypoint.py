"""The image's entrypoint, run outside Docker: the same command lines the Dockerfile and docker-compose.yml use.

Each role starts for real where it can (``serve`` under every server kind, ``train``, ``healthcheck``); the roles
whose partner lives elsewhere (``bench``) are checked through ``SB_DRY_RUN=1``, which prints the command instead.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servingbench.harness.processes import (
    LOCALHOST,
    free_port,
    log_tail,
    running_server,
    stop_process_group,
    wait_until_ready,
)
from servingbench.servers import ServerConfig, launch_command

from .conftest import ENTRYPOINT, SERVER_MODEL, entrypoint_env

# slow: each test runs the container entrypoint in a subprocess (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0
#: The compose file's two servers by default, and a server kind with a thread knob (SB_THREADS): the entrypoint maps
#: SB_* to `servingbench serve` options the same way for every kind (tests/integration serves every kind itself).
SERVER_KINDS = [
    ("fastapi", "uvicorn"),
    ("flask", "gunicorn-sync"),
    ("flask", "gunicorn-gthread"),
]
MODEL_FILES = ("fast.skops", "fast.skops.manifest.json")
# Inside a private mount namespace: bind the models read-only (as `./models:/models:ro` does), then exec the command.
READ_ONLY_BIND = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env=entrypoint_env(**env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _dry_run(role: str, **env: str) -> list[str]:
    done = _entrypoint(role, SB_DRY_RUN="1", **env)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


@contextmanager
def _serving(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Run ``argv`` (a server on ``port``) in its own session until it answers /healthz; always stop its group."""
    with log.open("wb") as handle:
        process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://{LOCALHOST}:{port}"
        wait_until_ready(base_url + "/healthz", timeout_s=STARTUP_TIMEOUT_S, process=process, log_path=log)
        yield base_url
    finally:
        stop_process_group(process)


def _model_name(base_url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url + "/model", timeout=5) as response:
        return str(json.loads(response.read())["name"])


def _serve_env(framework: str, server: str, port: int, models_dir: Path) -> dict[str, str]:
    return entrypoint_env(
        SB_FRAMEWORK=framework,
        SB_SERVER=server,
        SB_WORKERS="1",
        SB_HOST=LOCALHOST,
        SB_PORT=str(port),
        SB_MODEL="fast",
        SB_MODELS_DIR=str(models_dir),
        SB_BLAS_THREADS="1",
    )


@pytest.mark.parametrize(("framework", "server"), SERVER_KINDS)
def test_serve_runs_every_server_kind(models_dir: Path, tmp_path: Path, framework: str, server: str) -> None:
    port = free_port()
    env = _serve_env(framework, server, port, models_dir)
    with _serving([str(ENTRYPOINT), "serve"], env, port, tmp_path / "serve.log") as base_url:
        assert _model_name(base_url) == "fast"
        healthy = _entrypoint("healthcheck", SB_PORT=str(port))
        assert healthy.returncode == 0, healthy.stderr
    assert f"with {'FastAPI' if framework == 'fastapi' else 'Flask'} / {server}" in log_tail(tmp_path / "serve.log")


def _can_bind_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_bind_read_only(), reason="needs `unshare --mount` (root) to bind the models read-only")
def test_serve_from_read_only_models(models_dir: Path, tmp_path: Path) -> None:
    """Compose mounts ./models read-only: serving must not write into the models directory."""
    source, mount_point = tmp_path / "models", tmp_path / "ro-models"
    source.mkdir()
    mount_point.mkdir()
    for name in MODEL_FILES:
        shutil.copy(models_dir / name, source / name)
    port = free_port()
    env = _serve_env("flask", "gunicorn-gthread", port, mount_point)
    argv = ["unshare", "--mount", "sh", "-c", READ_ONLY_BIND, "sh", str(source), str(mount_point), str(ENTRYPOINT)]
    with _serving([*argv, "serve"], env, port, tmp_path / "serve.log") as base_url:
        assert _model_name(base_url) == "fast"
    assert sorted(path.name for path in source.iterdir()) == sorted(MODEL_FILES)


def test_train_writes_the_default_models(tmp_path: Path) -> None:
    done = _entrypoint("train", SB_MODELS_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("fast", "heavy"):
        assert (tmp_path / f"{name}.skops").is_file()
        assert (tmp_path / f"{name}.skops.manifest.json").is_file()


def test_healthcheck_fails_without_a_server() -> None:
    done = _entrypoint("healthcheck", SB_PORT=str(free_port()))
    assert done.returncode != 0
    assert "unhealthy" in done.stderr


def test_serve_command_line_from_variables() -> None:
    argv = _dry_run(
        "serve",
        SB_FRAMEWORK="flask",
        SB_SERVER="gunicorn-gthread",
        SB_THREADS="8",
        SB_WORKERS="2",
        SB_MODEL="heavy",
        SB_MODELS_DIR="/models",
        SB_BLAS_THREADS="1",
    )
    assert argv[:3] == ["servingbench", "serve", "flask"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--host": LOCALHOST,  # loopback unless told otherwise; the image sets SB_HOST=0.0.0.0
        "--port": "8000",
        "--workers": "2",
        "--model": "heavy",
        "--blas-threads": "1",
        "--server": "gunicorn-gthread",
        "--threads": "8",
        "--models-dir": "/models",
    }


def test_bench_command_line_with_remote_workers() -> None:
    argv = _dry_run(
        "bench",
        SB_TARGETS="http://fastapi:8000 http://flask:8000",
        SB_LOAD_WORKERS="0",
        SB_REMOTE_LOAD_WORKERS="3",
        SB_MASTER_BIND="0.0.0.0",
        SB_BENCH_ARGS="--quick",
    )
    assert argv == [
        *("servingbench", "run", "--target", "http://fastapi:8000", "--target", "http://flask:8000"),
        *("--load-workers", "0", "--remote-load-workers", "3", "--master-bind", "0.0.0.0", "--master-port", "5557"),
        "--quick",
    ]


def test_bench_master_stays_on_loopback_unless_told() -> None:
    argv = _dry_run("bench", SB_REMOTE_LOAD_WORKERS="1")
    assert argv[argv.index("--master-bind") + 1] == LOCALHOST
    assert "--master-bind" not in _dry_run("bench")


def test_bench_gives_up_on_a_target_that_never_answers_with_one_line() -> None:
    url = f"http://{LOCALHOST}:{free_port()}"
    done = _entrypoint("bench", "--help", SB_TARGETS=url, SB_TARGET_WAIT_S="1")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith(f"sb-entrypoint bench: {url}/healthz not ready after 1 s")
    assert done.stdout == ""  # servingbench never started


def test_bench_starts_when_a_late_target_answers(tmp_path: Path) -> None:
    """The runner may start before the servers (compose orders starts only): it waits, then runs."""
    port = free_port()
    url = f"http://{LOCALHOST}:{port}"
    bench = subprocess.Popen(
        [str(ENTRYPOINT), "bench", "--help"],
        env=entrypoint_env(SB_TARGETS=url, SB_TARGET_WAIT_S=str(STARTUP_TIMEOUT_S)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        command = launch_command(ServerConfig("fastapi", "uvicorn"), host=LOCALHOST, port=port, model=SERVER_MODEL)
        with running_server(command.argv, command.env, port=port, log_path=tmp_path / "server.log"):
            stdout, stderr = bench.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        stop_process_group(bench)
    assert bench.returncode == 0, stderr.decode(errors="replace")
    assert b"--target" in stdout  # `servingbench run --help`: the wait ended and the runner started


def test_load_worker_command_line() -> None:
    argv = _dry_run("load-worker", SB_MASTER="master.example", SB_PROCESSES="4", SB_LOAD_WORKER_ONCE="1")
    assert argv == [
        *("python", "-m", "servingbench.harness.distributed"),
        *("--master", "master.example", "--master-port", "5557", "--processes", "4", "--once"),
    ]


def test_arguments_after_the_role_are_passed_on() -> None:
    done = _entrypoint("serve", "--port", "9001", SB_DRY_RUN="1")
    assert shlex.split(done.stdout)[-2:] == ["--port", "9001"]


def test_other_commands_run_as_given() -> None:
    done = _entrypoint("servingbench", "--help")
    assert done.returncode == 0
    assert "serve" in done.stdout
