"""`run_load` with a remote worker: the master waits for one local worker plus one ``load-worker`` that is not its
child (here on loopback, as it would be on another machine), sends it the run's scenario, and merges both."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from servingbench.harness.loadgen import run_load
from servingbench.harness.processes import LOCALHOST, free_port, log_tail, stop_process_group
from servingbench.loadtests import LoadSpec

from .conftest import payload_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

USERS = 4
WARMUP_S = 0.5
DURATION_S = 2.0
LOAD_TIMEOUT_S = 60.0
WORKER_EXIT_TIMEOUT_S = 15.0


def _start_remote_worker(port: int, log: Path, cwd: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    argv = [sys.executable, "-m", "servingbench.harness.distributed", "--master", LOCALHOST]
    argv += ["--master-port", str(port), "--once"]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_process_group, process)
    return process


def test_run_load_with_a_remote_worker(server_url: str, tmp_path: Path) -> None:
    spec = LoadSpec(
        base_url=server_url,
        endpoint="/predict",
        payload=payload_for(server_url),
        kind="closed",
        users=USERS,
        warmup_s=WARMUP_S,
        duration_s=DURATION_S,
        seed=11,
    )
    port = free_port()
    log = tmp_path / "remote-worker.log"
    with ExitStack() as stack:
        remote = _start_remote_worker(port, log, tmp_path, stack)
        result = run_load(
            spec,
            out_dir=tmp_path / "run",
            cpus=None,
            workers=1,
            remote_workers=1,
            master_port=port,
            timeout_s=LOAD_TIMEOUT_S,
        )
        code = remote.wait(timeout=WORKER_EXIT_TIMEOUT_S)
    assert code == 0, log_tail(log)  # it served the session, then left with the master
    assert len(result.workers) == 2, result.workers
    assert all(counts["requests"] > 0 for counts in result.workers.values()), result.workers
    assert result.requests == sum(counts["requests"] for counts in result.workers.values())
    assert result.errors == 0
