"""Distributed load without Docker: a load session whose master waits for two ``load-worker`` processes (started
through the image's entrypoint) against a real server on loopback. The workers get the scenario from the master only;
the merged result must be exactly the pool of what each worker measured."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
from hdrh.histogram import HdrHistogram

from servingbench.harness.loadgen import LoadResult, LoadSession
from servingbench.harness.processes import LOCALHOST, free_port, log_tail, stop_process_group
from servingbench.loadtests import LoadSpec, Window, ms_to_us, new_histogram
from servingbench.loadtests.protocol import PLUGINS_ENV_VAR

from .conftest import ENTRYPOINT, entrypoint_env, payload_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PLUGIN = Path(__file__).with_name("raw_samples_locustfile.py")
RAW_SAMPLES_DIR_ENV = "SERVINGBENCH_TEST_RAW_SAMPLES_DIR"
WORKERS = 2
USERS = 4  # two per worker
WARMUP_S = 0.5
DURATION_S = 2.0
WORKER_EXIT_TIMEOUT_S = 15.0
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)


def _locust_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "locust" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(autouse=True)
def _no_locust_left_behind() -> Iterator[None]:
    yield
    assert not _locust_processes(), "a Locust process outlived the test"


def _spec(base_url: str, payload: bytes) -> LoadSpec:
    return LoadSpec(
        base_url=base_url,
        endpoint="/predict",
        payload=payload,
        kind="closed",
        users=USERS,
        warmup_s=WARMUP_S,
        duration_s=DURATION_S,
        seed=7,
    )


def _start(argv: list[str], env: dict[str, str], log: Path, cwd: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
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


def _logs(paths: list[Path]) -> str:
    return "\n".join(f"--- {path.name} ---\n{log_tail(path)}" for path in paths)


def _worker_env(port: int, raw_dir: Path, *, once: bool) -> dict[str, str]:
    env = entrypoint_env(SB_MASTER=LOCALHOST, SB_MASTER_PORT=str(port), **{RAW_SAMPLES_DIR_ENV: str(raw_dir)})
    env[PLUGINS_ENV_VAR] = str(PLUGIN)
    if once:
        env["SB_LOAD_WORKER_ONCE"] = "1"
    return env


def _remote_session(tmp_path: Path, port: int, workers: int) -> LoadSession:
    """A session whose master waits for `workers` load-workers that are not its children."""
    return LoadSession(tmp_path, cpus=None, workers=0, remote_workers=workers, master_port=port)


def _run_distributed(base_url: str, tmp_path: Path) -> tuple[LoadResult, dict[str, list[list[float]]]]:
    """Run one load with a master and two load-workers; return the result and each worker's raw samples."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    port = free_port()
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    with ExitStack() as stack:
        env = _worker_env(port, raw_dir, once=True)
        workers = [_start([str(ENTRYPOINT), "load-worker"], env, log, tmp_path, stack) for log in logs]
        with _remote_session(tmp_path / "session", port, WORKERS) as session:
            result = session.run(_spec(base_url, payload_for(base_url)), out_dir=tmp_path / "run")
        codes = [worker.wait(timeout=WORKER_EXIT_TIMEOUT_S) for worker in workers]
    assert codes == [0] * WORKERS, _logs(logs)
    raw = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in raw_dir.glob("*.json")}
    return result, raw


def _in_window_us(samples: list[list[float]], window: Window) -> list[int]:
    """The samples the recorder keeps (started inside the window), in its units (whole microseconds)."""
    return [ms_to_us(response_time_ms) for start_time, response_time_ms in samples if window.contains(start_time)]


def _nearest_rank(sorted_us: list[int], percentile: float) -> int:
    """The pooled sample at ``percentile`` by the rank HdrHistogram uses (``int(p * n / 100 + 0.5)``, at least 1)."""
    rank = max(int(percentile * len(sorted_us) / 100 + 0.5), 1)
    return sorted_us[min(rank, len(sorted_us)) - 1]


def test_two_workers_merge_exactly(server_url: str, tmp_path: Path) -> None:
    result, raw = _run_distributed(server_url, tmp_path)
    assert result.window is not None
    assert len(result.workers) == WORKERS and set(raw) == set(result.workers)

    # Counts: each worker's count is what it measured in the window, and the merged count is their sum.
    pooled: list[int] = []
    for client_id, counts in result.workers.items():
        mine = _in_window_us(raw[client_id], result.window)
        assert counts["requests"] == counts["recorded"] == len(mine) > 0
        pooled.extend(mine)
    assert result.requests == sum(counts["requests"] for counts in result.workers.values()) == len(pooled)
    assert result.errors == 0

    # Percentiles: the merged histogram is the histogram of the pooled samples, bucket for bucket...
    merged: HdrHistogram = result.histograms.total
    of_pooled = new_histogram()
    for value_us in pooled:
        of_pooled.record_value(value_us)
    assert merged.equals(of_pooled)
    # ...so every merged percentile is the pooled samples' percentile (to HDR's 3 significant digits).
    pooled.sort()
    for percentile in PERCENTILES:
        exact_us = _nearest_rank(pooled, percentile)
        assert merged.get_value_at_percentile(percentile) == merged.get_highest_equivalent_value(exact_us)
        assert math.isclose(merged.get_value_at_percentile(percentile), exact_us, rel_tol=1e-3, abs_tol=1)


def test_load_worker_rejoins_the_next_session_with_its_scenario(server_url: str, tmp_path: Path) -> None:
    """One load-worker, two sessions back to back on the same port (as two benchmarks would run): the worker joins
    both, and runs the second session's scenario (a payload the server refuses), not the first one's."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    port = free_port()
    log = tmp_path / "worker.log"
    payloads = {"good": payload_for(server_url), "refused": json.dumps({"features": []}).encode()}
    results = {}
    with ExitStack() as stack:
        worker = _start([str(ENTRYPOINT), "load-worker"], _worker_env(port, raw_dir, once=False), log, tmp_path, stack)
        for name, payload in payloads.items():
            with _remote_session(tmp_path / name, port, 1) as session:
                results[name] = session.run(_spec(server_url, payload), out_dir=tmp_path / name / "run")
        assert worker.poll() is None, _logs([log])  # still there for a third session
    good, refused = results["good"], results["refused"]
    assert good.requests > 0 and good.errors == 0
    assert refused.requests > 0 and refused.errors == refused.requests
    assert set(refused.errors_by_kind) == {"HTTP 422"}
