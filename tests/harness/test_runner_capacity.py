"""The capacity search inside `servingbench run`: steps recorded as runs, one capacity entry per server start.

The load generator is scripted as a server with a known capacity (open-loop p99 is low up to it, far over the SLO
above it), so the search's outcome, the bundle and the summary can be checked exactly and in seconds; the real
servers and Locust are in the slow end-to-end test.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from servingbench.harness import runner
from servingbench.harness.bundle import RESULTS_FILE
from servingbench.harness.capacity import GENERATOR_LIMIT, PEAK_START_FRACTION
from servingbench.harness.loadgen import LatencyHistograms, LoadResult
from servingbench.harness.runner import BenchmarkInterrupted, run_benchmark
from servingbench.loadtests.openloop import OpenLoopCounts
from servingbench.loadtests.recorder import new_histogram
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.reports.bundle import load_bundle
from tests.harness.test_runner import failing_servers, shared_cpus, tiny_server_pids, wait_dead

__all__ = ["failing_servers", "shared_cpus"]  # fixtures used here by name

PEAK_RPS = 250.0  # closed-loop throughput of the scripted server
CAPACITY_RPS = 300.0  # open-loop rates up to this meet the SLO
TOLERANCE = 0.05
REQUESTS = 400
PASS_P99_US = 8_000
FEW_REQUESTS = 3  # under the plan's min_requests: too few to judge a step
LAGGING_P99_MS = 12.0  # over a tenth of the 50 ms SLO: the generator fell behind
ON_TIME_P99_MS = 0.5
FAIL_P99_US = 400_000

PLAN = f"""
seed = 7
warmup_s = 0.1
duration_s = 0.2
repetitions = 2
min_requests = 10
startup_timeout_s = 30.0
capacity_tolerance = {TOLERANCE}
capacity_max_steps = 10
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


@dataclass
class ScriptedServer:
    """A `run_load` stand-in: closed loop gives `PEAK_RPS`; open loop meets the SLO up to `CAPACITY_RPS`.

    ``above`` says how a rate past capacity fails: "slow" (p99 far over the SLO, some drops and errors), "late"
    (the generator falls behind, the server is fine) or "slow-and-late" (both). ``actions`` maps a 1-based call
    number to "interrupt" or "kill-server".
    """

    above: str = "slow"
    actions: dict[int, str] = field(default_factory=dict)
    calls: list[LoadSpec] = field(default_factory=list)

    def __call__(
        self,
        spec: LoadSpec,
        *,
        out_dir: Path,
        cpus: Sequence[int] | None,
        workers: int = 1,
        timeout_s: float | None = None,
        on_window_start: Callable[[], None] | None = None,
        on_window_end: Callable[[], None] | None = None,
    ) -> LoadResult:
        self.calls.append(spec)
        action = self.actions.get(len(self.calls))
        if action == "interrupt":
            raise KeyboardInterrupt
        if on_window_start:
            on_window_start()
        if action == "kill-server":
            pids = tiny_server_pids()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            wait_dead(pids)
        if on_window_end:
            on_window_end()
        return self._result(spec)

    def _result(self, spec: LoadSpec) -> LoadResult:
        if self.above == "few" and spec.kind == "open" and (spec.rate or 0.0) > CAPACITY_RPS:
            return replace(self._fine(spec), requests=FEW_REQUESTS)
        return self._fine(spec)

    def _fine(self, spec: LoadSpec) -> LoadResult:
        overloaded = spec.kind == "open" and (spec.rate or 0.0) > CAPACITY_RPS
        slow = overloaded and self.above in ("slow", "slow-and-late")
        total = new_histogram()
        total.record_value(FAIL_P99_US if slow else PASS_P99_US, REQUESTS)
        counts = None
        if spec.kind == "open":
            lagging = overloaded and self.above in ("late", "slow-and-late")
            counts = OpenLoopCounts(
                scheduled=REQUESTS + (3 if slow else 0),
                dropped=3 if slow else 0,
                late=REQUESTS // 5 if lagging else 0,
                sent_in_window=REQUESTS,
                send_lag_p99_ms=LAGGING_P99_MS if lagging else ON_TIME_P99_MS,
            )
        errors = REQUESTS // 4 if slow else 0
        return LoadResult(
            requests=REQUESTS,
            errors=errors,
            errors_by_kind={"HTTP 503": errors} if errors else {},
            warmup_s=spec.warmup_s,
            duration_s=REQUESTS / (spec.rate or PEAK_RPS),
            rps=spec.rate or PEAK_RPS,
            histograms=LatencyHistograms(total=total, validate=new_histogram(), predict=new_histogram()),
            generator_cpu_s=0.1,
            generator_cpu_pct=30.0,
            workers={},
            open_loop=counts,
        )


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    server = ScriptedServer()
    monkeypatch.setattr(runner, "run_load", server)
    monkeypatch.setattr(runner, "wait_until_idle", lambda base_url, **_: True)
    return server


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


