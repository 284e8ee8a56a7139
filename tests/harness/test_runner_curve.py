"""Capacity curves inside `servingbench run`: the shared grid, each config's climb, steps recorded as runs, one
capacity entry per config and repetition.

The load generator plays a server with a known capacity (open-loop p99 8 ms up to it, 400 ms with drops above), so
the outcome can be checked exactly and in seconds; real servers and Locust are in the slow end-to-end test.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from servingbench.harness import runner as runner_module
from servingbench.harness.bundle import RESULTS_FILE
from servingbench.harness.curve import GENERATOR_LIMIT
from servingbench.harness.plan import FIRST_STEP_WARMUP_FACTOR
from servingbench.harness.progress import PlainReporter
from servingbench.harness.runner import BenchmarkInterrupted, run_benchmark
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.reports.bundle import load_bundle
from tests.harness.fakes import PASS_P99_US, ScriptedLoad, TinyStarter, open_result, tiny_server_pids

# slow: each test runs the harness on real tiny servers and renders the report (make test-fast leaves it out)
pytestmark = pytest.mark.slow

CLOSED_RPS = 1000.0
CAPACITY = 600.0
GRID = [500.0, 623.0, 776.0, 967.0, 1200.0, 1500.0]  # 0.5 to 1.5 x the peak, 6 points
EXPECTED = 500.0 + (math.log(50.0) - math.log(8.0)) / (math.log(400.0) - math.log(8.0)) * (623.0 - 500.0)
CONFIGS = ("fastapi-uvicorn", "flask-gunicorn-sync")

PLAN = """
seed = 7
warmup_s = 0.1
duration_s = 0.2
repetitions = 2
min_requests = 10
startup_timeout_s = 30.0
capacity_points = 6
capacity_resolution = 0
capacity_repetitions = 2
capacity_warmup_s = 0.1
capacity_step_requests = 10
capacity_max_step_s = 0.2
[configs.fastapi-uvicorn]
framework = "fastapi"
server = "uvicorn"
[configs.flask-gunicorn-sync]
framework = "flask"
server = "gunicorn-sync"
[models.tiny]
spec = "synthetic:sleep_ms=1"
scenarios = ["single", "cap"]
[scenarios.single]
endpoint = "/predict"
concurrency = [4]
[scenarios.cap]
kind = "capacity"
endpoint = "/predict"
"""


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    yield
    assert tiny_server_pids() == []


@pytest.fixture
def load() -> ScriptedLoad:
    return ScriptedLoad(closed_rps=CLOSED_RPS, capacity=CAPACITY)


def bench(tmp_path: Path, load: ScriptedLoad, *, plan: str = PLAN, starter: TinyStarter | None = None) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(plan)
    return run_benchmark(
        plan_path=path,
        preset="default",
        out_root=tmp_path / "results",
        targets=[],
        load_workers=None,
        console=Console(file=io.StringIO(), width=120),
        allow_shared_cores=True,
        load=load,
        starters=dict.fromkeys(CONFIGS, starter or TinyStarter()),
    )


def document(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / RESULTS_FILE).read_text())
    return data


def test_a_midpoint_narrows_the_crossing_and_stays_the_curves_own(tmp_path: Path, load: ScriptedLoad) -> None:
    """With a resolution of 15 %: 500 passes and 623 fails (1.246 apart), so the curve measures sqrt(500 x 623) = 558,
    which passes (558 and 623 are 1.116 apart: done); the capacity is read between 558 and 623, and 558 joins
    neither the shared grid nor the p99 table's rates."""
    data = document(bench(tmp_path, load, plan=PLAN.replace("capacity_resolution = 0", "capacity_resolution = 0.15")))
    expected = 558.0 + (math.log(50.0) - math.log(8.0)) / (math.log(400.0) - math.log(8.0)) * (623.0 - 558.0)
    assert data["plan"]["capacity_resolution"] == 0.15
    for entry in data["capacity"]:
        assert entry["grid"] == GRID
        assert [(step["rate"], step["ok"]) for step in entry["steps"]] == [(500.0, True), (623.0, False), (558.0, True)]
        assert [step["midpoint"] for step in entry["steps"]] == [False, False, True]
        assert entry["capacity_rps"] == pytest.approx(expected, rel=1e-3)


