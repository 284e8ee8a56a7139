"""A tiny real plan: two real server configs, the blocking synthetic model, Locust, the whole bundle.

Shrunk knobs (pyperf's habit) keep it to seconds. It asserts what was written, never how fast anything was.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from servingbench.harness import run_benchmark
from servingbench.harness.bundle import RESULTS_FILE, SUMMARY_COLUMNS, SUMMARY_FILE
from servingbench.harness.curve import MAX_ABOVE_GRID, MAX_BELOW_GRID
from servingbench.harness.runner import GENERATOR_RETRIES
from servingbench.reports import render_report
from servingbench.reports.bundle import load_bundle

TINY_PLAN = """
seed = 11
warmup_s = 0.2
duration_s = 0.5
repetitions = 1
min_requests = 5
startup_timeout_s = 60.0
[configs.fastapi-uvicorn]
framework = "fastapi"
server = "uvicorn"
[configs.flask-gunicorn-sync]
framework = "flask"
server = "gunicorn-sync"
[models.sleep2]
spec = "synthetic:sleep_ms=2"
scenarios = ["single"]
[models.broken]
spec = "synthetic:sleep_ms=20000"   # over the servers' 10 s limit: every server must refuse it and exit
scenarios = ["single"]
[scenarios.single]
endpoint = "/predict"
concurrency = [2]
"""


@pytest.mark.slow
def test_tiny_plan_end_to_end(tmp_path: Path) -> None:
    plan = tmp_path / "tiny.toml"
    plan.write_text(TINY_PLAN)
    output = io.StringIO()
    bundle = run_benchmark(
        plan_path=plan,
        preset="default",
        out_root=tmp_path / "results",
        targets=[],
        load_workers=1,
        console=Console(file=output, width=120),
        allow_shared_cores=len(os.sched_getaffinity(0)) < 2,
    )
    data = json.loads((bundle / RESULTS_FILE).read_text())
    assert data["complete"] is True
    runs = {(run["config"], run["model"]): run for run in data["runs"]}
    assert set(runs) == {(c, m) for c in ("fastapi-uvicorn", "flask-gunicorn-sync") for m in ("sleep2", "broken")}

    for config in ("fastapi-uvicorn", "flask-gunicorn-sync"):
        good = runs[(config, "sleep2")]
        assert good["status"] == "ok", good["invalid_reason"]
        assert good["requests"] > 0 and good["errors"] == 0
        assert good["latency_ms"]["p50"] > 0
        assert good["server_timing_ms"]["predict_p50"] > 0
        assert good["histograms"]["total"].startswith("HISTF")
        assert good["server_cpu_us_per_request"] is not None
        assert good["server_rss_mb_per_worker"]
        assert (bundle / good["artifacts"]["locust_csv"]).is_file()
        broken = runs[(config, "broken")]
        assert broken["status"] == "failed" and not broken["valid"]
        assert broken["invalid_reason"].startswith("server failed to start: exited with code")
        assert "sleep_ms=20000" in broken["log_tail"]

    with (bundle / SUMMARY_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert len(rows) == len(data["runs"])
    assert len(load_bundle(bundle).runs) == len(data["runs"])
    assert f"results: {bundle}" in output.getvalue()
    assert psutil.Process().children(recursive=True) == []


CAPACITY_PLAN = """
seed = 13
warmup_s = 0.2
duration_s = 0.5
repetitions = 1
min_requests = 5
startup_timeout_s = 60.0
capacity_points = 3
capacity_resolution = 0.15
capacity_repetitions = 1
capacity_warmup_s = 0.2
capacity_step_requests = 50
capacity_max_step_s = 0.5
[configs.fastapi-uvicorn]
framework = "fastapi"
server = "uvicorn"
[configs.flask-gunicorn-sync]
framework = "flask"
server = "gunicorn-sync"
[models.sleep5]
spec = "synthetic:sleep_ms=5"
scenarios = ["single", "cap"]
[scenarios.single]
endpoint = "/predict"
concurrency = [2]
[scenarios.cap]
kind = "capacity"
endpoint = "/predict"
"""


@pytest.mark.slow
def test_capacity_curve_on_real_servers_end_to_end(tmp_path: Path) -> None:
    plan = tmp_path / "capacity.toml"
    plan.write_text(CAPACITY_PLAN)
    bundle_dir = run_benchmark(
        plan_path=plan,
        preset="default",
        out_root=tmp_path / "results",
        targets=[],
        load_workers=1,
        console=Console(file=io.StringIO(), width=120),
        allow_shared_cores=len(os.sched_getaffinity(0)) < 2,
    )
    data = json.loads((bundle_dir / RESULTS_FILE).read_text())
    ceiling = data["environment"]["load_generator_ceiling"]  # measured before the curves, whatever it found
    assert ceiling["steps"] and ceiling["max_send_lag_ms"] == 5.0
    assert [step["rate"] for step in ceiling["steps"]] == sorted(step["rate"] for step in ceiling["steps"])
    entries = {entry["config"]: entry for entry in data["capacity"]}
    assert set(entries) == {"fastapi-uvicorn", "flask-gunicorn-sync"}
    runs = {run["id"]: run for run in data["runs"]}
    for entry in entries.values():
        # Whatever the machine's speed: a grid of 3 shared rates, a climb over them (a rate the generator could not
        # keep is run once more), and a capacity or a censored bound read off what was measured.
        assert 3 <= len(entry["grid"]) <= 3 + MAX_ABOVE_GRID + MAX_BELOW_GRID and entry["grid"] == sorted(entry["grid"])
        # After the climb, midpoints inside the grid (the plan's resolution, 15 %) until a pass and a failure
        # bracket the SLO within it: with 3 rates 1.7x or more apart, at most 4 halvings of the log bracket.
        midpoints = {step["rate"] for step in entry["steps"]} - set(entry["grid"])
        assert all(entry["grid"][0] < rate < entry["grid"][-1] for rate in midpoints)
        assert len(midpoints) <= 4
        if midpoints:
            assert any(step["ok"] for step in entry["steps"]) and not all(step["ok"] for step in entry["steps"])
        rates = [*entry["grid"], *midpoints]
        assert 1 <= len(entry["steps"]) <= len(rates) * (1 + GENERATOR_RETRIES)
        for rate in rates:
            assert sum(step["rate"] == rate for step in entry["steps"]) <= 1 + GENERATOR_RETRIES
        measured_server = [step for step in entry["steps"] if not step["generator_limited"]]
        if measured_server:  # a step the generator could not keep says nothing about the server
            assert (entry["capacity_rps"] is None) == (entry["censored"] is not None)
        for step in entry["steps"]:
            run = runs[step["run"]]
            assert run["search"] == entry["id"] and run["kind"] == "open" and run["target_rps"] == step["rate"]
            assert run["status"] == "ok" and run["requests"] > 0 and run["step_ok"] is step["ok"]
            assert run["histograms"]["total"].startswith("HISTF") and run["histograms"]["total_uncorrected"]
            assert run["offered_rps"] > 0 and run["achieved_rps"] > 0
    sync = entries["flask-gunicorn-sync"]
    assert sync["theory"] == "M/D/1" and sync["theory_rps"] > 0 and sync["service_ms"] > 5.0  # sleeps 5 ms
    assert entries["fastapi-uvicorn"]["theory"] is None
    html = render_report(bundle_dir).read_text()
    assert 'id="capacity"' in html and 'data-metric="capacity_rps"' in html and "chart-capacity-sleep5" in html
    assert psutil.Process().children(recursive=True) == []


INTERRUPT_PLAN = """
seed = 5
warmup_s = 0.5
duration_s = 30.0
window_requests = 0  # windows of duration_s: the run is still measuring when Ctrl-C comes
repetitions = 1
[configs.fastapi-gunicorn-uvicorn]
framework = "fastapi"
server = "gunicorn-uvicorn"
[models.sleep2]
spec = "synthetic:sleep_ms=2"
scenarios = ["single"]
[scenarios.single]
endpoint = "/predict"
concurrency = [2, 4]
"""
HARNESS_SCRIPT = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for every thread's stack if Ctrl-C hangs
# A shell without job control starts background jobs with SIGINT ignored, and Python then installs no handler: act as
# a terminal's foreground process, whatever ran pytest (`make test &` did once, and Ctrl-C looked swallowed).
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from rich.console import Console
from servingbench.harness import BenchmarkInterrupted, run_benchmark
try:
    run_benchmark(plan_path=Path(sys.argv[1]), preset="default", out_root=Path(sys.argv[2]), targets=[],
                  load_workers=2, console=Console(), allow_shared_cores=True)
except BenchmarkInterrupted as exc:
    print("INTERRUPTED", exc.bundle_dir)
    sys.exit(130)
"""
MEASURING_DEADLINE_S = 90.0
EXIT_DEADLINE_S = 60.0
POLL_S = 0.05


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def measuring(out_root: Path) -> bool:
    """The first run has begun: its server is up and the load session was handed the run (its directory exists)."""
    return any(out_root.glob("*/runs/r0001"))


