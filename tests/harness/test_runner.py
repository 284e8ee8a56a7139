"""The runner through its seam: real stand-in servers (tests/harness/tiny_server.py) and a scripted load generator.

Nothing here measures speed: the load is scripted, so the tests check what the runner decides and writes (order,
records, reasons, the bundle, no process left behind) in seconds on any machine, busy or not.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from servingbench.harness import speed
from servingbench.harness.bundle import LATEST_LINK, RESULTS_FILE
from servingbench.harness.measure import validity_problems
from servingbench.harness.plan import Measurement
from servingbench.harness.processes import free_port, running_server
from servingbench.harness.runner import (
    BenchmarkInterrupted,
    HarnessError,
    build_payloads,
    config_order,
    plan_targets,
    run_benchmark,
    url_targets,
)
from servingbench.harness.servers import ServerStarter
from tests.harness.fakes import TINY_SERVER, ScriptedLoad, TinyStarter, tiny_server_pids

# slow: each test runs the harness on real tiny servers (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

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
CONFIGS = ("fastapi-uvicorn", "fastapi-uvicorn-async", "flask-gunicorn-sync")
RUNS_PER_REP = 3 * 2  # configs x concurrency levels


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


@pytest.fixture
def load() -> ScriptedLoad:
    return ScriptedLoad()


@pytest.fixture
def starter() -> TinyStarter:
    return TinyStarter()


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    yield
    assert tiny_server_pids() == []


def bench(
    plan_file: Path,
    out_root: Path,
    load: ScriptedLoad,
    starter: ServerStarter | None,
    *,
    targets: Sequence[str] = (),
    terminal: bool = False,
) -> tuple[Path, str]:
    output = io.StringIO()
    console = Console(file=output, force_terminal=terminal, width=120)
    starters = None if starter is None else dict.fromkeys(CONFIGS, starter)
    bundle = run_benchmark(
        plan_path=plan_file,
        preset="default",
        out_root=out_root,
        targets=list(targets),
        load_workers=None,
        console=console,
        allow_shared_cores=True,
        load=load,
        starters=starters,
    )
    return bundle, output.getvalue()


def document(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / RESULTS_FILE).read_text())
    return data


# --- pure parts ------------------------------------------------------------------------------------


def test_config_order_is_seeded_complete_and_varies() -> None:
    names = list(CONFIGS)
    order = config_order(3, "tiny", 0, 0, names)
    assert sorted(order) == sorted(names)
    assert order == config_order(3, "tiny", 0, 0, names)
    orders = {tuple(config_order(3, "tiny", rep, index, names)) for rep in range(6) for index in range(2)}
    assert len(orders) > 1  # shuffled per repetition and measurement
    assert {tuple(config_order(seed, "tiny", 0, 0, names)) for seed in range(8)} != {tuple(order)}


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


def test_build_payloads_from_a_model_without_sample_rows() -> None:
    single = Measurement("m", "s-c1", "s", "closed", "/predict", 1, 1, 1, None)
    batch = Measurement("m", "b-c8", "b", "closed", "/predict/batch", 32, 8, 8, None)
    doc = {"name": "tiny", "n_features": 3}
    [body] = build_payloads(single, doc, seed=1)
    assert json.loads(body) == {"features": [0.0, 0.1, 0.2]}
    instances = json.loads(build_payloads(batch, doc, seed=1)[0])["instances"]
    assert len(instances) == 32 and instances[0] == [0.0, 0.1, 0.2]


def test_url_targets() -> None:
    [target] = url_targets(["http://10.0.0.5:8000/"])
    assert (target.name, target.url, target.config) == ("target-10.0.0.5-8000", "http://10.0.0.5:8000", None)
    for bad in ("10.0.0.5:8000", "http://host:1/predict", "ftp://host"):
        with pytest.raises(HarnessError, match="--target"):
            url_targets([bad])
    with pytest.raises(HarnessError, match="twice"):
        url_targets(["http://a:1", "http://a:1/"])


def test_plan_targets_carry_the_route_only_where_the_framework_offers_one(plan_file: Path) -> None:
    from servingbench.harness.plan import load_plan

    targets = {target.name: target for target in plan_targets(load_plan(plan_file))}
    assert targets["fastapi-uvicorn-async"].route == "async"
    assert targets["flask-gunicorn-sync"].route is None


def test_errors_before_anything_starts(tmp_path: Path, plan_file: Path) -> None:
    for preset, workers, words in (("turbo", None, "preset 'turbo'"), ("default", 0, "load-workers")):
        with pytest.raises(HarnessError, match=words):
            run_benchmark(
                plan_path=plan_file,
                preset=preset,
                out_root=tmp_path / "out",
                targets=[],
                load_workers=workers,
                console=Console(file=io.StringIO()),
            )
    assert not (tmp_path / "out").exists()


# --- orchestration ---------------------------------------------------------------------------------


def test_a_plan_with_memory_probe_steps_records_the_memory_probe_on_every_run(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    load.window_s = 0.03
    monkeypatch.setattr(speed, "PROBE_INTERVAL_S", 0.002)
    monkeypatch.setattr(speed, "PROBE_ITERATIONS", 200)
    monkeypatch.setattr(speed, "MEMORY_PROBE_ITEMS", 5_000)
    with_memory = tmp_path / "memory.toml"
    with_memory.write_text("memory_probe_steps = 50\n" + plan_file.read_text())
    bundle, _ = bench(with_memory, tmp_path / "results", load, starter)
    data = document(bundle)
    assert data["plan"]["memory_probe_steps"] == 50
    assert data["environment"]["memory_probe"] == "chase-50of5000-0.002s"
    assert data["runs"] and all(run["memory_probe_us"] > 0 for run in data["runs"])


def test_every_repetition_measures_every_config_interleaved(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    load.window_s = 0.03  # a window long enough for speed-probe samples, taken every 2 ms here
    monkeypatch.setattr(speed, "PROBE_INTERVAL_S", 0.002)
    monkeypatch.setattr(speed, "PROBE_ITERATIONS", 200)
    bundle, output = bench(plan_file, tmp_path / "results", load, starter)
    data = document(bundle)
    runs = data["runs"]
    assert data["complete"] is True and data["finished"]
    assert (tmp_path / "results" / LATEST_LINK).resolve() == bundle.resolve()
    assert len(runs) == 2 * RUNS_PER_REP
    assert [run["order"] for run in runs] == list(range(1, len(runs) + 1))
    assert all(run["valid"] and run["status"] == "ok" for run in runs)
    for rep in range(2):  # per repetition and scenario, every config once, back to back
        mine = [run for run in runs if run["repetition"] == rep]
        for scenario in ("single-c1", "single-c2"):
            block = [run["config"] for run in mine if run["scenario"] == scenario]
            assert sorted(block) == sorted(CONFIGS)
    assert len(starter.started) == 3  # one server start per config for the model, serving both repetitions
    assert len({run["session"] for run in runs}) == 3
    first = runs[0]
    assert first["server_cpu_s"] is not None and first["server_rss_mb_per_worker"]
    assert first["server_cpu_us_per_request"] == pytest.approx(
        first["server_cpu_s"] * 1e6 / first["requests"], rel=0.01, abs=0.1
    )
    assert first["artifacts"]["locust_stats"] == f"runs/{first['id']}/locust_stats.csv"
    assert (bundle / first["artifacts"]["server_log"]).is_file()
    assert first["wall_s"] is not None
    assert all(run["speed_probe_us"] > 0 for run in runs)  # the machine-speed probe on the server's core
    assert all(run["memory_probe_us"] is None for run in runs) and "memory_probe" not in data["environment"]
    assert json.loads(load.calls[0].payload) == {"features": [round(0.1 * i, 6) for i in range(10)]}
    assert data["models"]["tiny"]["name"] == "tiny" and data["models"]["tiny"]["spec"] == "synthetic:sleep_ms=1"
    seeds: dict[tuple[int, str], set[int]] = {}
    for spec, run in zip(load.calls, runs, strict=True):
        seeds.setdefault((run["repetition"], run["scenario"]), set()).add(spec.seed)
    assert all(len(group) == 1 for group in seeds.values())  # every config of a repetition gets the same schedule
    assert len({seed for group in seeds.values() for seed in group}) == len(seeds)
    assert data["configs"]["flask-gunicorn-sync"]["keepalive"] is False
    assert data["configs"]["fastapi-uvicorn"]["role"] == "equal-work"
    assert any("interleaved" in rule for rule in data["fairness"])
    assert f"[{len(runs)}/{len(runs)}" in output
    assert f"results: {bundle}" in output


def test_restart_every_starts_the_servers_again(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    plan_file.write_text(PLAN.replace("repetitions = 2", "repetitions = 3\nrestart_every = 2"))
    bundle, _ = bench(plan_file, tmp_path, load, starter)
    runs = document(bundle)["runs"]
    assert len(starter.started) == 6  # repetitions 1-2 on the first starts, repetition 3 on the second
    sessions = {rep: {run["session"] for run in runs if run["repetition"] == rep} for rep in range(3)}
    assert sessions[0] == sessions[1] and not sessions[1] & sessions[2]


def test_invalid_runs_carry_their_reason(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    load.actions = {1: "saturate", 2: "errors", 3: "few"}
    bundle, _ = bench(plan_file, tmp_path, load, starter)
    runs = document(bundle)["runs"]
    reasons = [run["invalid_reason"] for run in runs[:3]]
    assert reasons[0].startswith("load generator saturated (97% CPU")
    assert reasons[1] == "error rate 25.0% over the limit 1.0%"
    assert reasons[2] == "too few requests (5 < 10)"
    assert not any(run["valid"] for run in runs[:3])
    assert all(run["valid"] for run in runs[3:])


def test_a_config_that_fails_to_start_is_recorded_and_the_run_goes_on(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    starter.failing.add("gunicorn-sync")
    bundle, output = bench(plan_file, tmp_path, load, starter)
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
    assert len(load.calls) == len(others)


def test_a_server_that_dies_mid_run_fails_its_later_runs_only(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    load.actions = {1: "kill-server"}
    bundle, _ = bench(plan_file, tmp_path, load, starter)
    runs = document(bundle)["runs"]
    victim = runs[0]["config"]
    assert runs[0]["status"] == "failed"
    assert runs[0]["invalid_reason"].startswith("server died during the run (exit code -9)")
    later = [run for run in runs[1:] if run["config"] == victim]
    assert later and all(run["status"] == "failed" for run in later)
    assert later[0]["invalid_reason"] == "server died earlier in this model's runs (r0001)"
    assert all(run["valid"] for run in runs[1:] if run["config"] != victim)
    assert len(load.calls) == len(runs) - len(later)


def test_a_load_generator_failure_is_recorded(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    load.actions = {2: "fail"}
    bundle, _ = bench(plan_file, tmp_path, load, starter)
    runs = document(bundle)["runs"]
    assert runs[1]["status"] == "failed"
    assert runs[1]["invalid_reason"] == "load generator failed: Locust wrote no result file."
    assert runs[2]["valid"]


def test_ctrl_c_stops_everything_and_keeps_what_was_measured(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    load.actions = {3: "interrupt"}
    with pytest.raises(BenchmarkInterrupted) as info:
        bench(plan_file, tmp_path, load, starter)
    assert isinstance(info.value, KeyboardInterrupt)
    data = document(info.value.bundle_dir)
    assert data["complete"] is False
    assert data["finished"] is not None
    assert [run["status"] for run in data["runs"]] == ["ok", "ok", "interrupted"]
    assert data["runs"][2]["invalid_reason"] == "interrupted (Ctrl-C)"
    assert load.server_pids[2]
    assert not any(psutil.pid_exists(pid) for pid in load.server_pids[2])


def test_target_mode_measures_a_running_server_without_server_figures(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad
) -> None:
    port = free_port()
    with running_server(
        [sys.executable, str(TINY_SERVER), str(port)], os.environ, port=port, log_path=tmp_path / "t.log"
    ) as server:
        bundle, _ = bench(plan_file, tmp_path / "out", load, None, targets=[server.base_url])
    data = document(bundle)
    name = f"target-127.0.0.1-{port}"
    assert list(data["configs"]) == [name]
    assert len(data["runs"]) == 2 * 2  # repetitions x concurrency levels
    assert all(run["config"] == name and run["model"] == "target" for run in data["runs"])
    assert all(run["server_cpu_us_per_request"] is None for run in data["runs"])
    assert all(run["speed_probe_us"] is None for run in data["runs"])  # no server core of ours to probe
    assert all(run["valid"] for run in data["runs"])
    assert any(rule.startswith("target mode") for rule in data["fairness"])
    assert all(spec.allow_remote for spec in load.calls)


def test_a_terminal_gets_a_progress_bar(
    tmp_path: Path, plan_file: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    bundle, output = bench(plan_file, tmp_path, load, starter, terminal=True)
    assert "fastapi-uvicorn-async" in output
    assert str(bundle) in output


def test_a_config_too_slow_for_min_requests_gets_longer_windows_next_repetition(
    tmp_path: Path, plan_file: Path, starter: TinyStarter
) -> None:
    load = ScriptedLoad(closed_rps=20.0)  # 4 requests in a 0.2 s window: under min_requests = 10
    bundle, _ = bench(plan_file, tmp_path, load, starter)
    runs = document(bundle)["runs"]
    first = [spec.duration_s for spec, run in zip(load.calls, runs, strict=True) if run["repetition"] == 0]
    second = [spec.duration_s for spec, run in zip(load.calls, runs, strict=True) if run["repetition"] == 1]
    assert set(first) == {0.2}
    assert second == pytest.approx([0.6] * len(second))  # 1.5 x 10 requests at 20 req/s = 0.75 s, capped at 0.6 s


def test_every_repetition_measures_every_model_while_all_servers_are_up(
    tmp_path: Path, load: ScriptedLoad, starter: TinyStarter
) -> None:
    plan = tmp_path / "models.toml"
    plan.write_text(
        PLAN.replace(
            'scenarios = ["single"]\n',
            'scenarios = ["single"]\n[models.other]\nspec = "synthetic:sleep_ms=2"\nscenarios = ["single"]\n',
        )
    )
    bundle, _ = bench(plan, tmp_path / "out", load, starter)
    runs = document(bundle)["runs"]
    assert len(starter.started) == 6  # 3 configs x 2 models, started once and up together
    reps = [(run["repetition"], run["model"]) for run in runs]
    assert reps == sorted(reps, key=lambda item: item[0])  # repetition by repetition...
    assert [model for rep, model in dict.fromkeys(reps)] == ["tiny", "other", "tiny", "other"]  # ...every model in each
