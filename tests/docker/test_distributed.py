"""Distributed load without Docker: a Locust master and two ``load-worker`` processes (started through the image's
entrypoint) against a real server on loopback. The workers get the scenario from the master only; the merged
result must be exactly the pool of what each worker measured."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
from hdrh.histogram import HdrHistogram

from servingbench.harness.distributed import write_shim_locustfile
from servingbench.harness.processes import LOCALHOST, free_port, log_tail, stop_process_group
from servingbench.loadtests import (
    CONFIG_ENV_VAR,
    LoadSpec,
    LocustRunConfig,
    Window,
    decode_histogram,
    ms_to_us,
    new_histogram,
)

from .conftest import ENTRYPOINT, entrypoint_env, payload_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PLUGIN = Path(__file__).with_name("raw_samples_locustfile.py")
RAW_SAMPLES_DIR_ENV = "SERVINGBENCH_TEST_RAW_SAMPLES_DIR"
WORKERS = 2
USERS = 4  # two per worker
WARMUP_S = 0.5
DURATION_S = 2.0
STOP_TIMEOUT_S = 5
FINAL_REPORT_TIMEOUT_S = 5.0
WORKER_CONNECT_TIMEOUT_S = 20
RUN_TIME_BACKSTOP_S = 30
MASTER_EXIT_TIMEOUT_S = 60.0
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


def _write_config(base_url: str, run_dir: Path, payload: bytes, workers: int) -> Path:
    spec = LoadSpec(
        base_url=base_url,
        endpoint="/predict",
        payload=payload,
        kind="closed",
        users=USERS,
        warmup_s=WARMUP_S,
        duration_s=DURATION_S,
        seed=7,
    )
    config = LocustRunConfig(
        spec=spec,
        result_path=run_dir / "result.json",
        events_path=run_dir / "events.jsonl",
        final_report_timeout_s=FINAL_REPORT_TIMEOUT_S,
        processes=workers,
    )
    path = run_dir / "config.json"
    config.write(path)
    return path


def _master_argv(locustfiles: list[Path], base_url: str, port: int, workers: int) -> list[str]:
    """The master of one run, as `run_load` starts it, but expecting workers that are not its own children."""
    return [
        *(sys.executable, "-m", "locust", "-f", ",".join(map(str, locustfiles)), "--host", base_url),
        *("--master", "--master-bind-host", LOCALHOST, "--master-bind-port", str(port)),
        *("--expect-workers", str(workers), "--expect-workers-max-wait", str(WORKER_CONNECT_TIMEOUT_S)),
        *("--headless", "--only-summary", "-u", str(USERS), "-r", str(USERS)),
        *("--run-time", f"{RUN_TIME_BACKSTOP_S}s", "--stop-timeout", str(STOP_TIMEOUT_S), "--loglevel", "INFO"),
        "ClosedLoopUser",
    ]


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


def _master(
    base_url: str, run_dir: Path, payload: bytes, port: int, workers: int, stack: ExitStack
) -> subprocess.Popen[bytes]:
    """Start the master of one run in ``run_dir``: the shim with the run's config, and the raw-samples plugin."""
    run_dir.mkdir()
    config = _write_config(base_url, run_dir, payload, workers)
    shim = write_shim_locustfile(config, run_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env[CONFIG_ENV_VAR] = str(config)
    argv = _master_argv([shim, PLUGIN], base_url, port, workers)
    return _start(argv, env, run_dir / "master.log", run_dir, stack)


def _worker_env(port: int, raw_dir: Path, *, once: bool) -> dict[str, str]:
    env = entrypoint_env(SB_MASTER=LOCALHOST, SB_MASTER_PORT=str(port), **{RAW_SAMPLES_DIR_ENV: str(raw_dir)})
    if once:
        env["SB_LOAD_WORKER_ONCE"] = "1"
    env.pop(CONFIG_ENV_VAR, None)  # the scenario must come from the master
    return env


def _result(run_dir: Path, logs: list[Path]) -> dict[str, Any]:
    path = run_dir / "result.json"
    assert path.exists(), _logs([run_dir / "master.log", *logs])
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def _run_distributed(base_url: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, list[list[float]]]]:
    """Run one load with a master and two load-workers; return the master's result and each worker's raw samples."""
    run_dir, raw_dir = tmp_path / "master", tmp_path / "raw"
    raw_dir.mkdir()
    port = free_port()
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    with ExitStack() as stack:
        master = _master(base_url, run_dir, payload_for(base_url), port, WORKERS, stack)
        env = _worker_env(port, raw_dir, once=True)
        workers = [_start([str(ENTRYPOINT), "load-worker"], env, log, tmp_path, stack) for log in logs]
        master.wait(timeout=MASTER_EXIT_TIMEOUT_S)
        codes = [worker.wait(timeout=WORKER_EXIT_TIMEOUT_S) for worker in workers]
    assert codes == [0] * WORKERS, _logs([run_dir / "master.log", *logs])
    result = _result(run_dir, logs)
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
    assert result["complete"], result["missing_workers"]
    window = Window.from_json(result["window"])
    workers: dict[str, dict[str, int]] = result["workers"]
    assert len(workers) == WORKERS and set(raw) == set(workers)

    # Counts: each worker's count is what it measured in the window, and the merged count is their sum.
    pooled: list[int] = []
    for client_id, counts in workers.items():
        mine = _in_window_us(raw[client_id], window)
        assert counts["requests"] == counts["recorded"] == len(mine) > 0
        pooled.extend(mine)
    assert result["requests"] == sum(counts["requests"] for counts in workers.values()) == len(pooled)
    assert result["errors"] == 0

    # Percentiles: the merged histogram is the histogram of the pooled samples, bucket for bucket...
    merged: HdrHistogram = decode_histogram(result["histograms"]["total"])
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


def test_load_worker_rejoins_the_next_run_with_its_scenario(server_url: str, tmp_path: Path) -> None:
    """One load-worker, two runs back to back on the same port (as the runner does them): the worker joins both,
    and runs the second run's scenario (a payload the server refuses), not the first one's."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    port = free_port()
    log = tmp_path / "worker.log"
    payloads = {"good": payload_for(server_url), "refused": json.dumps({"features": []}).encode()}
    results = {}
    with ExitStack() as stack:
        worker = _start([str(ENTRYPOINT), "load-worker"], _worker_env(port, raw_dir, once=False), log, tmp_path, stack)
        for name, payload in payloads.items():
            master = _master(server_url, tmp_path / name, payload, port, 1, stack)
            master.wait(timeout=MASTER_EXIT_TIMEOUT_S)
            results[name] = _result(tmp_path / name, [log])
        assert worker.poll() is None, _logs([log])  # still there for a third run
    good, refused = results["good"], results["refused"]
    assert good["complete"] and refused["complete"]
    assert good["requests"] > 0 and good["errors"] == 0
    assert refused["requests"] > 0 and refused["errors"] == refused["requests"]
    assert set(refused["errors_by_kind"]) == {"HTTP 422"}
