"""Judge runs against a committed baseline, on the machine that made the baseline and nowhere else.

The baseline is the calibration's ``noise.json``: per figure, the values of N >= 5 A/A runs of the plan and each
run's machine-speed probe. Each new run's value is its median over repetitions, as each calibration run's; the M new
runs' value is the geometric mean of theirs.

With the probe (every calibration run and every new run recorded one): each figure's log is regressed on the
probe's log over the calibration runs, and the new runs are judged against the figure expected at the speed *they*
ran at, with the regression's prediction interval ``t(N - 2) * s * sqrt(1/M + 1/N + (x - mean x)^2 / Sxx)`` at the
family level (Bonferroni over the figures). The machine's speed, which moved unchanged code by up to 15 % between a
calibration and a check on this VM, is then part of the expectation rather than of the verdict, so the material
threshold is the metric's own (5 %, p99 10 %). A new speed further outside the calibration runs' than
`SPEED_EXTRAPOLATION` of their range is no verdict: the fit is not extrapolated that far.

Without it (a baseline or run made before the probe, target mode): against the calibration mean, with the plain
prediction interval ``t(N - 1) * sd * sqrt(1/M + 1/N)``, and a material threshold of at least `DRIFT_THRESHOLD`.

It is a **regression** when the new value lies beyond the interval on the more-expensive side **and** its cost
change exceeds the material threshold. One run carries its whole run-to-run noise, so M runs narrow the interval
by about sqrt(M). On another machine, with another plan, or from an incomplete run there is no verdict (exit 3),
never a pass or a fail: absolute figures from two machines do not compare, and no ratio to a yardstick makes them
comparable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from servingbench.reports.bundle import Bundle

from .figures import GATE_METRICS, MIN_UNITS, FigureKey, arm_values, cost_log, invalid_summary, run_value
from .fingerprint import Machine, machine_mismatch, plan_identity, plan_mismatch, software_changes
from .noise import NoiseEntry, NoiseModel, SpeedFit, prediction_scale, run_speed
from .paired import FAMILY_CONFIDENCE, family_level
from .result import CheckResult, GateRow, classify, decide, no_verdict

__all__ = ["DEFAULT_RUNS", "DRIFT_THRESHOLD", "judge_baseline"]

DEFAULT_RUNS = 3
"""Runs a baseline check makes and judges by their mean: about 75 s of the CI plan on 2 cores. What the trials
measured (docs/bench-ci.md, fourth trial): with the speed fit and a calibration across the machine's states, 3 runs
gave 0 of 20 A/A false alarms and caught +15 % in 10 of 10 (10 runs were the default while the probe ran on the
idle core, and the plain interval needed them)."""
DRIFT_THRESHOLD = 0.10
"""The smallest material threshold of a baseline check judged without the speed probe. Calibration runs back to
back see the noise between runs minutes apart, not the machine's drift between the calibration and a later check:
unchanged code judged by the mean of 5 runs moved by -8.8 % to +4.6 % on this VM (docs/bench-ci.md), so a change
below 10 % cannot be told from that drift, however narrow the interval (one A/A group drifted +15.2 %: no floor that
still sees +15 % holds that). The speed probe models that drift; the A/B check measures both versions minutes apart.
Both keep the metric's own threshold."""

ANOTHER_MACHINE_HINT = "compare base and head on one machine instead (`make bench-ci`)"


def _prediction_p(log_change: float, entry: NoiseEntry, runs: int) -> float:
    """Two-sided p-value of the mean of ``runs`` new runs this far from the calibration mean, under "same code"
    (t, n - 1)."""
    scale = prediction_scale(entry.log_sd, entry.n, runs)
    if scale == 0.0:
        return 1.0 if log_change == 0.0 else 0.0
    return float(2.0 * scipy_stats.t.sf(abs(log_change) / scale, entry.n - 1))


@dataclass(frozen=True)
class _Expected:
    """What unchanged code gives for a figure in the new runs: its log, the interval's half-width, the p-value of a
    change, and the material threshold (with where it comes from)."""

    log: float
    half: float
    p: float
    threshold: float
    source: str


