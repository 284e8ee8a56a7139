"""The runner with stand-ins: the tiny server for every config and a scripted load generator.

These cover orchestration (interleaving, validity gates, failures, Ctrl-C, target mode) in seconds; the slow
end-to-end test runs the real servers and Locust.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from servingbench.harness import runner
from servingbench.harness.bundle import LATEST_LINK, RESULTS_FILE
from servingbench.harness.cpus import CpuAllocation, allocate_cpus
from servingbench.harness.loadgen import LatencyHistograms, LoadResult
from servingbench.harness.plan import Measurement, Plan, load_plan
from servingbench.harness.processes import free_port, running_server
from servingbench.harness.runner import (
    BenchmarkInterrupted,
    HarnessError,
    Target,
    build_payload,
    plan_targets,
    run_benchmark,
    schedule,
    url_targets,
    validity_problems,
)
from servingbench.loadtests.recorder import new_histogram
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.servers.launch import LaunchCommand, ServerConfig

TINY_SERVER = Path(__file__).with_name("tiny_server.py")
FAKE_REQUESTS = 200
KILL_DEADLINE_S = 10.0
FAKE_LATENCY_US = (700, 800, 900, 2500)

PLAN = """
seed = 3
warmup_s = 0.1
duration_s = 0.2
repetitions = 2
min_requests = 10
startup_timeout_s = 30.0
[configs.fastapi-uvicorn]
framework = "fastapi"
server = "uvicorn"
[configs.fastapi-uvicorn-async]
framework = "fastapi"
server = "uvicorn"
route = "async"
[configs.flask-gunicorn-sync]
framework = "flask"
server = "gunicorn-sync"
[models.tiny]
spec = "synthetic:sleep_ms=1"
scenarios = ["single"]
[scenarios.single]
endpoint = "/predict"
concurrency = [1, 2]
"""
RUNS_PER_REP = 3 * 2  # configs x concurrency levels


@dataclass
class FakeLoad:
    """A scripted ``run_load``: call ``n`` (1-based) does ``actions[n]``, default a clean run."""

    actions: dict[int, str] = field(default_factory=dict)
    calls: list[LoadSpec] = field(default_factory=list)
    server_pids: list[list[int]] = field(default_factory=list)

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
        pids = tiny_server_pids()
        self.server_pids.append(pids)
        action = self.actions.get(len(self.calls), "ok")
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "fail":
            raise RuntimeError("Locust wrote no result file.\n--- log ---")
        if on_window_start:
            on_window_start()
        if action == "kill-server":
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            wait_dead(pids)
        if on_window_end:
            on_window_end()
        (out_dir / "locust.html").write_text("<html></html>")
        return fake_result(action, out_dir)


def fake_result(action: str, out_dir: Path) -> LoadResult:
    total = new_histogram()
    for value in FAKE_LATENCY_US:
        total.record_value(value)
    requests = 5 if action == "few" else FAKE_REQUESTS
    errors = 50 if action == "errors" else 0
    return LoadResult(
        requests=requests,
        errors=errors,
        errors_by_kind={"HTTP 503": errors} if errors else {},
        warmup_s=0.1,
        duration_s=0.2,
        rps=requests / 0.2,
        histograms=LatencyHistograms(total=total, validate=new_histogram(), predict=new_histogram()),
        generator_cpu_s=0.1,
        generator_cpu_pct=97.0 if action == "saturate" else 40.0,
        workers={},
        artifacts={"locust_html": out_dir / "locust.html"},
    )


def wait_dead(pids: Sequence[int]) -> None:
    """Wait until the killed servers are zombies, without reaping them (the harness's Popen must see the code)."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while time.monotonic() < deadline:
        if all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids):
            return
        time.sleep(0.01)
    pytest.fail(f"killed servers {pids} did not die")


def tiny_server_pids() -> list[int]:
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if str(TINY_SERVER) in child.cmdline():
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


@pytest.fixture
def fake_load(monkeypatch: pytest.MonkeyPatch) -> FakeLoad:
    fake = FakeLoad()
    monkeypatch.setattr(runner, "run_load", fake)
    return fake


@pytest.fixture
def failing_servers(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every config starts the tiny server; configs whose server kind is in the returned set exit at once."""
    failing: set[str] = set()

    def launch(config: ServerConfig, *, host: str, port: int, model: str, blas_threads: int = 1) -> LaunchCommand:
        flags = ["--exit-before-ready", "3"] if config.server in failing else []
        return LaunchCommand([sys.executable, str(TINY_SERVER), str(port), *flags], dict(os.environ))

    monkeypatch.setattr(runner, "launch_command", launch)
    return failing


@pytest.fixture(autouse=True)
def shared_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Orchestration tests run on any machine, even a 1-core one."""

    def detect(*, server_cpus: int = 1, allow_shared: bool = False) -> CpuAllocation:
        return allocate_cpus(os.sched_getaffinity(0), None, server_cpus=server_cpus, allow_shared=True)

    monkeypatch.setattr(runner, "detect_cpus", detect)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


def bench(plan_file: Path, out_root: Path, *, targets: Sequence[str] = (), terminal: bool = False) -> tuple[Path, str]:
    output = io.StringIO()
    console = Console(file=output, force_terminal=terminal, width=120)
    bundle = run_benchmark(
        plan_path=plan_file,
        preset="default",
        out_root=out_root,
        targets=list(targets),
        load_workers=None,
        console=console,
    )
    return bundle, output.getvalue()


def document(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / RESULTS_FILE).read_text())
    return data


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    yield
    assert tiny_server_pids() == []