def test_every_config_climbs_the_shared_grid_in_every_repetition(tmp_path: Path, load: ScriptedLoad) -> None:
    data = document(bench(tmp_path, load))
    entries = data["capacity"]
    assert sorted((entry["config"], entry["repetition"]) for entry in entries) == sorted(
        (config, rep) for config in CONFIGS for rep in range(2)
    )
    for entry in entries:
        assert entry["grid"] == GRID
        assert [step["rate"] for step in entry["steps"]] == [500.0, 623.0]
        assert [step["ok"] for step in entry["steps"]] == [True, False]
        assert entry["capacity_rps"] == pytest.approx(EXPECTED, rel=1e-3)
        assert entry["censored"] is None and entry["converged"] is True and entry["method"] == "curve"
        # the failed step was followed by a drain, checked at the server's socket (the tiny server listens on
        # loopback); a passing step needs none
        drains = [(step["drain_s"], step["drain_backlog"]) for step in entry["steps"]]
        assert drains[0] == (None, None)
        assert drains[1][0] is not None and drains[1][0] >= 0 and drains[1][1] == 0
    steps = [run for run in data["runs"] if run.get("search")]
    assert len(steps) == 8
    assert all(run["kind"] == "open" and run["valid"] for run in steps)  # a failed step is a valid measurement
    assert {run["scenario"] for run in steps} == {"cap-r500", "cap-r623"}
    assert all(run["step_ok"] is (run["target_rps"] <= CAPACITY) for run in steps)
    runs = {run["id"]: run for run in steps}
    for entry in entries:  # a curve's first step warms up longer: its server sat idle while the others climbed
        warmups = [runs[step["run"]]["warmup_s"] for step in entry["steps"]]
        assert warmups == [pytest.approx(0.1 * FIRST_STEP_WARMUP_FACTOR), 0.1]
    for entry in entries:  # a step is a run of the entry's config and repetition
        runs = {run["id"]: run for run in data["runs"]}
        assert {runs[step["run"]]["config"] for step in entry["steps"]} == {entry["config"]}


def test_queueing_theory_stands_beside_one_request_at_a_time_servers_only(tmp_path: Path, load: ScriptedLoad) -> None:
    entries = document(bench(tmp_path, load))["capacity"]
    for entry in entries:
        if entry["config"] == "flask-gunicorn-sync":
            assert entry["theory"] == "M/D/1" and entry["service_ms"] == pytest.approx(1.0)
            assert entry["theory_rps"] > 0
        else:
            assert entry["theory"] is None and entry["theory_rps"] is None


def test_the_report_reads_the_curves(tmp_path: Path, load: ScriptedLoad) -> None:
    bundle = load_bundle(bench(tmp_path, load))
    assert len(bundle.capacity) == 4
    assert all(result.capacity_rps == pytest.approx(EXPECTED, rel=1e-3) for result in bundle.capacity)
    assert all(run.is_step for run in bundle.step_runs)
    failed = [step for result in bundle.capacity for step in result.steps if not step.ok]
    assert failed and all(step.drain_s is not None and step.drain_backlog == 0 for step in failed)


def test_a_rate_the_generator_cannot_keep_is_run_again_then_is_a_lower_bound(tmp_path: Path) -> None:
    def late_above_500(spec: LoadSpec, out_dir: Path) -> Any:
        return open_result(spec, out_dir, p99_us=PASS_P99_US, lag_ms=12.0 if (spec.rate or 0) > 500 else 0.5)

    load = ScriptedLoad(closed_rps=CLOSED_RPS, open_loop=late_above_500)
    entries = document(bench(tmp_path, load))["capacity"]
    for entry in entries:
        assert [step["rate"] for step in entry["steps"]] == [500.0, 623.0, 623.0]
        assert [step["generator_limited"] for step in entry["steps"]] == [False, True, True]
        assert entry["censored"] == "above" and entry["bound_rps"] == 500.0
        assert entry["limited_by"] == GENERATOR_LIMIT
        assert entry["stop_reason"].startswith("load generator limit")


def test_a_server_that_dies_mid_curve_ends_it_and_its_later_runs(tmp_path: Path, load: ScriptedLoad) -> None:
    load.actions = {3: "kill-server"}  # the first step of the first curve
    data = document(bench(tmp_path, load))
    first = data["capacity"][0]
    assert first["steps"][0]["ok"] is False
    assert "server died" in first["stop_reason"]
    victim = first["config"]
    later = [run for run in data["runs"] if run["config"] == victim and run["order"] > 3]
    assert later and all(run["status"] == "failed" for run in later)
    others = [entry for entry in data["capacity"] if entry["config"] != victim]
    assert all(entry["capacity_rps"] == pytest.approx(EXPECTED, rel=1e-3) for entry in others)


def test_ctrl_c_mid_curve_keeps_the_steps_and_a_partial_entry(tmp_path: Path, load: ScriptedLoad) -> None:
    load.actions = {4: "interrupt"}  # the second step of the first curve
    with pytest.raises(BenchmarkInterrupted) as info:
        bench(tmp_path, load)
    data = document(info.value.bundle_dir)
    assert data["complete"] is False
    [entry] = data["capacity"]
    assert entry["stop_reason"] == "interrupted (Ctrl-C)"
    assert [step["rate"] for step in entry["steps"]] == [500.0]
    assert data["runs"][-1]["status"] == "interrupted"