def _expected(entry: NoiseEntry, values: Sequence[float], level: float, speed_log: float | None) -> _Expected:
    mean_log = statistics.fmean(math.log(value) for value in values)
    runs = len(values)
    default = GATE_METRICS[entry.key.metric].default_threshold
    fit = entry.speed_fit
    if fit is not None and speed_log is not None:
        expected = fit.expected(speed_log)
        change = mean_log - expected
        return _Expected(
            expected, fit.half_width(level, speed_log, runs), fit.p_value(change, speed_log, runs), default, "default"
        )
    threshold, source = (default, "default") if default >= DRIFT_THRESHOLD else (DRIFT_THRESHOLD, "drift floor")
    change = mean_log - entry.log_mean
    return _Expected(
        entry.log_mean, entry.half_width(level, runs), _prediction_p(change, entry, runs), threshold, source
    )


def _row(entry: NoiseEntry, values: Sequence[float], level: float, family: int, speed_log: float | None) -> GateRow:
    key = entry.key
    mean_log = statistics.fmean(math.log(value) for value in values)
    expected = _expected(entry, values, level, speed_log)
    change = cost_log(mean_log - expected.log, key.metric)
    half = expected.half
    verdict = classify(
        change,
        worse=change > half,
        better=change < -half,
        n=entry.n,
        threshold=expected.threshold,
        settled=-half <= change <= half,
        baseline=True,
    )
    p_adjusted = min(1.0, expected.p * family)
    value = math.exp(mean_log)
    return GateRow(
        key,
        math.exp(expected.log),
        value,
        entry.n,
        change,
        -half,
        half,
        p_adjusted,
        expected.threshold,
        expected.source,
        verdict,
    )


def _speed_log(noise: NoiseModel, currents: Sequence[Bundle]) -> tuple[float | None, str | None]:
    """The new runs' mean probe log, when the baseline and every new run have a speed probe; else ``None`` and, when
    only the runs lack it, why."""
    if noise.stale_probe is not None:
        return None, (
            f"the baseline's machine-speed probe is of an older kind ({noise.stale_probe}) than this servingbench's: "
            "judged against the calibration mean, not its speed fit; re-make the baseline to judge at the machine's "
            "speed"
        )
    if noise.speed_fit is None:
        return None, None
    config = next(iter(noise.entries))[0]
    speeds = [run_speed(bundle, config) for bundle in currents]
    if any(speed is None for speed in speeds):
        return None, "a new run has no machine-speed probe: judged against the calibration mean, not its speed fit"
    return statistics.fmean(math.log(speed) for speed in speeds if speed is not None), None


def _out_of_range(noise: NoiseModel, speed_log: float) -> str | None:
    """Why the speed fit cannot judge runs at ``speed_log`` (too far outside the calibration runs' speeds), or
    ``None``."""
    fit = noise.speed_fit
    if fit is None or fit.covers(speed_log):
        return None
    side, edge = ("slower", fit.x_max) if speed_log > fit.x_max else ("faster", fit.x_min)
    return (
        f"the machine ran {abs(math.expm1(speed_log - edge)):.0%} {side} than any calibration run, too far to "
        f"extrapolate (speed probe {math.exp(speed_log):.0f} us; calibration {math.exp(fit.x_min):.0f} to "
        f"{math.exp(fit.x_max):.0f} us): the baseline cannot say what unchanged code gives at this speed; re-run "
        f"the check, re-make the baseline with `make baseline`, or {ANOTHER_MACHINE_HINT.replace('instead ', '')}"
    )