def bench(plan_file: Path, out_root: Path) -> tuple[dict[str, Any], str]:
    output = io.StringIO()
    bundle_dir = run_benchmark(
        plan_path=plan_file,
        preset="default",
        out_root=out_root,
        targets=[],
        load_workers=1,
        console=Console(file=output, width=160),
    )
    return json.loads((bundle_dir / RESULTS_FILE).read_text()), output.getvalue()


def searches(document: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = document["capacity"]
    return entries


def steps_of(document: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [run for run in document["runs"] if run.get("search") == entry["id"]]


def test_every_server_start_searches_its_capacity_and_records_each_step(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    document, _ = bench(plan_file, tmp_path / "results")
    entries = searches(document)
    assert len(entries) == 2 * 2  # configs x repetitions
    assert len({entry["id"] for entry in entries}) == len(entries)
    for entry in entries:
        assert entry["converged"] and entry["scenario"] == "cap" and entry["arrivals"] == "poisson"
        assert CAPACITY_RPS / (1 + TOLERANCE) <= entry["capacity_rps"] <= CAPACITY_RPS
        assert entry["limited_by"] is None
        runs = steps_of(document, entry)
        assert [run["id"] for run in runs] == [step["run"] for step in entry["steps"]]
        for run, step in zip(runs, entry["steps"], strict=True):
            assert run["kind"] == "open" and run["target_rps"] == step["rate"]
            assert run["scenario"] == f"cap-r{step['rate']:g}" and run["config"] == entry["config"]
            assert run["step_ok"] == step["ok"] == (step["rate"] <= CAPACITY_RPS)
        assert entry["steps"][0]["rate"] == pytest.approx(PEAK_RPS * PEAK_START_FRACTION)  # from this start's peak


def test_a_step_past_capacity_fails_the_slo_but_stays_a_valid_measurement(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    document, _ = bench(plan_file, tmp_path / "results")
    failed = [run for run in document["runs"] if run.get("search") and not run["step_ok"]]
    assert failed
    for run in failed:
        assert run["valid"] and run["invalid_reason"] is None  # errors and drops are the server's answer
        assert "over the SLO" in run["step_reason"] and "dropped at the in-flight cap" in run["step_reason"]


def test_queueing_theory_stands_beside_one_request_at_a_time_servers_only(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    document, _ = bench(plan_file, tmp_path / "results")
    for entry in searches(document):
        if entry["config"] == "flask-gunicorn-sync":  # one sync worker: a single server, M/D/1 applies
            assert entry["theory"] == "M/D/1"
            assert entry["service_ms"] == pytest.approx(1000.0 / PEAK_RPS)
            assert 0 < entry["theory_rps"] < PEAK_RPS
        else:  # a 40-thread pool is not one server
            assert (entry["theory"], entry["theory_rps"], entry["service_ms"]) == (None, None, None)


def test_steps_stay_out_of_the_summary_and_the_capacity_table_is_printed(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    _, output = bench(plan_file, tmp_path / "results")
    summary, capacity = output.split("servingbench: medians over valid repetitions")[1].split("capacity at the p99")
    assert "single-c4" in summary and "cap-r" not in summary
    assert "M/D/1" in capacity and "flask-gunicorn-sync" in capacity
    assert "meets the SLO" in output and "fails: p99" in output


def test_the_report_reads_the_search(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    bench(plan_file, tmp_path / "results")
    bundle = load_bundle(tmp_path / "results" / "latest")
    assert len(bundle.capacity) == 4
    assert all(run.search for run in bundle.runs if run.scenario.startswith("cap-r"))


def test_a_capacity_limited_by_the_generator_is_a_lower_bound(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    scripted.above = "late"
    document, output = bench(plan_file, tmp_path / "results")
    for entry in searches(document):
        assert entry["limited_by"] == GENERATOR_LIMIT
        late = [run for run in steps_of(document, entry) if run["target_rps"] > CAPACITY_RPS]
        assert late and all(not run["valid"] and "load generator fell behind" in run["invalid_reason"] for run in late)
    assert "lower bound" in output


def test_a_server_that_dies_mid_search_ends_it_with_a_lower_bound(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    scripted.actions[3] = "kill-server"  # call 1: closed loop; 2: first step; 3: second step
    document, _ = bench(plan_file, tmp_path / "results")
    first = searches(document)[0]
    assert not first["converged"] and first["stop_reason"].startswith("server died during the search")
    assert len(first["steps"]) == 2
    dead = first["steps"][1]  # its load came back clean, but its server died: no pass, and not the generator's
    assert not dead["ok"] and not dead["generator_limited"] and dead["reason"].startswith("server died")
    assert first["capacity_rps"] == pytest.approx(PEAK_RPS * PEAK_START_FRACTION)  # the step before it
    assert len(searches(document)) == 4  # the plan went on with the other starts
    assert tiny_server_pids() == []


def test_ctrl_c_mid_search_keeps_the_steps_and_a_partial_entry(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    scripted.actions[4] = "interrupt"
    with pytest.raises(BenchmarkInterrupted) as caught:
        bench(plan_file, tmp_path / "results")
    document = json.loads((caught.value.bundle_dir / RESULTS_FILE).read_text())
    assert document["complete"] is False
    (entry,) = searches(document)
    assert entry["stop_reason"] == "interrupted (Ctrl-C)" and not entry["converged"]
    assert len(entry["steps"]) == 2
    assert document["runs"][-1]["status"] == "interrupted" and document["runs"][-1]["search"] == entry["id"]
    assert tiny_server_pids() == []


def test_an_overloaded_step_stays_a_valid_failure_when_the_generator_also_lagged(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    scripted.above = "slow-and-late"  # p99 400 ms: no send lag of a few ms could have met a 50 ms SLO
    document, _ = bench(plan_file, tmp_path / "results")
    failed = [run for run in document["runs"] if run.get("search") and not run["step_ok"]]
    assert failed and all(run["valid"] and "load generator fell behind" in run["step_reason"] for run in failed)
    assert all(entry["limited_by"] is None and entry["converged"] for entry in searches(document))


def test_a_rate_too_slow_to_judge_fails_without_blaming_the_generator(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    scripted.above = "few"
    document, _ = bench(plan_file, tmp_path / "results")
    unjudged = [run for run in document["runs"] if run.get("search") and run["requests"] == FEW_REQUESTS]
    assert unjudged and all(not run["step_ok"] and "too few requests" in run["step_reason"] for run in unjudged)
    assert all(not run["valid"] for run in unjudged)
    assert all(entry["limited_by"] is None for entry in searches(document))


def test_a_server_that_never_started_leaves_an_unmeasured_search_not_a_missing_one(
    scripted: ScriptedServer, plan_file: Path, tmp_path: Path, failing_servers: set[str]
) -> None:
    failing_servers.add("gunicorn-sync")
    document, _ = bench(plan_file, tmp_path / "results")
    unmeasured = [entry for entry in searches(document) if entry["config"] == "flask-gunicorn-sync"]
    assert len(unmeasured) == 2  # one per repetition
    for entry in unmeasured:
        assert entry["steps"] == [] and entry["capacity_rps"] is None and not entry["converged"]
        assert entry["stop_reason"].startswith("server failed to start")
        (run,) = [run for run in document["runs"] if run.get("search") == entry["id"]]
        assert run["status"] == "failed" and run["kind"] == "open"
    assert {run["kind"] for run in document["runs"]} <= {"closed", "open"}
    assert load_bundle(tmp_path / "results" / "latest").capacity[0].outcome in ("capacity", "not measured")
