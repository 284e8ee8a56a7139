"""The committed-baseline check: on the baseline's machine only, against the A/A prediction interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from servingbench.gate import EXIT_NO_VERDICT, EXIT_PASS, EXIT_REGRESSION, NoiseModel, judge_baseline, measure_noise
from servingbench.gate.baseline import DRIFT_THRESHOLD
from servingbench.reports.bundle import Bundle, load_bundle

from .canned import OTHER_MACHINE, Shape, calibration_bundles, single_bundle

QUIET = Shape(drift_sd=0.02, noise_sd=0.01)


@pytest.fixture
def noise(tmp_path: Path) -> NoiseModel:
    return measure_noise([load_bundle(path) for path in calibration_bundles(tmp_path / "cal", QUIET)])


def _current(tmp_path: Path, shape: Shape) -> Path:
    return single_bundle(tmp_path / "current", shape.with_(seed=7))


def test_unchanged_code_on_the_same_machine_passes(tmp_path: Path, noise: NoiseModel) -> None:
    result = judge_baseline(noise, load_bundle(_current(tmp_path, QUIET)))
    assert result.exit_code == EXIT_PASS
    assert {row.verdict for row in result.rows} == {"within noise"}
    assert all(row.n == 5 for row in result.rows)


def test_thirty_percent_more_cost_fails(tmp_path: Path, noise: NoiseModel) -> None:
    result = judge_baseline(noise, load_bundle(_current(tmp_path, QUIET.with_(head_factor=1.3))))
    assert result.exit_code == EXIT_REGRESSION
    row = next(row for row in result.rows if row.key.metric == "cpu_us_per_request")
    assert row.verdict == "regression" and row.cost_change == pytest.approx(0.3, abs=0.03)
    assert row.high is not None and row.cost_log is not None and row.cost_log > row.high


def test_another_machine_is_no_verdict_never_pass_or_fail(tmp_path: Path, noise: NoiseModel) -> None:
    for factor in (1.0, 2.0):
        current = _current(tmp_path, QUIET.with_(machine_id=OTHER_MACHINE, head_factor=factor))
        result = judge_baseline(noise, load_bundle(current))
        assert result.exit_code == EXIT_NO_VERDICT and not result.rows
        assert "this run is on fedcba9876543210" in result.reason and "make bench-ci" in result.reason


def test_a_machine_without_identity_is_no_verdict(tmp_path: Path, noise: NoiseModel) -> None:
    result = judge_baseline(noise, load_bundle(_current(tmp_path, QUIET.with_(machine_id=None))))
    assert result.exit_code == EXIT_NO_VERDICT and "no stable identity" in result.reason


def test_another_plan_or_too_few_repetitions_is_no_verdict(tmp_path: Path, noise: NoiseModel) -> None:
    longer = judge_baseline(noise, load_bundle(_current(tmp_path, QUIET.with_(repetitions=30))))
    assert longer.exit_code == EXIT_NO_VERDICT and "knobs.repetitions: 20 vs 30" in longer.reason
    broken = QUIET.with_(invalid=frozenset(("fastapi-uvicorn", rep) for rep in range(17)))
    short = judge_baseline(noise, load_bundle(single_bundle(tmp_path / "short", broken)))
    assert short.exit_code == EXIT_NO_VERDICT and "has 3 valid repetitions (need 5)" in short.reason
    assert "17 of 20 runs invalid" in short.reason


def test_a_dependency_bump_is_judged_and_listed(tmp_path: Path, noise: NoiseModel) -> None:
    bumped = QUIET.with_(packages=(("fastapi", "0.116.0"),))
    result = judge_baseline(noise, load_bundle(_current(tmp_path, bumped)))
    assert result.exit_code == EXIT_PASS
    assert any("fastapi 0.115.0 -> 0.116.0" in note for note in result.notes)


NOISY_RUNS = (1.0, 1.05, 0.95, 1.03, 0.97)  # about 4 % run-to-run: a noisy VM
SPREAD = (1.02, 0.98, 1.0, 1.01, 0.99)  # five new runs of one version


def test_the_mean_of_several_runs_sees_what_one_run_cannot(tmp_path: Path) -> None:
    noise = measure_noise([load_bundle(path) for path in calibration_bundles(tmp_path / "cal", QUIET, NOISY_RUNS)])

    def runs(name: str, factor: float, count: int) -> list[Bundle]:
        shapes = [QUIET.with_(run_factor=factor * spread, seed=50 + index) for index, spread in enumerate(SPREAD)]
        return [load_bundle(single_bundle(tmp_path / f"{name}{index}", shapes[index])) for index in range(count)]

    # A request 15 % costlier: one run's interval (t(4) at the family level * sd * sqrt(1 + 1/5), about +/-20 %)
    # holds it; the mean of five runs has an interval sqrt(5/2) times narrower and shows it.
    one = judge_baseline(noise, runs("one", 1.15, 1))
    assert one.exit_code == EXIT_PASS
    five = judge_baseline(noise, runs("five", 1.15, 5))
    assert five.exit_code == EXIT_REGRESSION
    row = next(row for row in five.rows if row.key.metric == "cpu_us_per_request")
    assert row.cost_change == pytest.approx(0.15, abs=0.02)
    one_row = next(row for row in one.rows if row.key.metric == "cpu_us_per_request")
    assert row.high == pytest.approx(one_row.high * (2 / 6) ** 0.5)  # sqrt(1/5 + 1/5) / sqrt(1 + 1/5)
    assert any("the mean of 5 new runs" in note for note in five.notes)
    # Five runs of unchanged code pass; one of them from another machine makes it no verdict.
    assert judge_baseline(noise, runs("same", 1.0, 5)).exit_code == EXIT_PASS
    mixed = [*runs("mixed", 1.0, 4), load_bundle(_current(tmp_path, QUIET.with_(machine_id=OTHER_MACHINE)))]
    assert judge_baseline(noise, mixed).exit_code == EXIT_NO_VERDICT


STEADY_RUNS = (1.0, 1.004, 0.996, 1.002, 0.998)  # a very steady machine: an interval of about +/-1 %


def test_a_significant_change_below_the_drift_floor_passes(tmp_path: Path) -> None:
    """A baseline check's material threshold is at least DRIFT_THRESHOLD: unchanged code drifted by up to 9 % between
    a calibration and a later check on this VM, however narrow the calibration's interval."""
    noise = measure_noise([load_bundle(path) for path in calibration_bundles(tmp_path / "cal", QUIET, STEADY_RUNS)])

    def runs(name: str, factor: float) -> list[Bundle]:
        shapes = [QUIET.with_(run_factor=factor * spread, seed=60 + index) for index, spread in enumerate(SPREAD)]
        return [load_bundle(single_bundle(tmp_path / f"{name}{index}", shape)) for index, shape in enumerate(shapes)]

    drifted = judge_baseline(noise, runs("drift", 1.07))
    assert drifted.exit_code == EXIT_PASS
    row = next(row for row in drifted.rows if row.key.metric == "cpu_us_per_request")
    assert row.cost_log is not None and row.high is not None and row.cost_log > row.high  # significant...
    assert row.verdict == "below threshold" and row.threshold == DRIFT_THRESHOLD  # ...but within the drift
    assert row.threshold_source == "drift floor"
    assert judge_baseline(noise, runs("costlier", 1.15)).exit_code == EXIT_REGRESSION