# --- pure parts ------------------------------------------------------------------------------------


def first_order(plan: Plan, targets: Sequence[Target]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.target.name for s in schedule(plan, targets) if s.repetition == 0))


def test_schedule_is_seeded_interleaved_and_complete() -> None:
    plan = load_plan(None, "default")
    targets = plan_targets(plan)
    sessions = schedule(plan, targets)
    assert sessions == schedule(plan, targets)
    names = [target.name for target in targets]
    for repetition in range(plan.repetitions):
        visited = [s.target.name for s in sessions if s.repetition == repetition]
        order = list(dict.fromkeys(visited))
        assert sorted(order) == sorted(names)  # every config once per repetition...
        assert visited == [name for name in order for _ in plan.models]  # ...started once per model
    sequence = [s.target.name for s in sessions]
    for name in names:  # never all of A, then all of B
        positions = [i for i, item in enumerate(sequence) if item == name]
        assert positions[-1] - positions[0] + 1 > len(positions)
    first_orders = {first_order(replace(plan, seed=seed), targets) for seed in range(5)}
    assert len(first_orders) > 1  # the seed decides the order


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, []),
        ({"generator_cpu_pct": 95.0}, ["load generator saturated (95% CPU > 90% of its cores)"]),
        ({"errors": 20}, ["error rate 2.0% over the limit 1.0%"]),
        ({"requests": 50}, ["too few requests (50 < 100)"]),
        ({"requests": 0}, ["too few requests (0 < 100)"]),
    ],
)
def test_validity_gates(kwargs: dict[str, Any], expected: list[str]) -> None:
    values: dict[str, Any] = {"requests": 1000, "errors": 0, "generator_cpu_pct": 50.0}
    values.update(kwargs)
    assert validity_problems(**values, error_rate_limit=0.01, min_requests=100) == expected


def test_build_payload() -> None:
    single = Measurement("m", "s-c1", "s", "closed", "/predict", 1, 1, 1, None)
    batch = Measurement("m", "b-c8", "b", "closed", "/predict/batch", 32, 8, 8, None)
    assert json.loads(build_payload(single, 3)) == {"features": [0.0, 0.1, 0.2]}
    instances = json.loads(build_payload(batch, 3))["instances"]
    assert len(instances) == 32 and instances[0] == [0.0, 0.1, 0.2]


def test_url_targets() -> None:
    [target] = url_targets(["http://10.0.0.5:8000/"])
    assert (target.name, target.url, target.config) == ("target-10.0.0.5-8000", "http://10.0.0.5:8000", None)
    for bad in ("10.0.0.5:8000", "http://host:1/predict", "ftp://host"):
        with pytest.raises(HarnessError, match="--target"):
            url_targets([bad])
    with pytest.raises(HarnessError, match="twice"):
        url_targets(["http://a:1", "http://a:1/"])


def test_errors_before_anything_starts(tmp_path: Path, plan_file: Path) -> None:
    with pytest.raises(HarnessError, match="preset 'turbo'"):
        run_benchmark(
            plan_path=plan_file,
            preset="turbo",
            out_root=tmp_path / "out",
            targets=[],
            load_workers=None,
            console=Console(),
        )
    with pytest.raises(HarnessError, match="load-workers"):
        run_benchmark(
            plan_path=plan_file,
            preset="default",
            out_root=tmp_path / "out",
            targets=[],
            load_workers=0,
            console=Console(),
        )
    assert not (tmp_path / "out").exists()


# --- orchestration ---------------------------------------------------------------------------------


