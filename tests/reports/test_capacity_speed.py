"""Capacity at the reference machine speed: the exponent fitted on a run's own curves, clipped, refused where the data
cannot carry it, applied to values and censoring bounds alike; two runs of one server in two machine phases agree at
the reference speed while their as-measured figures do not; the report, console and aggregates show both."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as scipy_stats

from servingbench.harness.speed import SPEED_PROBE
from servingbench.reports import load_bundle, render_report
from servingbench.reports.aggregates import CAPACITY_METRIC, REFERENCE_CAPACITY_METRIC, aggregate_rows
from servingbench.reports.bundle import CapacityResult, CapacityStep, Run
from servingbench.reports.capacity import capacity_views
from servingbench.reports.console import capacity_table
from servingbench.reports.speed import (
    MAX_EXPONENT,
    MIN_CURVES,
    MIN_RELIABILITY,
    REFERENCE_QUANTILE,
    SpeedAdjustment,
    SpeedRule,
    adjusted,
    curve_probe,
    exponent_log_se,
    reference_probe,
    speed_adjustment,
)
from servingbench.reports.stats import GEOMETRIC_MEAN, MEDIAN

from .builders import SLOW_C

REFERENCE = 500.0
FIXED = SpeedRule(reference_us=REFERENCE)
"""A fixed reference: the laws below are built at it."""
CORRECTED = SpeedRule(reference_us=REFERENCE, noise_correction=True)
"""A fixed reference and the correction for the probe's noise (off in the report's rule)."""


def _curve(
    config: str, rep: int, capacity: float | None, probes: list[float | None], *, censored: str | None = None
) -> tuple[CapacityResult, list[Run]]:
    """One curve whose steps' runs read ``probes``."""
    runs = [
        Run(f"{config}-{rep}-{index}", config, "m", "capacity-r1", rep, True, kind="open", speed_probe_us=probe)
        for index, probe in enumerate(probes)
    ]
    steps = tuple(CapacityStep(100.0 * (index + 1), 10.0, 0.0, True, run.id) for index, run in enumerate(runs))
    result = CapacityResult(
        config, "m", rep, 50.0, capacity, steps, method="curve", grid=(100.0, 200.0), censored=censored,
        bound_rps=100.0 if censored else None,
    )  # fmt: skip
    return result, runs


def _curves(
    law: dict[str, float], probes: list[float], exponent: float, *, noise: float = 0.0, seed: int = 3
) -> tuple[dict[str, list[CapacityResult]], dict[str, Run]]:
    """Per config of ``law`` (capacity at the reference speed), one curve per probe reading, its capacity
    ``law * (probe / reference) ** -exponent`` times lognormal noise."""
    rng = np.random.default_rng(seed)
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    for config, at_reference in law.items():
        for rep, probe in enumerate(rng.permutation(probes)):
            value = at_reference * (probe / REFERENCE) ** -exponent * math.exp(noise * rng.standard_normal())
            result, mine = _curve(config, rep, value, [probe * 0.98, probe, probe * 1.02])
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
    return by_config, runs


PROBES = [360.0, 380.0, 420.0, 480.0, 520.0, 560.0, 600.0, 640.0, 650.0]
LAW = {"fast": 1000.0, "slow": 600.0}


def test_curve_probe_is_the_median_of_its_steps_with_a_probe() -> None:
    result, runs = _curve("a", 0, 500.0, [400.0, None, 600.0, 800.0])
    assert curve_probe(result, {run.id: run for run in runs}) == 600.0
    bare, bare_runs = _curve("a", 0, 500.0, [None, None])
    assert curve_probe(bare, {run.id: run for run in bare_runs}) is None
    assert curve_probe(result, {}) is None  # steps whose runs are not in the bundle say nothing


def test_curve_probe_counts_only_the_servers_own_steps() -> None:
    result, runs = _curve("a", 0, 500.0, [400.0, 410.0, 900.0, 950.0])
    by_id = {run.id: run for run in runs}
    by_id[runs[2].id] = replace(runs[2], valid=False)  # an invalid run says nothing of the server's speed
    steps = list(result.steps)
    steps[3] = replace(steps[3], generator_limited=True)  # nor a step the load generator could not keep
    assert curve_probe(replace(result, steps=tuple(steps)), by_id) == pytest.approx(405.0)