def _current_values(
    noise: NoiseModel, currents: Sequence[Bundle]
) -> tuple[dict[tuple[str, FigureKey], list[float]], list[str]]:
    """Every run's value of every baseline figure, and the figures a run has too few valid repetitions of."""
    values: dict[tuple[str, FigureKey], list[float]] = {item: [] for item in noise.entries}
    short = []
    for current in currents:
        which = f"{current.path}: " if len(currents) > 1 else ""
        per_config = {config: arm_values(current, config) for config, _ in noise.entries}
        for config, key in noise.entries:
            reps = per_config[config].get(key, {})
            if len(reps) < MIN_UNITS:
                short.append(f"{which}{key.label()} has {len(reps)} valid repetitions (need {MIN_UNITS})")
            else:
                values[(config, key)].append(run_value(reps.values()))
    return values, short


def _refusal(noise: NoiseModel, current: Bundle) -> str | None:
    if not current.complete:
        return f"the run in {current.path} did not finish (interrupted or still running)"
    mismatch = machine_mismatch(noise.machine, Machine.of(current.environment))
    if mismatch is not None:
        return f"{mismatch}: absolute figures from two machines do not compare; {ANOTHER_MACHINE_HINT}"
    plan = plan_mismatch(noise.plan, plan_identity(current.plan))
    if plan is not None:
        return f"this run measured another plan than the baseline ({plan}): re-make the baseline with `make baseline`"
    return None


def _speed_summary(fit: SpeedFit, speed_log: float) -> str:
    change = math.expm1(speed_log - fit.x_mean)
    word = "slower" if change > 0 else "faster"
    return (
        f"adjusted for the machine's speed: the speed probe ran {abs(change):.1%} {word} than the calibration's mean "
        f"({math.exp(speed_log):.0f} us against {math.exp(fit.x_mean):.0f} us); each figure is judged against what "
        "unchanged code gives at this speed (its regression on the probe over the calibration runs)"
    )


def judge_baseline(
    noise: NoiseModel, current: Bundle | Sequence[Bundle], *, confidence: float = FAMILY_CONFIDENCE
) -> CheckResult:
    """Judge ``current`` (one run, or several judged by their mean) against the committed baseline ``noise``. Pure.
    Python and package versions that differ from the calibration's are listed: a dependency bump is part of the
    change judged, not an excuse."""
    currents = [current] if isinstance(current, Bundle) else list(current)
    if not currents:
        raise ValueError("judge_baseline needs at least one run")
    first = currents[0]
    context = {
        "bundle": ", ".join(str(bundle.path) for bundle in currents),
        "baseline": str(noise.path) if noise.path else None,
        "machine": Machine.of(first.environment).to_json(),
        "baseline_machine": noise.machine.to_json(),
    }
    refusal = next((reason for reason in (_refusal(noise, bundle) for bundle in currents) if reason), None)
    if refusal is not None:
        return no_verdict("baseline", refusal, **context)
    values, short = _current_values(noise, currents)
    configs = {config: config for config, _ in noise.entries}
    invalid = [line for bundle in currents for line in invalid_summary(bundle.runs, configs)]
    if short:
        return no_verdict("baseline", "; ".join([*short, *invalid]), **context)
    speed_log, speed_note = _speed_log(noise, currents)
    if speed_log is not None:
        far = _out_of_range(noise, speed_log)
        if far is not None:
            return no_verdict("baseline", far, **context)
    level = family_level(len(values), confidence)
    rows = tuple(_row(noise.entries[item], runs, level, len(values), speed_log) for item, runs in values.items())
    status, reason = decide("baseline", rows)
    what = "one new run" if len(currents) == 1 else f"the mean of {len(currents)} new runs"
    fit = noise.speed_fit
    notes = [
        f"baseline: {noise.runs} A/A runs on this machine; prediction interval for {what} at the family level "
        f"{level:.2%} (Bonferroni over {len(rows)} figures)",
        *([_speed_summary(fit, speed_log)] if fit is not None and speed_log is not None else []),
        *([speed_note] if speed_note else []),
        *invalid,
    ]
    changes = software_changes(noise.software, first.environment) if noise.software else []
    if changes:
        notes.append(f"software differs from the baseline's (judged as part of the change): {', '.join(changes)}")
    return CheckResult("baseline", status, reason, rows, tuple(notes), "run", level, context)
