"""The committed-baseline check: on the baseline's machine only, against the A/A prediction interval."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from servingbench.gate import EXIT_NO_VERDICT, EXIT_PASS, EXIT_REGRESSION, NoiseModel, judge_baseline, measure_noise
from servingbench.gate.baseline import DRIFT_THRESHOLD
from servingbench.gate.figures import FigureKey
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


# --- the machine-speed probe --------------------------------------------------------------------------------------

PROBED = QUIET.with_(probe=True, speed_slope=0.5)
CALIBRATION_SPEEDS = (1.0, 1.1, 0.95, 1.2, 1.05, 0.9, 1.15)  # the machine's speed in seven A/A runs
SEVEN_RUNS = (1.0, 1.01, 0.99, 1.005, 0.995, 1.0, 1.0)


def _probed_noise(tmp_path: Path, shape: Shape = PROBED) -> NoiseModel:
    paths = calibration_bundles(tmp_path / "cal", shape, SEVEN_RUNS, CALIBRATION_SPEEDS)
    return measure_noise([load_bundle(path) for path in paths])


def _runs_at(tmp_path: Path, name: str, shape: Shape, count: int = 5) -> list[Bundle]:
    return [
        load_bundle(single_bundle(tmp_path / f"{name}{index}", shape.with_(run_factor=spread, seed=70 + index)))
        for index, spread in enumerate(SPREAD[:count])
    ]


def test_a_slower_phase_of_the_machine_is_judged_at_its_speed_not_as_a_regression(tmp_path: Path) -> None:
    """The calibration saw the machine at speeds 0.9 to 1.2; a check made while it runs 18 % slow is judged against
    what unchanged code gives at that speed (the figure's regression on the probe), so it passes, while a change
    of the code at that same speed still fails."""
    noise = _probed_noise(tmp_path)
    entry = noise.entries[("fastapi-uvicorn", FigureKey("model", "single-c8", "cpu_us_per_request"))]
    fit = entry.speed_fit
    assert fit is not None and fit.slope == pytest.approx(0.5, abs=0.1) and fit.explained > 0.8
    slow = judge_baseline(noise, _runs_at(tmp_path, "slow", PROBED.with_(machine_speed=1.18)))
    assert slow.exit_code == EXIT_PASS, slow.reason
    assert any("speed probe ran" in note and "slower" in note for note in slow.notes)
    cpu = next(row for row in slow.rows if row.key.metric == "cpu_us_per_request")
    assert cpu.threshold_source == "default" and abs(cpu.cost_change or 1.0) < 0.03
    costlier = judge_baseline(noise, _runs_at(tmp_path, "costly", PROBED.with_(machine_speed=1.18, head_factor=1.15)))
    assert costlier.exit_code == EXIT_REGRESSION
    row = next(row for row in costlier.rows if row.key.metric == "cpu_us_per_request")
    assert row.verdict == "regression" and row.cost_change == pytest.approx(0.15, abs=0.03)


def test_without_the_probe_the_machine_s_speed_swings_widen_the_interval(tmp_path: Path) -> None:
    """The same calibration and check with no probe in the bundles: the calibration's speed swings are noise to the
    plain interval, which comes out several times wider than the speed fit's; the fit is what lets a 10-15 %
    change show on a machine whose speed moves by 20 %."""
    plain_noise = measure_noise(
        [load_bundle(path) for path in calibration_bundles(tmp_path / "plain", QUIET, SEVEN_RUNS, CALIBRATION_SPEEDS)]
    )
    assert all(entry.speed_fit is None for entry in plain_noise.entries.values())
    plain = judge_baseline(plain_noise, _runs_at(tmp_path, "plain", QUIET.with_(machine_speed=1.05)))
    fitted = judge_baseline(_probed_noise(tmp_path), _runs_at(tmp_path, "probed", PROBED.with_(machine_speed=1.05)))
    assert not any("speed probe ran" in note for note in plain.notes)
    for metric in ("cpu_us_per_request", "rps"):
        wide = next(row for row in plain.rows if row.key.metric == metric)
        narrow = next(row for row in fitted.rows if row.key.metric == metric)
        assert wide.high is not None and narrow.high is not None and wide.high > 3 * narrow.high


def test_a_speed_far_outside_the_calibration_s_is_no_verdict(tmp_path: Path) -> None:
    noise = _probed_noise(tmp_path)
    for speed, word in ((2.0, "slower"), (0.5, "faster")):  # calibrated 0.9 to 1.2: more than its width past it
        result = judge_baseline(noise, _runs_at(tmp_path, f"far{speed}", PROBED.with_(machine_speed=speed)))
        assert result.exit_code == EXIT_NO_VERDICT and not result.rows
        assert (
            f"% {word} than any calibration run, too far to extrapolate" in result.reason
            and "make baseline" in result.reason
        )


def test_runs_without_a_probe_are_judged_against_the_plain_interval_with_a_note(tmp_path: Path) -> None:
    noise = _probed_noise(tmp_path)
    result = judge_baseline(noise, _runs_at(tmp_path, "old", QUIET))
    assert result.exit_code in (EXIT_PASS, EXIT_REGRESSION)
    assert any("has no machine-speed probe" in note for note in result.notes)
    cpu = next(row for row in result.rows if row.key.metric == "cpu_us_per_request")
    assert cpu.threshold_source == "drift floor" or cpu.threshold > DRIFT_THRESHOLD


def test_a_baseline_made_with_an_older_probe_is_judged_against_the_plain_interval_with_a_note(tmp_path: Path) -> None:
    noise = replace(
        _probed_noise(tmp_path),
        stale_probe="before/after the load, 20,000 iterations",
        entries={item: replace(entry, speeds=()) for item, entry in _probed_noise(tmp_path).entries.items()},
    )
    result = judge_baseline(noise, _runs_at(tmp_path, "new", PROBED))
    assert result.exit_code in (EXIT_PASS, EXIT_REGRESSION)
    assert any("older kind (before/after the load" in note and "re-make the baseline" in note for note in result.notes)
    assert not any("speed probe ran" in note for note in result.notes)
    cpu = next(row for row in result.rows if row.key.metric == "cpu_us_per_request")
    assert cpu.threshold_source == "drift floor" or cpu.threshold > DRIFT_THRESHOLD
