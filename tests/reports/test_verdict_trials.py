"""scripts/verdict_trials.py: the counting and intervals on canned bundles, the plan overrides, and that a run past
its deadline is stopped with everything it started (real processes, no benchmark)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from scipy import stats as scipy_stats

from scripts import verdict_trials as trials
from servingbench.harness.plan import load_plan
from servingbench.reports import load_bundle

from .builders import FAST_A, FAST_MODEL, SLOW_C, BundleSpec, ScenarioSpec, build_bundle

SCENARIOS = (ScenarioSpec("single-c8", concurrency=8),)
TWINS = tuple(dataclasses.replace(FAST_A, name=f"twin-{letter}", label=f"twin {letter}") for letter in "abcd")
SYNC = dataclasses.replace(SLOW_C, name="flask-gunicorn-sync")
UVICORN = dataclasses.replace(FAST_A, name="fastapi-uvicorn")
COSTLY = dataclasses.replace(FAST_MODEL, name="costly", predict_ms=0.087)
BASE = dataclasses.replace(FAST_MODEL, name="base")
SPEC = BundleSpec(models=(FAST_MODEL,), scenarios=SCENARIOS, capacity=False, invalid_runs=False)
STACKS, MODELS, AA = trials.TRIALS["stacks"], trials.TRIALS["models"], trials.TRIALS["aa"]


def _record(tmp_path: Path, trial: trials.TrialPlan, spec: BundleSpec, index: int = 1) -> trials.RunRecord:
    return trials.record_of(trial, index, load_bundle(build_bundle(tmp_path / f"{trial.name}{index}", spec)), 1.0)


def test_clopper_pearson_is_scipys_exact_interval() -> None:
    assert trials.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3084971078187608))
    assert trials.clopper_pearson(9, 10) == pytest.approx((0.5549839502731740, 0.9974714153526705))
    expected = scipy_stats.binomtest(3, 180).proportion_ci(method="exact")
    assert trials.clopper_pearson(3, 180) == pytest.approx((expected.low, expected.high))
    assert trials.clopper_pearson(0, 0) == (0.0, 1.0)
    assert str(trials.Proportion(9, 10)) == "9 of 10 = 90.0% (95% Clopper-Pearson 55.5%\u201399.7%)"


def test_twins_give_cells_and_none_called(tmp_path: Path) -> None:
    record = _record(tmp_path, AA, SPEC.with_(configs=TWINS))
    assert (record.called, record.cells, record.no_verdict_cells) == (0, 3 * 3, 0)
    few = _record(tmp_path, AA, SPEC.with_(configs=TWINS, repetitions=3), index=2)
    assert (few.called, few.cells, few.no_verdict_cells) == (0, 9, 9)


def test_a_slower_stack_is_counted_as_called_slower(tmp_path: Path) -> None:
    spec = SPEC.with_(configs=(UVICORN, SYNC), plan={"reference": UVICORN.name})
    record = _record(tmp_path, STACKS, spec)
    assert record.slower is True and record.called == 3 and record.cells == 3
    swapped = _record(tmp_path, STACKS, spec.with_(plan={"reference": SYNC.name}), index=2)
    assert swapped.slower is True  # as the reference, it is slower when the other arm is called faster
    few = _record(tmp_path, STACKS, spec.with_(repetitions=3), index=3)
    assert few.slower is None  # below 5 pairs there is no verdict to count


def test_the_costlier_model_is_counted_with_its_measured_cost(tmp_path: Path) -> None:
    record = _record(tmp_path, MODELS, SPEC.with_(configs=(UVICORN,), models=(BASE, COSTLY)))
    assert record.slower is True
    assert record.cost_ratio == pytest.approx((0.087 + 0.02 + 0.30) / (0.05 + 0.02 + 0.30), rel=0.01)
    assert record.log_sd is not None


def test_the_summary_prints_counts_with_intervals(tmp_path: Path) -> None:
    records = [
        trials.RunRecord("aa", 1, "ok", 1.0, called=1, cells=18, no_verdict_cells=6),
        trials.RunRecord("aa", 2, "ok", 1.0, called=0, cells=18),
        trials.RunRecord("aa", 3, "timeout", 1.0),
        trials.RunRecord("stacks", 1, "ok", 1.0, slower=True, log_sd=0.2),
        trials.RunRecord("stacks", 2, "ok", 1.0, slower=False, log_sd=0.3),
        trials.RunRecord("stacks", 3, "ok", 1.0, slower=None),
    ]
    aa = trials.summarise(AA, records)
    assert aa[0].endswith("(aa-twins.toml, 3 runs, 2 with a bundle): twin metric cells (with a verdict) called "
                          f"faster or slower: {trials.Proportion(1, 30)}")  # fmt: skip
    assert "cells without a verdict (fewer than 5 pairs): 6" in aa[1]
    assert aa[1].startswith(f"  runs with any such call: {trials.Proportion(1, 2)}")
    stacks = trials.summarise(STACKS, records)
    assert f"flask-gunicorn-sync called slower in throughput in {trials.Proportion(1, 2)} runs" in stacks[0]
    assert "runs without a throughput verdict: 1" in stacks[1] and "log throughput ratio: 0.250" in stacks[1]


def test_the_example_plans_are_valid_and_hold_what_the_trials_count_on() -> None:
    twins = load_plan(AA.plan)
    assert len(twins.configs) >= 4 and len({config.launch for config in twins.configs}) == 1
    stacks = load_plan(STACKS.plan)
    assert stacks.reference == "fastapi-uvicorn" and STACKS.slower_arm in {config.name for config in stacks.configs}
    models = load_plan(MODELS.plan)
    assert len(models.configs) == 1 and MODELS.slower_arm in {model.name for model in models.models}
    specs = {model.name: model.spec for model in models.models}
    assert specs == {"base": "synthetic:cpu_us=1000", "costly": "synthetic:cpu_us=1160"}


def test_overrides_replace_top_level_knobs_only(tmp_path: Path) -> None:
    derived = trials.with_overrides(STACKS.plan, ["repetitions=5", "duration_s=0.5"], tmp_path)
    plan = load_plan(derived)
    assert (plan.repetitions, plan.duration_s, plan.reference) == (5, 0.5, "fastapi-uvicorn")
    assert trials.with_overrides(STACKS.plan, [], tmp_path) == STACKS.plan
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        trials.with_overrides(STACKS.plan, ["repetitions"], tmp_path)
    with pytest.raises(SystemExit, match="not valid TOML"):
        trials.with_overrides(STACKS.plan, ["repetitions=five"], tmp_path)


FAKE_BENCH = textwrap.dedent(
    """
    import subprocess, sys, time
    out = sys.argv[sys.argv.index("--out") + 1]
    # A "server" in a session of its own, as the harness starts them, and a parent that ignores Ctrl-C.
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    open(out + "/server.pid", "w").write(str(server.pid))
    import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_run_past_its_deadline_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    script = tmp_path / "fake_bench.py"
    script.write_text(FAKE_BENCH)
    out = tmp_path / "out"
    command = [sys.executable, str(script)]
    started = psutil.Process().children(recursive=True)
    status, bundle = trials.run_plan(command, STACKS.plan, out, tmp_path / "log", timeout_s=5.0, grace_s=0.5)
    assert (status, bundle) == ("timeout", None)
    pid_file = out / "server.pid"  # absent only if the machine was too busy to start the fake server in time
    if pid_file.exists():
        server = int(pid_file.read_text())
        assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE
    assert psutil.Process().children(recursive=True) == started