def test_the_slopes_error_treats_a_repetition_as_one_cluster() -> None:
    """Curves of one repetition that share the machine's phase share its shock: the clustered error is larger than
    one that takes every curve as independent, and the slope itself is the least-squares one."""
    rng = np.random.default_rng(5)
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    for rep in range(12):
        phase = 0.2 * rng.standard_normal()  # the repetition's phase: every config's probe reads it
        shock = 0.15 * rng.standard_normal()  # and something of it the probe does not see, felt by every config
        for config, base in (("a", 900.0), ("b", 600.0), ("c", 500.0)):
            probe = 500.0 * math.exp(phase + 0.03 * rng.standard_normal())
            value = base * (probe / REFERENCE) ** -1.0 * math.exp(shock + 0.01 * rng.standard_normal())
            result, mine = _curve(config, rep, value, [probe])
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
    speed = speed_adjustment(by_config, runs, SPEED_PROBE)
    assert speed is not None and speed.slope is not None and speed.slope_se is not None
    xs: list[float] = []
    ys: list[float] = []
    for results in by_config.values():
        logs = [(math.log(curve_probe(r, runs) or 1.0), math.log(r.capacity_rps or 1.0)) for r in results]
        mx, my = float(np.mean([x for x, _ in logs])), float(np.mean([y for _, y in logs]))
        xs += [x - mx for x, _ in logs]
        ys += [y - my for _, y in logs]
    x, y = np.array(xs), np.array(ys)
    slope = float(x @ y / (x @ x))
    naive = math.sqrt(float(((y - slope * x) ** 2).sum()) / (len(x) - 4) / float(x @ x))
    assert speed.slope == pytest.approx(slope)
    assert speed.slope_se > 1.3 * naive


def test_a_cpu_bound_law_is_recovered_and_removed() -> None:
    by_config, runs = _curves(LAW, PROBES, 1.0, noise=0.03)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, FIXED)
    assert speed is not None and speed.applied
    assert speed.slope is not None and speed.slope_se is not None
    assert abs(speed.slope + 1.0) < 3 * speed.slope_se + 0.05
    assert speed.curves == len(PROBES) * len(LAW)
    assert speed.probe_low == pytest.approx(min(PROBES)) and speed.probe_high == pytest.approx(max(PROBES))
    for config, results in adjusted(by_config, runs, speed).items():
        assert results is not None
        values = [result.capacity_rps for result in results]
        raw = [result.capacity_rps for result in by_config[config]]
        assert all(value is not None for value in values)
        # Brought to the reference speed, each config's curves agree to their noise; as measured they span the
        # machine's speed range (1.8x).
        assert max(values) / min(values) < 1.25  # type: ignore[type-var, operator]
        assert max(raw) / min(raw) > 1.5  # type: ignore[type-var, operator]
        assert float(np.median([value for value in values if value is not None])) == pytest.approx(
            LAW[config], rel=0.05
        )


def test_the_exponents_error_weighs_by_how_far_from_the_reference_a_config_ran() -> None:
    """An error in the exponent moves every repetition of a config alike, by its log(probe / reference): a config
    whose curves ran near the reference carries almost none of it, one that ran far (the machine's fast phase)
    carries it in full, and its interval widens by it; without an applied fit nothing is added."""
    near = [470.0, 490.0, 500.0, 510.0, 530.0]
    far = [330.0, 350.0, 360.0, 370.0, 390.0]
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    rng = np.random.default_rng(11)
    for config, probes in (("near", near), ("far", far), ("mixed", near + far)):
        for rep, probe in enumerate(probes):
            value = 800.0 * (probe / REFERENCE) ** -1.0 * math.exp(0.05 * rng.standard_normal())
            result, mine = _curve(config, rep, value, [probe])
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, FIXED)
    assert speed is not None and speed.applied and speed.slope_se is not None and speed.slope_se > 0.0
    for config, probes in (("near", near), ("far", far)):
        offset = float(np.mean([math.log(probe / REFERENCE) for probe in probes]))
        assert speed.exponent_se is not None
        assert exponent_log_se(by_config[config], runs, speed) == pytest.approx(abs(offset) * speed.exponent_se)
    assert exponent_log_se(by_config["far"], runs, speed) > 10 * exponent_log_se(by_config["near"], runs, speed)
    # A censored curve (no capacity) is not among the values the mean is over, so not in its offset either.
    censored, mine = _curve("far", 99, None, [200.0], censored="below")
    runs.update({run.id: run for run in mine})
    with_censored = [*by_config["far"], censored]
    assert exponent_log_se(with_censored, runs, speed) == exponent_log_se(by_config["far"], runs, speed)
    unapplied = replace(speed, exponent=0.0, reason="too few curves")
    assert exponent_log_se(by_config["far"], runs, unapplied) == 0.0
    assert exponent_log_se(by_config["far"], runs, replace(speed, slope_se=None)) == 0.0


