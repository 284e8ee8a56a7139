"""``servingbench load-worker``: its options, its workers' command line and environment, and its clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from servingbench.harness import distributed
from servingbench.harness.distributed import WorkerOptions, main, worker_argv
from servingbench.harness.processes import free_port, stop_process_group
from servingbench.loadtests.openloop import GEVENT_BACKEND_ENV_VAR, OPEN_LOOP_GEVENT_BACKEND
from servingbench.loadtests.protocol import PROCESS_MODULE

CHILD_START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
POLL_S = 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"master_host": " "}, "--master"),
        ({"master_host": "h", "master_port": 0}, "--master-port"),
        ({"master_host": "h", "master_port": 70_000}, "--master-port"),
        ({"master_host": "h", "processes": 0}, "--processes"),
    ],
)
def test_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerOptions(**options)  # type: ignore[arg-type]


def test_bad_option_is_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--master", "h", "--processes", "0"]) == 2
    assert capsys.readouterr().err.startswith("servingbench: error: --processes")


def test_a_worker_runs_the_sessions_load_process_and_joins_the_master() -> None:
    argv = worker_argv(WorkerOptions("bench.example", 6000))
    assert argv[:4] == [sys.executable, "-m", PROCESS_MODULE, "worker"]
    assert argv[argv.index("--master-host") + 1] == "bench.example"
    assert argv[argv.index("--master-port") + 1] == "6000"


def test_worker_environment_drops_locust_variables_and_sends_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCUST_USERS", "999")
    env = distributed._worker_env()
    assert "LOCUST_USERS" not in env
    assert env[GEVENT_BACKEND_ENV_VAR] == OPEN_LOOP_GEVENT_BACKEND


def _locust_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "locust" in " ".join(child.cmdline())]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "processes"), [(signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_signal_stops_the_workers(tmp_path: Path, sig: signal.Signals, processes: int) -> None:
    """With no master to join, the workers wait; a signal to load-worker must stop them all and exit 130."""
    argv = [sys.executable, "-m", "servingbench.harness.distributed", "--master", "127.0.0.1"]
    argv += ["--master-port", str(free_port()), "--processes", str(processes)]
    with (tmp_path / "load-worker.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while len(children := _locust_children(process.pid)) < processes and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert len(children) == processes, "load-worker did not start its Locust workers"
        process.send_signal(sig)
        assert process.wait(timeout=EXIT_TIMEOUT_S) == distributed.EXIT_INTERRUPTED
        _gone, alive = psutil.wait_procs(children, timeout=EXIT_TIMEOUT_S)
        assert not alive
    finally:
        stop_process_group(process)