def test_a_server_that_never_started_leaves_an_unmeasured_curve_not_a_missing_one(
    tmp_path: Path, load: ScriptedLoad
) -> None:
    starter = TinyStarter(failing={"gunicorn-sync"})
    data = document(bench(tmp_path, load, starter=starter))
    failed = [entry for entry in data["capacity"] if entry["config"] == "flask-gunicorn-sync"]
    assert len(failed) == 2
    assert all(entry["steps"] == [] and entry["capacity_rps"] is None for entry in failed)
    assert all(entry["stop_reason"].startswith("server failed to start") for entry in failed)


def test_without_a_closed_loop_run_a_pilot_sets_the_grid(tmp_path: Path, load: ScriptedLoad) -> None:
    plan = PLAN.replace('scenarios = ["single", "cap"]', 'scenarios = ["cap"]')
    data = document(bench(tmp_path, load, plan=plan))
    pilots = [run for run in data["runs"] if run["scenario"] == "cap-pilot-c32"]
    assert len(pilots) == 2 and all(run["kind"] == "closed" and run["repetition"] == 0 for run in pilots)
    assert all(entry["grid"] == GRID for entry in data["capacity"])


def test_the_expected_traffic_is_on_every_curve(tmp_path: Path, load: ScriptedLoad) -> None:
    plan = PLAN.replace("capacity_points = 6", "capacity_points = 6\ntraffic_rps = 300")
    entries = document(bench(tmp_path, load, plan=plan))["capacity"]
    for entry in entries:
        assert 300.0 in entry["grid"]
        assert 300.0 in [step["rate"] for step in entry["steps"]]


def test_extra_repetitions_measure_curves_only_and_climb_from_the_configs_usual_peak(
    tmp_path: Path, load: ScriptedLoad
) -> None:
    """`capacity_extra_repetitions = 1` adds a repetition of curves only: a third curve per config, no closed-loop
    run in it, and its climb starts where the others do (half the config's peak, 500 req/s), not at the grid's
    bottom (300 req/s, the expected traffic), though that repetition has no peak of its own."""
    plan = PLAN.replace("capacity_points = 6", "capacity_points = 6\ntraffic_rps = 300\ncapacity_extra_repetitions = 1")
    data = document(bench(tmp_path, load, plan=plan))
    assert sorted((entry["config"], entry["repetition"]) for entry in data["capacity"]) == sorted(
        (config, rep) for config in CONFIGS for rep in range(3)
    )
    closed = [run for run in data["runs"] if run["kind"] == "closed"]
    assert closed and {run["repetition"] for run in closed} == {0, 1}
    for entry in data["capacity"]:
        assert [step["rate"] for step in entry["steps"]] == [500.0, 623.0, 300.0]
    assert data["plan"]["capacity_extra_repetitions"] == 1


def test_a_steps_window_is_its_request_count_not_the_closed_loop_duration(tmp_path: Path, load: ScriptedLoad) -> None:
    """capacity_step_requests / rate, within [min_duration_s, capacity_max_step_s]: at 500 and 623 req/s 50
    requests take 0.1 and 0.08 s, shorter than duration_s (0.2 s, what closed-loop windows still get)."""
    plan = PLAN.replace("capacity_step_requests = 10", "capacity_step_requests = 50\nmin_duration_s = 0.09")
    bench(tmp_path, load, plan=plan)
    steps = {spec.rate: spec.duration_s for spec in load.calls if spec.kind == "open"}
    assert steps == {500.0: pytest.approx(0.1), 623.0: pytest.approx(0.09)}  # 50 / 623 = 0.080 is under the floor
    assert {spec.duration_s for spec in load.calls if spec.kind == "closed"} == {0.2}


def test_the_time_left_charges_each_run_and_curve_what_the_estimate_counted(
    tmp_path: Path, load: ScriptedLoad, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every curve here takes 2 steps where the estimate counted EXPECTED_CURVE_STEPS (4), and closed-loop windows end
    at their request target: the work charged as it is done still adds up to the plan's estimate, so the time left
    reaches 0 with the last run, not thirty runs before it (the pace of the recent runs scales it; that part is
    timing, not tested)."""
    reporters: list[_Recording] = []

    def recording(console: Console) -> _Recording:
        reporters.append(_Recording(console))
        return reporters[-1]

    monkeypatch.setattr(runner_module, "reporter_for", recording)
    bench(tmp_path, load)
    [reporter] = reporters
    assert reporter.planned_s > 0
    assert reporter.eta.done_estimate_s == pytest.approx(reporter.planned_s)


class _Recording(PlainReporter):
    planned_s = 0.0

    def start(self, total_runs: int, total_estimate_s: float) -> None:
        self.planned_s = total_estimate_s
        super().start(total_runs, total_estimate_s)