def test_a_server_that_waits_is_left_almost_as_measured() -> None:
    by_config, runs = _curves(LAW, PROBES, 0.0, noise=0.03)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, FIXED)
    assert speed is not None and speed.applied
    assert speed.exponent < 0.2
    for config, results in adjusted(by_config, runs, speed).items():
        assert results is not None
        for mine, theirs in zip(results, by_config[config], strict=True):
            probe = curve_probe(theirs, runs)
            assert probe is not None and theirs.capacity_rps is not None
            assert mine.capacity_rps == pytest.approx(theirs.capacity_rps * (probe / REFERENCE) ** speed.exponent)


@pytest.mark.parametrize(("law", "expected"), [(2.0, MAX_EXPONENT), (1.25, 1.25), (-0.8, 0.0)])
def test_the_exponent_is_clipped_to_what_a_core_speed_can_mean(law: float, expected: float) -> None:
    by_config, runs = _curves(LAW, PROBES, law)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, CORRECTED)
    assert speed is not None and speed.applied
    assert speed.slope == pytest.approx(-law, abs=1e-9)
    # Each curve's three steps read its probe within 2 %: almost no noise to correct for.
    assert 0.99 < speed.reliability < 1.0
    assert speed.exponent == pytest.approx(min(max(law / speed.reliability, 0.0), MAX_EXPONENT), abs=1e-12)
    assert speed.exponent == pytest.approx(expected, rel=0.01)
    assert f"{speed.slope:.2f}" in speed.text and f"divided by {speed.reliability:.2f}" in speed.text


def _noisy_curves(
    law: float, step_noise: float, *, reps: int = 40, steps: int = 9, seed: int = 7
) -> tuple[dict[str, list[CapacityResult]], dict[str, Run], list[float]]:
    """Three configs whose capacities follow ``law`` exactly on each curve's true speed; each of a curve's
    ``steps`` reads that speed times lognormal noise (sd ``step_noise`` of log). Returns the true log speeds too."""
    rng = np.random.default_rng(seed)
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    truths: list[float] = []
    for rep in range(reps):
        for config, base in (("a", 900.0), ("b", 600.0), ("c", 450.0)):
            true = REFERENCE * math.exp(0.15 * rng.standard_normal())
            truths.append(math.log(true))
            readings = [true * math.exp(step_noise * rng.standard_normal()) for _ in range(steps)]
            result, mine = _curve(config, rep, base * (true / REFERENCE) ** -law, [*readings])
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
    return by_config, runs, truths


def test_noise_in_the_curves_probes_is_corrected_for() -> None:
    """A curve's probe (the median of its steps' readings) measures its speed with an error, which pulls the fitted
    slope towards 0 by the reliability ratio; the steps' own spread estimates that error, and the exponent applied
    is the slope divided by the estimated reliability: close to the law, where the plain fit is well below it."""
    by_config, runs, truths = _noisy_curves(1.0, 0.25)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, CORRECTED)
    assert speed is not None and speed.applied and speed.slope is not None
    # The truth: a median of 9 readings with sd 0.25 has variance about (pi / 2) 0.25^2 / 9 = 0.011 against the
    # true speeds' 0.15^2 = 0.0225, so the reliability is about 0.0225 / 0.0334 = 0.67.
    noise = math.pi / 2 * 0.25**2 / 9
    true_variance = float(np.var(truths, ddof=1))
    assert speed.reliability == pytest.approx(true_variance / (true_variance + noise), abs=0.1)
    assert -speed.slope < 0.8  # the plain fit, attenuated
    assert abs(speed.exponent - 1.0) < 0.12 and abs(speed.exponent - 1.0) < abs(-speed.slope - 1.0) / 2
    assert speed.exponent_se is not None and speed.slope_se is not None
    assert speed.exponent_se == pytest.approx(speed.slope_se / speed.reliability)
    # The same curves read without noise (every step at the true speed): nothing to correct.
    clean, clean_runs, _ = _noisy_curves(1.0, 0.0)
    exact = speed_adjustment(clean, clean_runs, SPEED_PROBE, CORRECTED)
    assert exact is not None and exact.reliability == 1.0 and exact.exponent == pytest.approx(1.0)