def test_a_finished_run_hands_back_its_bundle(tmp_path: Path) -> None:
    canned = build_bundle(tmp_path / "canned", SPEC.with_(configs=(UVICORN, SYNC)))
    script = tmp_path / "copy_bench.py"
    script.write_text(
        "import shutil, sys\n"
        f"shutil.copytree({str(canned)!r}, sys.argv[sys.argv.index('--out') + 1] + '/20260101T000000Z')\n"
    )
    out = tmp_path / "out"
    status, bundle = trials.run_plan([sys.executable, str(script)], STACKS.plan, out, tmp_path / "log",
                                     timeout_s=120.0, grace_s=1.0)  # fmt: skip
    assert status == "ok" and bundle == out / "20260101T000000Z"
    failing = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=False).returncode
    status, _ = trials.run_plan([sys.executable, "-c", "raise SystemExit(3)"], STACKS.plan, tmp_path / "o2",
                                tmp_path / "log", timeout_s=120.0, grace_s=1.0)  # fmt: skip
    assert failing == 3 and status == "failed (exit 3)"


def test_ctrl_c_stops_the_run_before_the_interrupt_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_bench.py"
    script.write_text(FAKE_BENCH)
    real_wait = subprocess.Popen.wait
    deadline_s = 111.0

    def interrupted_wait(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        if timeout == deadline_s:  # the wait for the run itself, as Ctrl-C would interrupt it
            raise KeyboardInterrupt
        return real_wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted_wait)
    started = psutil.Process().children(recursive=True)
    with pytest.raises(KeyboardInterrupt):
        trials.run_plan([sys.executable, str(script)], STACKS.plan, tmp_path / "out", tmp_path / "log",
                        timeout_s=deadline_s, grace_s=0.5)  # fmt: skip
    assert psutil.Process().children(recursive=True) == started
