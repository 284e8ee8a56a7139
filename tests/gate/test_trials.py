"""The trial script's counting, on canned A/B bundles: verdicts per kind, rates, Clopper-Pearson intervals."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from scripts.ci_gate_trials import (
    STOP,
    Trial,
    TrialTimeout,
    bench_lock,
    clopper_pearson,
    head_cpu_us,
    judge_trial,
    parse_args,
    report_lines,
    request_cpu_us,
    schedule,
    summarise,
    time_limit,
)
from servingbench.gate import EXIT_NO_VERDICT, EXIT_PASS, EXIT_REGRESSION
from servingbench.reports.bundle import load_bundle

from .canned import Shape, ab_bundle


def test_trials_on_canned_bundles_count_false_alarms_and_detections(tmp_path: Path) -> None:
    trials = []
    for index in range(4):
        bundle = ab_bundle(tmp_path / f"aa{index}", Shape(seed=index))
        trials.append(judge_trial(bundle, 0.0, index, 300, 1.0))
    for index in range(3):
        bundle = ab_bundle(tmp_path / f"ab{index}", Shape(seed=10 + index, head_factor=1.3))
        trials.append(judge_trial(bundle, 0.3, index, 495, 1.0))
    short = ab_bundle(tmp_path / "short", Shape(repetitions=3, head_factor=1.3))
    trials.append(judge_trial(short, 0.3, 9, 495, 1.0))
    trials.append(judge_trial(tmp_path / "missing", 0.3, 10, 495, 1.0))
    assert [trial.exit_code for trial in trials[:4]] == [EXIT_PASS] * 4
    assert [trial.exit_code for trial in trials[4:7]] == [EXIT_REGRESSION] * 3
    assert trials[7].exit_code == trials[8].exit_code == EXIT_NO_VERDICT
    aa, effect = summarise(trials)
    assert (aa.kind, aa.failed, aa.total, aa.no_verdict) == ("A/A", 0, 4, 0)
    assert (effect.kind, effect.failed, effect.total, effect.no_verdict) == ("+30%", 3, 5, 2)
    assert effect.measured_cost_change == pytest.approx(0.3, abs=0.03)
    assert (aa.low, aa.high) == pytest.approx(clopper_pearson(0, 4))
    lines = report_lines([aa, effect])
    assert lines[0].startswith("  A/A: false alarms 0/4 = 0%") and "detected 3/5 = 60%" in lines[1]


def test_clopper_pearson_is_the_exact_interval() -> None:
    low, high = clopper_pearson(0, 20)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))
    low, high = clopper_pearson(9, 10)
    assert low == pytest.approx(scipy_stats.beta.ppf(0.025, 9, 2)) and high == pytest.approx(0.975 ** (1 / 10))
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_the_head_spin_grows_the_whole_request_by_the_effect(tmp_path: Path) -> None:
    bundle = load_bundle(ab_bundle(tmp_path / "aa", Shape(drift_sd=0.0, noise_sd=0.0, cost_us=650.0)))
    request = request_cpu_us(bundle)
    assert request == pytest.approx(650.0)
    assert head_cpu_us(300, request, 0.15) == 398  # 300 + 0.15 x 650
    assert head_cpu_us(300, request, 0.30) == 495


def test_the_schedule_starts_with_an_aa_trial_and_interleaves_every_kind() -> None:
    order = schedule(20, 10, (0.05, 0.1, 0.15, 0.3), seed=1)
    assert order[0] == 0.0
    assert order.count(0.0) == 20 and all(order.count(effect) == 10 for effect in (0.05, 0.1, 0.15, 0.3))
    first_round = order[:6]
    assert sorted(first_round) == [0.0, 0.0, 0.05, 0.1, 0.15, 0.3]


def test_arguments_are_bounded() -> None:
    args = parse_args(["--aa", "2", "--per-effect", "1", "--effects", "0.3", "--repetitions", "5"])
    assert args.trial_timeout > 0 and args.max_minutes > 0 and args.repetitions == 5
    with pytest.raises(SystemExit):
        parse_args(["--aa", "0"])


def test_a_trial_record_names_its_kind() -> None:
    assert Trial(0.0, 1, 300, EXIT_PASS, "", None, 1.0).kind == "A/A"
    assert Trial(0.15, 1, 398, EXIT_PASS, "", None, 1.0).kind == "+15%"


def test_a_trial_past_its_time_limit_is_stopped_and_the_alarm_given_back() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(TrialTimeout), time_limit(0.05):
        time.sleep(30)
    assert signal.getsignal(signal.SIGALRM) == before


def test_once_stopped_the_time_limit_raises_keyboard_interrupt() -> None:
    STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt), time_limit(0.05):
            time.sleep(30)
    finally:
        STOP.clear()


def test_the_benchmark_lock_says_who_it_waits_for(tmp_path: Path) -> None:
    lock = tmp_path / "bench.lock"
    said: list[str] = []
    got = threading.Event()

    def wait_for_it() -> None:
        with bench_lock(lock, said.append):
            got.set()

    with bench_lock(lock, said.append):
        assert said == []  # free: taken without a word
        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        assert said and "another benchmark holds it" in said[0]
        assert not got.is_set()
    waiter.join(timeout=10)
    assert got.is_set()  # it got the lock once this one let go


# --- the committed-baseline mode's trial script -------------------------------------------------------------------


def test_baseline_trials_judge_each_trial_s_runs_by_their_mean(tmp_path: Path) -> None:
    from scripts.baseline_trials import judge_runs, parse_args, request_cost_us
    from servingbench.gate import measure_noise

    from .canned import calibration_bundles, single_bundle

    quiet = Shape(drift_sd=0.02, noise_sd=0.01, probe=True)
    speeds = (1.0, 1.1, 0.95, 1.05, 0.9, 1.02)
    calibration = calibration_bundles(tmp_path / "cal", quiet, (1.0, 1.01, 0.99, 1.0, 1.005, 0.995), speeds)
    noise = measure_noise([load_bundle(path) for path in calibration])
    assert request_cost_us(noise) == pytest.approx(650.0, rel=0.05)

    def runs(name: str, factor: float) -> list[Path]:
        return [single_bundle(tmp_path / f"{name}{i}", quiet.with_(head_factor=factor, seed=40 + i)) for i in range(3)]

    same = judge_runs(noise, runs("same", 1.0), 0.0, 1, 300, 1.0)
    costly = judge_runs(noise, runs("costly", 1.15), 0.15, 2, 398, 1.0)
    assert same.exit_code == EXIT_PASS and same.kind == "A/A"
    assert costly.exit_code == EXIT_REGRESSION and costly.measured_cost_change == pytest.approx(0.15, abs=0.03)
    rates = summarise([same, costly])
    assert [(rate.kind, rate.failed, rate.total) for rate in rates] == [("A/A", 0, 1), ("+15%", 1, 1)]
    assert judge_runs(noise, [tmp_path / "missing"], 0.0, 3, 300, 1.0).exit_code == EXIT_NO_VERDICT
    assert parse_args([]).runs == 10 and parse_args([]).effects == [0.15]
    for bad in (["--calibration-runs", "4"], ["--runs", "0"], ["--effects", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