def test_the_noise_is_averaged_over_the_curves_the_fit_used_and_two_readings_are_a_mean() -> None:
    """A config with a single curve adds nothing to the fit, so its noise must not enter the reliability either; a
    curve of two readings has their mean as its median (variance over 2, no pi/2)."""
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    noises: list[float] = []
    logs: dict[str, list[float]] = {}
    rng = np.random.default_rng(3)
    for rep in range(8):
        for config, base in (("a", 900.0), ("b", 600.0)):
            true = REFERENCE * math.exp(0.15 * rng.standard_normal())
            pair = [true * math.exp(0.1 * rng.standard_normal()) for _ in range(2)]
            result, mine = _curve(config, rep, base * (true / REFERENCE) ** -1.0, [*pair])
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
            noises.append(float(np.var(np.log(pair), ddof=1)) / 2)
            logs.setdefault(config, []).append(math.log(float(np.median(pair))))  # the curve's probe
    lone, mine = _curve("lone", 0, 300.0, [200.0, 900.0, 400.0])  # one curve, very noisy steps
    runs.update({run.id: run for run in mine})
    speed = speed_adjustment({**by_config, "lone": [lone]}, runs, SPEED_PROBE, CORRECTED)
    assert speed is not None and speed.applied
    centred = [x - float(np.mean(xs)) for xs in logs.values() for x in xs]
    spread2 = sum(x * x for x in centred) / (len(centred) - len(logs))
    expected = min(max(1.0 - float(np.mean(noises)) / spread2, MIN_RELIABILITY), 1.0)
    assert MIN_RELIABILITY < expected < 0.99
    assert speed.reliability == pytest.approx(expected, rel=1e-9)


def test_a_probe_mostly_noise_is_not_blown_up_past_the_floor() -> None:
    by_config, runs, _ = _noisy_curves(1.0, 0.9)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, CORRECTED)
    assert speed is not None and speed.applied and speed.slope is not None
    assert speed.reliability == MIN_RELIABILITY
    assert speed.exponent == pytest.approx(min(-speed.slope / MIN_RELIABILITY, MAX_EXPONENT))


def test_too_few_curves_or_too_little_spread_leave_the_figures_as_measured() -> None:
    few, few_runs = _curves({"only": 500.0}, PROBES[: MIN_CURVES - 1], 1.0)
    speed = speed_adjustment(few, few_runs, SPEED_PROBE)
    assert speed is not None and not speed.applied and speed.exponent == 0.0
    assert f"fewer than {MIN_CURVES}" in (speed.reason or "")
    assert speed.text.startswith("No capacity at a reference speed")
    flat, flat_runs = _curves(LAW, [500.0, 501.0, 502.0, 503.0, 504.0, 505.0], 1.0)
    speed = speed_adjustment(flat, flat_runs, SPEED_PROBE)
    assert speed is not None and not speed.applied
    assert "moved too little" in (speed.reason or "")
    bare, bare_runs = _curve("a", 0, 500.0, [None])
    speed = speed_adjustment({"a": [bare]}, {run.id: run for run in bare_runs}, SPEED_PROBE)
    assert speed is not None and not speed.applied and "No capacity curve has a speed probe" in speed.text