def alive(pids: list[int]) -> list[str]:
    left = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline()))
    return left


def stop_mid_run(command: list[str], out_root: Path, *signals: signal.Signals) -> tuple[int, str, list[int]]:
    """Start the harness ``command``, send ``signals`` once its first run is measuring, and wait for it to end:
    (exit status, output, the pids of every process it had started). Whatever happens, nothing is left running."""
    what = " then ".join(sig.name for sig in signals)
    harness = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    descendants: list[int] = []
    with harness:
        try:
            wait_for(lambda: measuring(out_root), MEASURING_DEADLINE_S, "the first measured run")
            descendants = [child.pid for child in psutil.Process(harness.pid).children(recursive=True)]
            assert len(descendants) >= 4  # gunicorn master + worker, Locust master + workers
            for sig in signals:
                harness.send_signal(sig)
            try:
                output, _ = harness.communicate(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                harness.send_signal(signal.SIGUSR1)  # every thread's stack, to see where it hung
                time.sleep(1.0)
                harness.kill()
                output, _ = harness.communicate()
                pytest.fail(f"{what} did not stop the harness within {EXIT_DEADLINE_S:.0f} s:\n{output}")
        finally:
            if harness.poll() is None:
                harness.kill()
                harness.wait()
            for pid in descendants:  # what a hung harness left (each server and load process has its own session)
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
    return harness.returncode, output, descendants


def assert_partial_bundle(out_root: Path) -> None:
    data = json.loads((out_root / "latest" / RESULTS_FILE).read_text())
    assert data["complete"] is False
    assert [run["status"] for run in data["runs"]] == ["interrupted"]


@pytest.mark.slow
def test_ctrl_c_leaves_no_server_or_locust_behind(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(INTERRUPT_PLAN)
    out_root = tmp_path / "results"
    command = [sys.executable, "-c", HARNESS_SCRIPT, str(plan), str(out_root)]
    returncode, output, descendants = stop_mid_run(command, out_root, signal.SIGINT)
    assert returncode == 130, output
    assert alive(descendants) == []
    assert_partial_bundle(out_root)


@pytest.mark.slow
def test_sigterm_stops_the_command_like_ctrl_c(tmp_path: Path) -> None:
    """A CI timeout or `kill` sends SIGTERM to `servingbench run`: no server or Locust process outlives it, the
    partial bundle is kept, and the exit status says which signal stopped it. A second SIGTERM must not cut the
    clean-up short."""
    plan = tmp_path / "plan.toml"
    plan.write_text(INTERRUPT_PLAN)
    out_root = tmp_path / "results"
    command = [sys.executable, "-m", "servingbench.cli", "run", "--plan", str(plan), "--out", str(out_root)]
    command += ["--load-workers", "2", "--allow-shared-cores"]
    returncode, output, descendants = stop_mid_run(command, out_root, signal.SIGTERM, signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output
    assert alive(descendants) == []
    assert_partial_bundle(out_root)