def test_full_run_writes_a_complete_bundle(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    bundle, output = bench(plan_file, tmp_path / "results")
    data = document(bundle)
    runs = data["runs"]
    assert data["complete"] is True and data["finished"]
    assert (tmp_path / "results" / LATEST_LINK).resolve() == bundle.resolve()
    assert len(runs) == 2 * RUNS_PER_REP
    assert [run["order"] for run in runs] == list(range(1, len(runs) + 1))
    assert all(run["valid"] and run["status"] == "ok" for run in runs)
    assert {run["config"] for run in runs[:RUNS_PER_REP]} == set(data["configs"])
    first = runs[0]
    assert first["latency_ms"]["p50"] == pytest.approx(0.8, abs=0.001)
    assert first["server_cpu_s"] is not None and first["server_rss_mb_per_worker"]
    assert first["server_cpu_us_per_request"] == pytest.approx(first["server_cpu_s"] * 1e6 / FAKE_REQUESTS, rel=0.01)
    assert first["artifacts"]["locust_html"] == f"runs/{first['id']}/locust.html"
    assert (bundle / first["artifacts"]["server_log"]).is_file()
    assert json.loads(fake_load.calls[0].payload) == {"features": [round(0.1 * i, 6) for i in range(10)]}
    assert {spec.seed for spec in fake_load.calls} == {3 + run["order"] for run in runs}
    assert data["configs"]["flask-gunicorn-sync"]["keepalive"] is False
    assert any("interleaved" in rule for rule in data["fairness"])
    assert f"[{len(runs)}/{len(runs)}" in output
    assert f"results: {bundle}" in output


def test_invalid_runs_carry_their_reason(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    fake_load.actions = {1: "saturate", 2: "errors", 3: "few"}
    bundle, _ = bench(plan_file, tmp_path)
    runs = document(bundle)["runs"]
    reasons = [run["invalid_reason"] for run in runs[:3]]
    assert reasons[0].startswith("load generator saturated (97% CPU")
    assert reasons[1] == "error rate 25.0% over the limit 1.0%"
    assert reasons[2] == "too few requests (5 < 10)"
    assert not any(run["valid"] for run in runs[:3])
    assert all(run["valid"] for run in runs[3:])


def test_a_config_that_fails_to_start_is_recorded_and_the_run_goes_on(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    failing_servers.add("gunicorn-sync")
    bundle, output = bench(plan_file, tmp_path)
    data = document(bundle)
    failed = [run for run in data["runs"] if run["config"] == "flask-gunicorn-sync"]
    others = [run for run in data["runs"] if run["config"] != "flask-gunicorn-sync"]
    assert len(failed) == 4 and len(others) == 8
    assert all(run["status"] == "failed" and not run["valid"] for run in failed)
    assert failed[0]["invalid_reason"] == "server failed to start: exited with code 3 before it was ready"
    assert "bad model 'nope'" in failed[0]["log_tail"]
    assert all(run["valid"] for run in others)
    assert data["complete"] is True
    assert "FAILED: server failed to start" in output


def test_a_server_that_dies_mid_run_fails_the_rest_of_its_session(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    fake_load.actions = {1: "kill-server"}
    bundle, _ = bench(plan_file, tmp_path)
    runs = document(bundle)["runs"]
    assert runs[0]["status"] == "failed"
    assert runs[0]["invalid_reason"].startswith("server died during the run (exit code -9)")
    assert runs[1]["status"] == "failed"
    assert runs[1]["invalid_reason"] == "server died earlier in this session (r0001)"
    assert all(run["valid"] for run in runs[2:])
    assert len(fake_load.calls) == len(runs) - 1


def test_a_load_generator_failure_is_recorded(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    fake_load.actions = {2: "fail"}
    bundle, _ = bench(plan_file, tmp_path)
    runs = document(bundle)["runs"]
    assert runs[1]["status"] == "failed"
    assert runs[1]["invalid_reason"] == "load generator failed: Locust wrote no result file."
    assert runs[2]["valid"]


def test_ctrl_c_stops_everything_and_keeps_what_was_measured(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    fake_load.actions = {3: "interrupt"}
    with pytest.raises(BenchmarkInterrupted) as info:
        bench(plan_file, tmp_path)
    assert isinstance(info.value, KeyboardInterrupt)
    data = document(info.value.bundle_dir)
    assert data["complete"] is False
    assert data["finished"] is not None
    assert [run["status"] for run in data["runs"]] == ["ok", "ok", "interrupted"]
    assert data["runs"][2]["invalid_reason"] == "interrupted (Ctrl-C)"
    assert fake_load.server_pids[2]
    assert not any(psutil.pid_exists(pid) for pid in fake_load.server_pids[2])


def test_target_mode_measures_a_running_server_without_server_figures(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad
) -> None:
    port = free_port()
    with running_server(
        [sys.executable, str(TINY_SERVER), str(port)], os.environ, port=port, log_path=tmp_path / "t.log"
    ) as server:
        bundle, _ = bench(plan_file, tmp_path / "out", targets=[server.base_url])
    data = document(bundle)
    name = f"target-127.0.0.1-{port}"
    assert list(data["configs"]) == [name]
    assert len(data["runs"]) == 2 * 2  # repetitions x concurrency levels
    assert all(run["config"] == name and run["model"] == "target" for run in data["runs"])
    assert all(run["server_cpu_us_per_request"] is None for run in data["runs"])
    assert all(run["valid"] for run in data["runs"])
    assert any(rule.startswith("target mode") for rule in data["fairness"])
    assert all(spec.allow_remote for spec in fake_load.calls)


def test_a_terminal_gets_a_progress_bar_and_a_table(
    tmp_path: Path, plan_file: Path, fake_load: FakeLoad, failing_servers: set[str]
) -> None:
    bundle, output = bench(plan_file, tmp_path, terminal=True)
    assert "medians over valid repetitions" in output
    assert "fastapi-uvicorn-async" in output
    assert str(bundle) in output