def test_the_reports_rule_states_a_run_at_its_own_fast_speed_with_the_fit_as_it_is() -> None:
    """The report's rule: the reference is the 10th percentile of every probe reading of the run (a closed-loop run's
    too, not only the curves'), and the exponent is the fitted slope, clipped, with no correction for the probe's
    noise even where the steps' readings are noisy."""
    by_config, runs, _ = _noisy_curves(1.0, 0.25)
    closed = Run("closed-1", "a", "m", "single", 0, True, kind="closed", speed_probe_us=100.0)
    runs = {**runs, closed.id: closed}
    readings = [run.speed_probe_us for run in runs.values() if run.speed_probe_us is not None]
    speed = speed_adjustment(by_config, runs, SPEED_PROBE)
    assert speed is not None and speed.applied and speed.own_reference and speed.slope is not None
    assert speed.reference_us == pytest.approx(float(np.quantile(readings, REFERENCE_QUANTILE)))
    assert speed.readings == len(readings) == 40 * 3 * 9 + 1
    assert speed.reliability == 1.0 and speed.exponent == pytest.approx(min(max(-speed.slope, 0.0), MAX_EXPONENT))
    assert -speed.slope < 0.8  # attenuated by the noise, and left so (CORRECTED would bring it near 1)
    assert f"speed probe {speed.reference_us:.0f} us, the 10% quantile of its {speed.readings} probe" in speed.text
    assert "this run's fast speed" in speed.text and "divided by" not in speed.text
    for config, results in adjusted(by_config, runs, speed).items():
        assert results is not None
        for mine, theirs in zip(results, by_config[config], strict=True):
            probe = curve_probe(theirs, runs)
            assert probe is not None and theirs.capacity_rps is not None
            factor = (probe / speed.reference_us) ** speed.exponent
            assert mine.capacity_rps == pytest.approx(theirs.capacity_rps * factor)
    # A fixed reference is stated as such, and is the one used.
    fixed = speed_adjustment(by_config, runs, SPEED_PROBE, FIXED)
    assert fixed is not None and not fixed.own_reference and fixed.reference_us == REFERENCE and fixed.readings == 0
    assert "reference machine speed (speed probe 500 us" in fixed.text and fixed.exponent == speed.exponent


def test_the_reference_quantile_is_read_over_the_runs_readings() -> None:
    runs = [Run(f"r{index}", "a", "m", "s", 0, True, speed_probe_us=float(index)) for index in range(1, 12)]
    assert reference_probe(runs) == pytest.approx(2.0)  # 1..11: the 10 % quantile is the second
    assert reference_probe(runs, 0.5) == pytest.approx(6.0)
    unread = [Run("x", "a", "m", "s", 0, True), Run("y", "a", "m", "s", 0, True, speed_probe_us=0.0)]
    assert reference_probe(unread) is None
    by_config, curve_runs = _curves(LAW, PROBES, 1.0)
    bare = {key: replace(run, speed_probe_us=None) for key, run in curve_runs.items()}
    speed = speed_adjustment(by_config, bare, SPEED_PROBE)
    assert speed is not None and not speed.applied and "No capacity curve has a speed probe" in speed.text


@pytest.mark.parametrize("reference", [0.0, -5.0, math.nan, math.inf])
def test_a_fixed_reference_must_be_a_speed(reference: float) -> None:
    with pytest.raises(ValueError, match="positive probe reading"):
        SpeedRule(reference_us=reference)


@pytest.mark.parametrize("kind", [None, "idle-20000it", 3])
def test_a_probe_without_a_reference_gives_no_adjustment(kind: object) -> None:
    by_config, runs = _curves(LAW, PROBES, 1.0)
    assert speed_adjustment(by_config, runs, kind) is None


def test_bounds_move_with_values_and_a_config_with_an_unprobed_figure_has_none() -> None:
    speed = SpeedAdjustment(SPEED_PROBE, REFERENCE, 1.0, -1.0, 0.1, 20, 500.0, 400.0, 600.0)
    below, below_runs = _curve("a", 0, None, [600.0], censored="below")
    value, value_runs = _curve("a", 1, 300.0, [400.0])
    empty = CapacityResult("a", "m", 3, 50.0, None, (), method="curve", grid=(100.0,))
    other, other_runs = _curve("b", 1, 300.0, [400.0])
    unprobed, unprobed_runs = _curve("b", 2, 300.0, [None])
    runs = {run.id: run for run in [*below_runs, *value_runs, *other_runs, *unprobed_runs]}
    found = adjusted({"a": [below, value, empty], "b": [other, unprobed]}, runs, speed)
    mine = found["a"]
    assert mine is not None and [result.repetition for result in mine] == [0, 1, 3]
    assert mine[0].censoring == "below" and mine[0].bound == pytest.approx(100.0 * 600 / REFERENCE)
    assert mine[1].measured_rps == pytest.approx(300.0 * 400 / REFERENCE)
    assert mine[2].outcome == "not measured"  # nothing to bring anywhere: kept as it is
    # One of b's figures has no speed: a figure at the reference speed would rest on other repetitions than b's.
    assert found["b"] is None


# --- through a whole bundle -----------------------------------------------------------------------------------


def _phase_bundle(source: Path, target: Path, phase: float, unprobed: str | None = None) -> Path:
    """A copy of the curve bundle as if the machine had run ``phase`` x slower: every step run reads the probe at
    ``phase`` x a per-curve speed, and every capacity (and bound) is divided by that speed. ``unprobed``: a config
    whose runs read no probe (its capacities are scaled all the same)."""
    shutil.copytree(source, target)
    path = target / "results.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    document["environment"]["speed_probe"] = SPEED_PROBE
    runs = {run["id"]: run for run in document["runs"]}
    for entry in document["capacity"]:
        probe = REFERENCE * phase * (1.0 + 0.07 * ((entry["repetition"] * 2 + len(entry["config"])) % 5 - 2))
        factor = REFERENCE / probe
        for key in ("capacity_rps", "bound_rps"):
            if entry.get(key) is not None:
                entry[key] *= factor
        for step in entry["steps"]:
            if step.get("run") in runs and entry["config"] != unprobed:
                runs[step["run"]]["speed_probe_us"] = probe
    path.write_text(json.dumps(document), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def phases(curve_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("phases")
    return (
        _phase_bundle(curve_bundle_dir, root / "fast", 0.75),
        _phase_bundle(curve_bundle_dir, root / "slow", 1.25),
        _phase_bundle(curve_bundle_dir, root / "unprobed", 1.25, unprobed=SLOW_C.name),
    )


def _raw_capacities(path: Path, config: str) -> list[float | None]:
    document = json.loads((path / "results.json").read_text(encoding="utf-8"))
    return [entry["capacity_rps"] for entry in document["capacity"] if entry["config"] == config]


def test_two_machine_phases_agree_at_the_reference_speed(phases: tuple[Path, Path, Path]) -> None:
    (fast_view,) = capacity_views(load_bundle(phases[0]), FIXED)
    (slow_view,) = capacity_views(load_bundle(phases[1]), FIXED)
    assert fast_view.adjusted and slow_view.adjusted
    assert fast_view.speed is not None and slow_view.speed is not None
    exponent = fast_view.speed.exponent
    # The fit is the same in both phases (a phase shifts every log probe alike), and close to the law built in.
    assert slow_view.speed.exponent == pytest.approx(exponent) and exponent == pytest.approx(1.0, abs=0.2)
    residual = (0.75 / 1.25) ** (exponent - 1.0)  # what is left of the phase when the fit is not exactly 1
    compared = 0
    for outcome in fast_view.outcomes:
        at_fast, at_slow = fast_view.at_speed(outcome.config), slow_view.at_speed(outcome.config)
        measured_fast, measured_slow = outcome.estimate, slow_view.estimate(outcome.config)
        assert at_fast is not None and at_slow is not None and measured_slow is not None
        if not (at_fast.median_known and at_slow.median_known):
            continue
        compared += 1
        assert at_fast.median / at_slow.median == pytest.approx(residual, rel=1e-6)
        assert measured_fast.median / measured_slow.median == pytest.approx(1.25 / 0.75, rel=0.15)
    assert compared >= 2


def test_a_run_that_stayed_in_one_phase_is_stated_at_that_phases_speed(phases: tuple[Path, Path, Path]) -> None:
    """Under the report's rule each run is stated at its own fast speed. These two bundles never left their phase, so
    their references are the phases' own and their figures stay as far apart as the phases (what the report's text
    says a shared reference is for): capacity x (probe / reference) ^ b with capacity, probe and reference all
    scaled by the phase leaves exactly the phase's ratio."""
    (fast_view,) = capacity_views(load_bundle(phases[0]))
    (slow_view,) = capacity_views(load_bundle(phases[1]))
    assert fast_view.speed is not None and slow_view.speed is not None
    assert fast_view.speed.own_reference and slow_view.speed.own_reference
    assert fast_view.speed.reference_us / slow_view.speed.reference_us == pytest.approx(0.75 / 1.25)
    compared = 0
    for config in fast_view.configs:
        at_fast, at_slow = fast_view.at_speed(config), slow_view.at_speed(config)
        if at_fast is None or at_slow is None or not (at_fast.median_known and at_slow.median_known):
            continue
        compared += 1
        assert at_fast.median / at_slow.median == pytest.approx(1.25 / 0.75, rel=1e-6)
    assert compared >= 2


def test_the_verdicts_stay_on_the_capacities_as_measured(phases: tuple[Path, Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[1]))
    for outcome in view.outcomes:
        raw = _raw_capacities(phases[1], outcome.config)
        if all(value is not None for value in raw):
            assert outcome.estimate.median == pytest.approx(float(np.median([v for v in raw if v is not None])))
        at_speed = view.at_speed(outcome.config)
        assert at_speed is not None and at_speed.median != pytest.approx(outcome.estimate.median)
    ratios = {item.config: item.comparison.ratio for item in view.outcomes if item.comparison is not None}
    bundle = load_bundle(phases[1])
    without = replace(bundle, environment={k: v for k, v in bundle.environment.items() if k != "speed_probe"})
    (plain,) = capacity_views(without)
    assert plain.speed is None  # the same bundle judged without the adjustment: the same comparisons
    assert ratios and ratios == {item.config: item.comparison.ratio for item in plain.outcomes if item.comparison}


def _censor_one(source: Path, target: Path) -> tuple[Path, str]:
    """A copy of ``source`` in which the first config's first curve met the SLO nowhere (censored below)."""
    shutil.copytree(source, target)
    path = target / "results.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    entry = document["capacity"][0]
    entry.update(capacity_rps=None, censored="below", bound_rps=min(entry["grid"]))
    path.write_text(json.dumps(document), encoding="utf-8")
    return target, entry["config"]


def test_the_figure_at_the_reference_speed_is_the_geometric_mean_unless_a_repetition_is_censored(
    phases: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    path, censored = _censor_one(phases[1], tmp_path / "censored")
    bundle = load_bundle(path)
    (view,) = capacity_views(bundle)
    assert view.speed is not None and view.speed.applied
    runs = {run.id: run for run in bundle.runs}
    seen = set()
    offsets: dict[str, float] = {}
    for config in view.configs:
        results = [result for result in bundle.capacity if result.config == config]
        found = view.at_speed(config)
        assert found is not None
        if any(result.censoring for result in results):
            assert config == censored
            seen.add(MEDIAN)
            assert found.statistic == MEDIAN and found.censored  # as its measured figure: the median
            continue
        seen.add(GEOMETRIC_MEAN)
        values = [
            capacity * view.speed.factor(probe)
            for result in results
            if (probe := curve_probe(result, runs)) is not None and (capacity := result.capacity_rps) is not None
        ]
        logs = np.log(values)
        # The t interval on the logs, widened by what the exponent's error moves them all by: its standard error
        # times the mean log(probe / reference) of the config's curves, in quadrature.
        reference = view.speed.reference_us
        offset = float(np.mean([math.log((curve_probe(result, runs) or 0.0) / reference) for result in results]))
        assert view.speed.slope_se is not None and view.speed.slope_se > 0.0 and abs(offset) > 0.05
        offsets[config] = offset
        assert view.speed.exponent_se is not None
        shared = abs(offset) * view.speed.exponent_se
        plain = scipy_stats.ttest_1samp(logs, 0.0)
        error = math.hypot(float(np.std(logs, ddof=1)) / math.sqrt(len(values)), shared)
        half = float(scipy_stats.t.ppf(0.975, len(values) - 1)) * error
        centre = float(np.mean(logs))
        assert found.statistic == GEOMETRIC_MEAN and found.n == len(values)
        assert found.median == pytest.approx(float(scipy_stats.gmean(values)), rel=1e-9)
        assert (found.ci_low, found.ci_high) == pytest.approx((math.exp(centre - half), math.exp(centre + half)))
        narrow = plain.confidence_interval(0.95)
        assert found.ci_low is not None and found.ci_high is not None
        assert found.ci_low < math.exp(narrow.low) and found.ci_high > math.exp(narrow.high)
        assert found.median != pytest.approx(float(np.median(values)), rel=1e-6)  # not the median of the same
    assert seen == {MEDIAN, GEOMETRIC_MEAN}
    # The configs ran at different mean offsets, so a term pooled over the view's curves would not match each.
    assert max(offsets.values()) - min(offsets.values()) > 0.01
    rows = {row.config: row for row in aggregate_rows(bundle) if row.metric == REFERENCE_CAPACITY_METRIC}
    measured = [row for row in aggregate_rows(bundle) if row.metric == CAPACITY_METRIC]
    assert {row.statistic for row in measured} == {MEDIAN}
    for config, row in rows.items():
        found = view.at_speed(config)
        assert found is not None and row.statistic == found.statistic
        assert row.median == pytest.approx(found.median, rel=1e-5)
    # The column mixes the two: the report and the console say which a cell holds.
    html = render_report(path).read_text(encoding="utf-8")
    assert "at the reference speed, their geometric mean [t interval]" in html
    for row_html in _rows(html, "capacity-headline")[1:]:
        named = re.search(r'data-config="([^"]+)"', row_html)
        assert named is not None
        statistic = MEDIAN if named.group(1) == censored else GEOMETRIC_MEAN
        assert f'data-statistic="{statistic}"' in row_html
        assert ("(median: a repetition is censored)" in row_html) == (statistic == MEDIAN)
    console = Console(record=True, width=250)
    console.print(capacity_table(view))
    lines = {line.split()[0]: line for line in console.export_text().splitlines() if line.split()}
    assert "(median)" in lines[censored]
    assert all("(median)" not in lines[config] for config in view.configs if config != censored)


def _rows(html: str, table_class: str) -> list[str]:
    start = html.index(f'<table class="{table_class}"')
    body = html[start : html.index("</table>", start)]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


def test_the_report_console_and_aggregates_show_both_figures(phases: tuple[Path, Path, Path]) -> None:
    path = phases[2]
    (view,) = capacity_views(load_bundle(path))
    assert view.adjusted and view.at_speed(SLOW_C.name) is None  # its curves read no probe
    assert SLOW_C.name in {item.config for item in view.outcomes}  # it still has its measured capacity and verdict
    html = render_report(path).read_text(encoding="utf-8")
    assert 'class="muted speed-note" data-applied="yes"' in html
    assert view.speed is not None and f"speed probe {view.speed.reference_us:.0f} us" in html
    header, *rows = _rows(html, "capacity-headline")
    assert header.count("<th") == 5 and "at the reference speed" in header
    for row in rows:
        cells = re.findall(r"<td(?: [^>]*)?>", row)
        spans = sum(int(m) for m in re.findall(r'colspan="(\d+)"', row)) - len(re.findall("colspan", row))
        assert len(cells) + spans == 5, row
        if f'data-config="{SLOW_C.name}"' in row:
            assert '<td class="num at-reference" data-statistic=""></td>' in row
    console = Console(record=True, width=250)
    console.print(capacity_table(view))
    text = console.export_text()
    assert "at the reference speed" in text and "this run's fast speed" in text
    rows_out = [row for row in aggregate_rows(load_bundle(path)) if row.kind == "capacity"]
    assert {row.metric for row in rows_out} == {CAPACITY_METRIC, REFERENCE_CAPACITY_METRIC}
    measured = {row.config: row for row in rows_out if row.metric == CAPACITY_METRIC}
    at_reference = {row.config: row for row in rows_out if row.metric == REFERENCE_CAPACITY_METRIC}
    assert SLOW_C.name not in at_reference and set(at_reference) < set(measured)
    for config, figure in at_reference.items():
        estimate = view.estimate(config)
        assert estimate is not None and figure.outcome is None
        assert measured[config].median == pytest.approx(estimate.median, rel=1e-4)


def test_a_bundle_without_the_probe_reads_as_before(curve_bundle_dir: Path) -> None:
    (view,) = capacity_views(load_bundle(curve_bundle_dir))
    assert view.speed is None and not view.adjusted and not view.at_reference
    html = render_report(curve_bundle_dir).read_text(encoding="utf-8")
    assert "speed-note" not in html and "at-reference" not in html


def test_a_reference_outside_the_speeds_run_at_is_called_an_extrapolation() -> None:
    """A machine whose probes all read far from the reference gets a sentence with the factor and what an error of
    0.1 in the exponent does; one whose probes span the reference does not, nor does an adjustment not applied."""
    far = SpeedAdjustment(SPEED_PROBE, 500.0, 1.5, -0.75, 0.14, 45, 227.0, 205.0, 440.0, reliability=0.5)
    sentence = far.extrapolation
    assert sentence is not None and sentence in far.text
    assert "(205 to 440 us)" in sentence
    assert f"factor of about {(227.0 / 500.0) ** 1.5:.2f}" in sentence  # 0.31
    assert f"about {math.expm1(0.1 * math.log(500.0 / 227.0)):.0%}" in sentence  # 8 %
    spanning = replace(far, probe_low=400.0, probe_median=480.0, probe_high=610.0)
    assert spanning.extrapolation is None and "extrapolation" not in spanning.text
    assert replace(far, reason="too few curves").extrapolation is None
