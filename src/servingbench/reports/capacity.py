"""Capacity as a measured curve: p99 against the offered rate per config, and the capacity at the SLO, with intervals.

One :class:`CapacityView` per model, capacity scenario, arrival process and SLO. Every config climbed the same grid of
offered rates in every repetition (``results.json["capacity"]``, ``method: "curve"``), so the view holds:

- per grid rate (and the plan's ``traffic_rps``), each config's p99 and p50: the median over repetitions with its
  order-statistic interval. A rate a config did not reach in a repetition because its climb stopped below it, after
  a failed step, counts as past the SLO: a value censored above (at least the SLO, or the highest p99 of the failed
  rates below it, whichever is larger); a rate the climb did not reach for another reason (it started above it, the
  load generator could not offer it, the server stopped) is not measured in that repetition;
- per config, its capacity: the median over repetitions with an interval, a repetition whose curve met the SLO
  nowhere censored below the lowest rate measured, one that met it everywhere censored above the highest (a lower
  bound); and its comparison with the best config (or the plan's reference) by the paired engine over the
  repetitions where both have a measured capacity, guarded by the censored ones (:func:`censored_guard`);
- queueing theory beside a config where the bundle gives it (one request at a time: M/D/1 or D/D/1).

Entries written before curves (a search per config, ``method`` absent) are read the same way where they can be: the
capacity, censored below when the search never met the SLO and above when it was only a lower bound; they have no
shared grid, so their per-rate table is left out (their steps are still listed and drawn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from statistics import median
from typing import Any, Literal

import numpy as np

from .bundle import Bundle, CapacityResult, CapacityStep, Run
from .metrics import MetricSpec
from .numbers import format_number
from .speed import DEFAULT_RULE, SpeedAdjustment, SpeedRule, adjusted, exponent_log_se, speed_adjustment
from .stats import (
    CONFIDENCE,
    GEOMETRIC_MEAN,
    MIN_REPETITIONS_FOR_INTERVAL,
    ArmsVerdict,
    Estimate,
    Family,
    PairedComparison,
    compare_arms,
    compare_pair,
    log_mean_interval,
    median_interval,
    paired_log_ratios,
)
from .verdict import (
    ConfigOutcome,
    arrivals_text,
    config_order,
    outcome_words,
    plan_margin,
    plan_reference,
    repetitions_text,
    without_verdict_leader,
)

__all__ = [
    "CURVE_METRICS",
    "HALF_PEAK",
    "CapacityTheory",
    "CapacityView",
    "RateCell",
    "RateRow",
    "capacity_spec",
    "capacity_views",
    "censored_guard",
    "grid_spacing",
]

CURVE_METRICS = ("p99", "p50")
"""The latency figures read at each offered rate (ms)."""
THEORY_TEXT = {
    "M/D/1": "M/D/1 (Poisson arrivals, fixed service time)",
    "D/D/1": "D/D/1 (evenly spaced arrivals, fixed service time)",
}
THEORY_CAVEAT = "an upper bound for servers whose service time varies"
HALF_PEAK = 0.5
"""A capacity below this share of the config's closed-loop peak gets a note with its p99 at half the peak: the
report says why the server meets the SLO only so far below what it serves when it is kept busy."""
Sign = Literal[-1, 0, 1]
ViewKey = tuple[str, str, str, float]  # model, scenario, arrivals, SLO p99 (ms)


def capacity_spec(slo_p99_ms: float) -> MetricSpec:
    """The metric a capacity verdict is about (req/s, higher is better), in the verdicts' words (faster/slower)."""
    return MetricSpec("capacity_rps", f"capacity at p99 \N{LESS-THAN OR EQUAL TO} {slo_p99_ms:g} ms", "req/s", True)


@dataclass(frozen=True)
class RateCell:
    """One config at one offered rate: ``estimates`` per metric of :data:`CURVE_METRICS` (``None`` when no repetition
    measured it). ``measured``: repetitions with a counted step at this rate, ``met`` of them within the SLO;
    ``past``: repetitions whose climb stopped below this rate after a failure (counted as past the SLO)."""

    config: str
    estimates: Mapping[str, Estimate | None]
    measured: int
    met: int
    past: int

    @property
    def repetitions(self) -> int:
        """Repetitions the p99 rests on: measured plus past the SLO."""
        return self.measured + self.past


@dataclass(frozen=True)
class RateRow:
    """One offered rate (req/s): each config's cell, by config name. ``traffic``: the rate the user expects."""

    rate: float
    traffic: bool
    cells: Mapping[str, RateCell]


@dataclass(frozen=True)
class CapacityTheory:
    """Queueing theory for one config: the median over repetitions of ``rps`` from ``model`` ("M/D/1", "D/D/1") and
    of the measured ``service_ms``. ``gap`` is the measured median capacity / theory - 1 (``None`` when the measured
    median is not a value)."""

    rps: float
    model: str
    service_ms: float | None
    gap: float | None

    @property
    def text(self) -> str:
        """e.g. "M/D/1 (Poisson arrivals, fixed service time)"."""
        return THEORY_TEXT.get(self.model, self.model)

    @property
    def caveat(self) -> str:
        """What the theory value is for a real server."""
        return THEORY_CAVEAT


@dataclass(frozen=True)
class CapacityView:
    """Capacity at the p99 SLO for one model, scenario, arrival process and SLO.

    ``outcomes``: each config with a capacity (or a censored one), the reference first, then by capacity; each
    carries its estimate (median over repetitions with its interval, censored values included) and its comparison
    with the reference. ``unmeasured``: configs without any curve (their notes say why). ``rows``: the p99 and p50
    of every config at each rate of the shared grid (for search-era entries, which share no grid, at the rates their
    steps tried: drawn, not tabled).
    """

    model: str
    scenario: str
    arrivals: str
    slo_p99_ms: float
    curve: bool
    grid: tuple[float, ...]
    traffic_rps: float | None
    outcomes: tuple[ConfigOutcome, ...]
    unmeasured: tuple[str, ...]
    rows: tuple[RateRow, ...]
    notes: Mapping[str, tuple[str, ...]]
    theory: Mapping[str, CapacityTheory]
    limits: tuple[str, ...]
    repetitions: int
    named: bool
    verdict: ArmsVerdict | None
    left_out: Mapping[str, int]
    above: Mapping[str, ConfigOutcome] = field(default_factory=dict)
    """Each ranked config after the first against the config ranked just above it (paired over repetitions, the
    censored guard applied, in a family of every pair): whether the order of two neighbours is settled."""
    speed: SpeedAdjustment | None = None
    """How each capacity was brought to a reference speed (:mod:`.speed`), or why not; ``None`` for a
    bundle whose probe has no reference."""
    peaks: Mapping[str, float] = field(default_factory=dict)
    """Each config's closed-loop peak (req/s): the highest median throughput over repetitions of a closed-loop
    scenario on the same model, endpoint and batch size as the curves; absent without one."""
    far_below_peak: Mapping[str, str] = field(default_factory=dict)
    """Configs whose capacity is below :data:`HALF_PEAK` of their closed-loop peak: the sentence saying so, with the
    p99 at half the peak (also among the config's ``notes``)."""
    at_reference: Mapping[str, Estimate] = field(default_factory=dict)
    """Each config's capacity at the reference speed (geometric mean [interval, carrying the exponent's
    error] over repetitions; the median where one is censored), when the adjustment applied and every curve of the
    config with a figure has a probe. A figure for setting runs of one
    machine side by side; the verdicts, the order and the chart are on the capacities as measured (within a run the
    configs meet the same phases, interleaved)."""
    reference_values: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    """For each config with a geometric mean in ``at_reference``: the (repetition, capacity at the reference speed)
    of every curve it is over. What a reading of several runs needs to tell a difference shared by every config of a
    run from the curves' own noise (`scripts/capacity_reproducibility.py`)."""
    reference_exponent_se: Mapping[str, float] = field(default_factory=dict)
    """For the same configs: the standard error (log scale) the fitted exponent's error gives their geometric mean
    (:func:`~servingbench.reports.speed.exponent_log_se`, in their interval too)."""

    @property
    def adjusted(self) -> bool:
        """True when some config has a capacity at the reference speed (only an applied adjustment gives one)."""
        return bool(self.at_reference)

    def peak_share(self, config: str) -> float | None:
        """The measured capacity of ``config`` over its closed-loop peak; ``None`` without a peak or when the
        capacity's median is not a value (censored)."""
        return _peak_share(self.estimate(config), self.peaks.get(config))

    def at_speed(self, config: str) -> Estimate | None:
        """The capacity of ``config`` at the reference speed; ``None`` without one."""
        return self.at_reference.get(config)

    @property
    def arrivals_text(self) -> str:
        """e.g. "Poisson arrivals"."""
        return arrivals_text(self.arrivals)

    @property
    def configs(self) -> tuple[str, ...]:
        """Every config of the view, in the order shown."""
        return (*(outcome.config for outcome in self.outcomes), *self.unmeasured)

    def estimate(self, config: str) -> Estimate | None:
        """The capacity estimate of ``config``; ``None`` without one."""
        return next((item.estimate for item in self.outcomes if item.config == config), None)


# --- grouping --------------------------------------------------------------------------------------------------


def capacity_views(bundle: Bundle, speed_rule: SpeedRule = DEFAULT_RULE) -> list[CapacityView]:
    """One view per model, scenario, arrival process and SLO, in bundle order; figures at a reference speed under
    ``speed_rule`` (the report's own by default)."""
    grouped: dict[ViewKey, list[CapacityResult]] = {}
    for result in bundle.capacity:
        grouped.setdefault((result.model, result.scenario, result.arrivals, result.slo_p99_ms), []).append(result)
    runs = {run.id: run for run in bundle.runs}
    return [_view(bundle, key, results, runs, speed_rule) for key, results in grouped.items()]


def _by_config(bundle: Bundle, results: Sequence[CapacityResult]) -> dict[str, list[CapacityResult]]:
    rank = {name: index for index, name in enumerate(config_order(bundle))}
    grouped: dict[str, list[CapacityResult]] = {}
    for result in sorted(results, key=lambda item: (rank.get(item.config, len(rank)), item.repetition)):
        grouped.setdefault(result.config, []).append(result)
    return grouped


def _view(
    bundle: Bundle, key: ViewKey, results: Sequence[CapacityResult], runs: Mapping[str, Run], speed_rule: SpeedRule
) -> CapacityView:
    model, scenario, arrivals, slo = key
    by_config = _by_config(bundle, results)
    labels = {config: bundle.label(config) for config in by_config}
    curve = all(result.is_curve for result in results)
    grid = tuple(sorted({rate for result in results for rate in result.grid}))
    traffic = bundle.traffic_rps
    reference = plan_reference(bundle)
    margin = plan_margin(bundle)
    verdict, outcomes, left_out = _rank(by_config, labels, slo, reference, margin)
    measured = {item.config: item.estimate for item in outcomes}
    theory = {config: found for config, mine in by_config.items() if (found := _theory(mine, measured.get(config)))}
    environment = bundle.environment
    speed = (
        speed_adjustment(by_config, runs, environment.get("speed_probe"), speed_rule, environment.get("memory_probe"))
        if curve
        else None
    )
    at_reference: dict[str, Estimate] = {}
    reference_values: dict[str, tuple[tuple[int, float], ...]] = {}
    reference_exponent_se: dict[str, float] = {}
    if speed is not None and speed.applied:
        for config, mine in adjusted(by_config, runs, speed).items():
            if mine is None:
                continue
            exponent_se = exponent_log_se(by_config[config], runs, speed)
            if (known := _reference_estimate(mine, exponent_se)) is not None:
                at_reference[config] = known
                if known.statistic == GEOMETRIC_MEAN:
                    reference_values[config] = tuple(
                        (result.repetition, value) for result in mine if (value := result.measured_rps) is not None
                    )
                    reference_exponent_se[config] = exponent_se
    # Entries before curves share no grid: their rows (drawn, not tabled) are the rates their steps tried.
    rates = grid if curve else tuple(sorted({step.rate for result in results for step in result.steps}))
    rows = _rate_rows(by_config, runs, rates, traffic if curve else None, slo)
    peaks = _closed_loop_peaks(by_config, runs)
    far_below = {
        config: note
        for config in by_config
        if (note := _peak_note(measured.get(config), peaks.get(config), rows, config)) is not None
    }
    notes = {
        config: (*_notes(mine), *((far_below[config],) if config in far_below else ()))
        for config, mine in by_config.items()
    }
    named = verdict is not None and verdict.reference == reference and reference is not None
    return CapacityView(
        model=model,
        scenario=scenario,
        arrivals=arrivals,
        slo_p99_ms=slo,
        curve=curve,
        grid=grid,
        traffic_rps=traffic,
        outcomes=outcomes,
        unmeasured=tuple(config for config in by_config if config not in measured),
        rows=rows,
        notes=notes,
        theory=theory,
        limits=_limits(
            grid, curve, results, runs, bundle.environment.get("load_generator_ceiling"), _resolution(bundle)
        ),
        repetitions=len({result.repetition for result in results}),
        named=named,
        verdict=verdict,
        left_out=left_out,
        above=_neighbours(outcomes, by_config, slo, margin),
        speed=speed,
        at_reference=at_reference,
        reference_values=reference_values,
        reference_exponent_se=reference_exponent_se,
        peaks=peaks,
        far_below_peak=far_below,
    )


# --- the capacity of each config, and its comparison ----------------------------------------------------------


def _estimate(results: Sequence[CapacityResult]) -> Estimate | None:
    """The median capacity over repetitions with its interval, censored repetitions as censored values."""
    values = [value for result in results if (value := result.measured_rps) is not None]
    below = [bound for result in results if result.censoring == "below" and (bound := result.bound) is not None]
    above = [bound for result in results if result.censoring == "above" and (bound := result.bound) is not None]
    if not values and not below and not above:
        return None
    return median_interval(values, censored_below=below, censored_above=above)


def _reference_estimate(results: Sequence[CapacityResult], exponent_se: float = 0.0) -> Estimate | None:
    """A config's capacity at the reference speed: the geometric mean of its repetitions with the t interval on the
    log values, widened by ``exponent_se`` (what the fitted exponent's error moves them all by, log scale), when none
    is censored (repetitions not measured are left out, as from the measured figure); the median with its censored
    interval otherwise, or when a capacity is not positive (a hand-edited bundle: no log)."""
    values = [value for result in results if (value := result.measured_rps) is not None]
    if any(result.censoring is not None for result in results) or not values or min(values) <= 0.0:
        return _estimate(results)
    return log_mean_interval(values, extra_log_se=exponent_se)


def _sign(arm: CapacityResult, reference: CapacityResult) -> Sign:
    """Which way a pair with a censored member points, where the bounds decide it: 1 when the arm's capacity is
    surely higher, -1 surely lower, 0 when the bounds overlap (or either repetition has no figure at all)."""
    low_arm, high_arm = _range(arm)
    low_ref, high_ref = _range(reference)
    if low_arm is None or low_ref is None or high_arm is None or high_ref is None:
        return 0
    if low_arm >= high_ref:
        return 1
    if high_arm <= low_ref:
        return -1
    return 0


def _range(result: CapacityResult) -> tuple[float | None, float | None]:
    """What is known of one repetition's capacity as [low, high] (req/s); (None, None) when nothing is."""
    value = result.measured_rps
    if value is not None:
        return value, value
    bound = result.bound
    if bound is None:
        return None, None
    return (0.0, bound) if result.censoring == "below" else (bound, math.inf)


def censored_guard(
    comparison: PairedComparison, arm: Sequence[CapacityResult], reference: Sequence[CapacityResult]
) -> tuple[PairedComparison, int, int]:
    """The comparison of ``arm`` with ``reference`` (paired t over the repetitions where both have a measured
    capacity), checked against the repetitions it leaves out because one or both are censored.

    A left-out pair whose bounds decide its sign (e.g. the arm below 100 req/s, the reference measured at 150) is
    evidence the t interval did not see: a "faster" or "slower" outcome stands only if no such pair points the other
    way, and "equivalent" only if no pair was left out (a censored value lies beyond the grid, where nothing says it
    is close). Otherwise the outcome is "inconclusive". Returns (comparison, pairs left out, pairs against).
    """
    mine = {result.repetition: result for result in arm}
    theirs = {result.repetition: result for result in reference}
    left = [
        _sign(mine[rep], theirs[rep])
        for rep in sorted(mine.keys() & theirs.keys())
        if (mine[rep].measured_rps is None or theirs[rep].measured_rps is None)
        and mine[rep].outcome != "not measured"
        and theirs[rep].outcome != "not measured"
    ]
    if comparison.outcome in ("better", "worse"):
        wrong = -1 if comparison.outcome == "better" else 1
        against = sum(1 for sign in left if sign == wrong)
    elif comparison.outcome == "equivalent":
        against = len(left)
    else:
        against = 0
    if against:
        comparison = replace(comparison, outcome="inconclusive", more_repetitions=None)
    return comparison, len(left), against


def _rank(
    by_config: Mapping[str, Sequence[CapacityResult]],
    labels: Mapping[str, str],
    slo: float,
    reference: str | None,
    margin: float,
) -> tuple[ArmsVerdict | None, tuple[ConfigOutcome, ...], dict[str, int]]:
    """Every config with a capacity figure: the reference (the plan's, or the best) first, then by capacity."""
    spec = capacity_spec(slo)
    values = {
        config: {result.repetition: value for result in mine if (value := result.measured_rps) is not None}
        for config, mine in by_config.items()
    }
    ranked = {config: by_rep for config, by_rep in values.items() if by_rep}
    named = reference if reference in ranked else None
    verdict = compare_arms(ranked, reference=named, higher_is_better=True, margin=margin) if ranked else None
    outcomes: list[ConfigOutcome] = []
    left_out: dict[str, int] = {}
    for config, mine in by_config.items():
        estimate = _estimate(mine)
        if estimate is None:
            continue
        comparison = verdict.of(config) if verdict is not None else None
        against = 0
        if comparison is not None and verdict is not None and verdict.reference is not None:
            comparison, left_out[config], against = censored_guard(comparison, mine, by_config[verdict.reference])
        if verdict is None or (comparison is None and config != verdict.reference):
            outcomes.append(ConfigOutcome(config, labels[config], estimate, None, "censored", "no measured capacity"))
            continue
        key, text, advice = outcome_words(comparison, spec, named is not None)
        if against:
            advice = f"{against} censored repetition{'s' if against != 1 else ''} point the other way"
        outcomes.append(ConfigOutcome(config, labels[config], estimate, comparison, key, text, advice))
    outcomes.sort(key=lambda item: _order(item, verdict))
    return verdict, without_verdict_leader(outcomes, spec, named is not None), left_out


def _neighbours(
    outcomes: Sequence[ConfigOutcome],
    by_config: Mapping[str, Sequence[CapacityResult]],
    slo: float,
    margin: float,
) -> dict[str, ConfigOutcome]:
    """Each config ranked below another against the one just above it. The comparisons with the reference (or the
    best) settle each config's place against that one only; two neighbours below it can swap between runs while
    both differ from it. The family is every pair of ranked configs (Bonferroni): with the best as the reference
    these pairs are part of the comparisons' own family; a named reference's k - 1 comparisons are a family of their
    own beside it."""
    spec = capacity_spec(slo)
    values = {
        item.config: {result.repetition: value for result in by_config[item.config] if (value := result.measured_rps)}
        for item in outcomes
    }
    ranked = [item for item in outcomes if values[item.config]]
    size = len(ranked) * (len(ranked) - 1) // 2
    family = Family(CONFIDENCE, max(size, 1), "best")
    found: dict[str, ConfigOutcome] = {}
    for upper, lower in pairwise(ranked):
        logs = paired_log_ratios(values[lower.config], values[upper.config])
        comparison = compare_pair(lower.config, upper.config, logs, family=family, higher_is_better=True, margin=margin)
        comparison, _, against = censored_guard(comparison, by_config[lower.config], by_config[upper.config])
        key, text, advice = outcome_words(comparison, spec, True)
        if against:
            advice = f"{against} censored repetition{'s' if against != 1 else ''} point the other way"
        found[lower.config] = ConfigOutcome(lower.config, lower.label, lower.estimate, comparison, key, text, advice)
    return found


def _order(outcome: ConfigOutcome, verdict: ArmsVerdict | None) -> tuple[int, float]:
    if verdict is not None and outcome.config == verdict.reference:
        return 0, 0.0
    if outcome.comparison is not None and outcome.comparison.ratio is not None:
        return 1, -outcome.comparison.ratio
    known = outcome.estimate.median if outcome.estimate.median_known else 0.0
    return 2, -known


# --- p99 and p50 at each offered rate -------------------------------------------------------------------------


def _step_value(step: CapacityStep, run: Run | None, metric: str) -> float | None:
    if metric == "p99" and step.p99_ms is not None:
        return step.p99_ms
    return run.latency_ms.get(metric) if run is not None else None


def _at_rate(
    result: CapacityResult, runs: Mapping[str, Run], rate: float, slo: float
) -> tuple[dict[str, float], bool | None, float | None]:
    """One repetition at ``rate``: (values by metric, met the SLO, past-the-SLO bound). The last counted step at the
    rate gives the values; with none, a climb that failed below the rate gives the bound it is censored above at."""
    counted = [step for step in result.steps if step.counted(runs)]
    here = [step for step in counted if math.isclose(step.rate, rate, rel_tol=1e-9)]
    if here:
        step = here[-1]
        run = runs.get(step.run or "")
        values = {metric: value for metric in CURVE_METRICS if (value := _step_value(step, run, metric)) is not None}
        return values, step.ok, None
    failed_below = [step for step in counted if not step.ok and step.rate < rate]
    if not failed_below:
        return {}, None, None
    return {}, None, max([slo, *(step.p99_ms for step in failed_below if step.p99_ms is not None)])


def _cell(config: str, results: Sequence[CapacityResult], runs: Mapping[str, Run], rate: float, slo: float) -> RateCell:
    values: dict[str, list[float]] = {metric: [] for metric in CURVE_METRICS}
    past: list[float] = []
    measured = met = 0
    for result in results:
        found, ok, bound = _at_rate(result, runs, rate, slo)
        if bound is not None:
            past.append(bound)
            continue
        if ok is None:
            continue
        measured += 1
        met += int(ok)
        for metric, value in found.items():
            values[metric].append(value)
    estimates: dict[str, Estimate | None] = {}
    for metric in CURVE_METRICS:
        above = past if metric == "p99" else []  # past the SLO says nothing of p50
        estimates[metric] = median_interval(values[metric], censored_above=above) if values[metric] or above else None
    return RateCell(config, estimates, measured, met, len(past))


def _rate_rows(
    by_config: Mapping[str, Sequence[CapacityResult]],
    runs: Mapping[str, Run],
    grid: Sequence[float],
    traffic: float | None,
    slo: float,
) -> tuple[RateRow, ...]:
    rates = sorted({*grid, *((traffic,) if traffic is not None else ())})
    return tuple(
        RateRow(
            rate,
            traffic is not None and math.isclose(rate, traffic, rel_tol=1e-9),
            {config: _cell(config, mine, runs, rate, slo) for config, mine in by_config.items()},
        )
        for rate in rates
    )


# --- theory, notes, headline, limits ----------------------------------------------------------------------------


def _theory(results: Sequence[CapacityResult], measured: Estimate | None) -> CapacityTheory | None:
    with_theory = [result.theory_rps for result in results if result.theory_rps is not None]
    if not with_theory:
        return None
    rps = median(with_theory)
    models = ", ".join(dict.fromkeys(result.theory or "queueing model" for result in results if result.theory_rps))
    services = [result.service_ms for result in results if result.service_ms is not None]
    exact = measured is not None and measured.median_known and not measured.median_is_bound
    exact = exact and measured is not None and not measured.median_at_least
    gap = measured.median / rps - 1.0 if exact and measured is not None and rps > 0.0 else None
    return CapacityTheory(rps, models, median(services) if services else None, gap)


def _closed_loop_peaks(by_config: Mapping[str, Sequence[CapacityResult]], runs: Mapping[str, Run]) -> dict[str, float]:
    """Each config's closed-loop peak: the highest, over the closed-loop scenarios run on the model, endpoint and
    batch size of its curves' steps, of the median throughput of their counted repetitions."""
    peaks: dict[str, float] = {}
    for config, results in by_config.items():
        shapes = {
            (run.model, run.endpoint, run.batch_size)
            for result in results
            for step in result.steps
            if (run := runs.get(step.run or "")) is not None
        }
        by_scenario: dict[str, list[float]] = {}
        for run in runs.values():
            if (
                run.config == config
                and run.kind == "closed"
                and not run.is_step
                and run.counted
                and run.rps is not None
                and run.rps > 0.0
                and (run.model, run.endpoint, run.batch_size) in shapes
            ):
                by_scenario.setdefault(run.scenario, []).append(run.rps)
        if by_scenario:
            peaks[config] = max(median(values) for values in by_scenario.values())
    return peaks


def _peak_share(estimate: Estimate | None, peak: float | None) -> float | None:
    """A capacity's median over the closed-loop peak; ``None`` without a peak or when the median is not a value."""
    if estimate is None or peak is None or peak <= 0.0:
        return None
    if not estimate.median_known or estimate.median_is_bound or estimate.median_at_least:
        return None
    return estimate.median / peak


def _peak_note(estimate: Estimate | None, peak: float | None, rows: Sequence[RateRow], config: str) -> str | None:
    """Where a capacity is below :data:`HALF_PEAK` of the closed-loop peak: the median p99 at the measured rates
    on either side of half the peak, so the reader sees the curve cross the SLO before the server is kept busy."""
    share = _peak_share(estimate, peak)
    if share is None or peak is None or share >= HALF_PEAK:
        return None
    half = HALF_PEAK * peak
    measured = [
        (row.rate, p99)
        for row in rows
        if (cell := row.cells.get(config)) is not None
        and (p99 := cell.estimates.get("p99")) is not None
        and p99.median_known
    ]
    below = [item for item in measured if item[0] <= half]
    above = [item for item in measured if item[0] > half]
    sides = [*below[-1:], *above[:1]]
    lead = f"capacity {share:.2f} of the closed-loop peak ({format_number(peak)} req/s)"
    if not sides:
        return f"{lead}; no rate near half the peak was measured"
    readings = " and ".join(
        f"{'over ' if p99.median_at_least else ''}{format_number(p99.median)} ms at {format_number(rate)} req/s"
        for rate, p99 in sides
    )
    return (
        f"{lead}: at half the peak ({format_number(half)} req/s) its p99 is {readings} (median over "
        "repetitions), so its p99 reaches the SLO well before the server is kept busy"
    )


def _count(results: Sequence[CapacityResult], outcome: str) -> list[CapacityResult]:
    return [result for result in results if result.outcome == outcome]


def _notes(results: Sequence[CapacityResult]) -> tuple[str, ...]:
    """What a config's figure rests on beyond measured values: censored repetitions, limits, failures."""
    notes: list[str] = []
    below = _count(results, "never met")
    if below:
        bounds = ", ".join(format_number(result.bound) for result in below)
        notes.append(f"met the SLO at no rate measured in {repetitions_text(len(below))}: below {bounds} req/s")
    above = _count(results, "lower bound")
    curves_above = [result for result in above if result.is_curve]
    if curves_above:
        bounds = ", ".join(format_number(result.bound) for result in curves_above)
        limit = any(result.limited_by for result in curves_above)
        why = ", where the load generator could go no higher" if limit else ""
        notes.append(
            f"met the SLO at every rate measured in {repetitions_text(len(curves_above))}: at least {bounds} req/s{why}"
        )
    notes += _search_notes([result for result in above if not result.is_curve])
    unsettled = _count(results, "unsettled")
    if unsettled:
        notes.append(
            f"unsettled in {repetitions_text(len(unsettled))}: a rate met the SLO but missed when re-measured "
            "(search before curves), left out"
        )
    unmeasured = _count(results, "not measured")
    if unmeasured:
        why = "; ".join(dict.fromkeys(result.stop_reason or "no step ran" for result in unmeasured))
        notes.append(f"not measured in {repetitions_text(len(unmeasured))} ({why})")
    return tuple(notes)


def _search_notes(results: Sequence[CapacityResult]) -> list[str]:
    """Why a search's capacity (bundles before curves) is only a lower bound."""
    if not results:
        return []
    reasons = []
    if any(result.limited_by for result in results):
        reasons.append(f"{results[0].limited_by} limit")
    if any(not result.converged for result in results):
        reasons.append("the search did not converge")
    if any(result.passed_above for result in results):
        reasons.append("a higher rate passed once but was not confirmed")
    return [f"lower bound in {repetitions_text(len(results))}: {'; '.join(reasons) or 'see the steps'}"]


def _resolution(bundle: Bundle) -> float:
    """The plan's ``capacity_resolution`` (0 when absent: bundles from before it measured the grid only)."""
    value = bundle.plan.get("capacity_resolution")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


def grid_spacing(grid: Sequence[float]) -> float | None:
    """The median step between neighbouring grid rates as a fraction (0.2: each rate 20 % above the one below)."""
    if len(grid) < 2:
        return None
    steps = [high / low - 1.0 for low, high in pairwise(grid) if low > 0]
    return float(np.median(steps)) if steps else None


def _ceiling_text(ceiling: Mapping[str, Any]) -> str:
    """The load generator's own ceiling, as measured before the curves."""
    found, bound = ceiling.get("ceiling_rps"), ceiling.get("max_send_lag_ms")
    tried = [float(step["rate"]) for step in ceiling.get("steps", []) if isinstance(step, Mapping) and "rate" in step]
    if isinstance(found, int | float):
        above = "" if ceiling.get("limited") or not tried else f" (the highest rate tried, {max(tried):g} req/s)"
        return (
            f"The load generator kept its open-loop schedule (p99 send lag within {bound:g} ms) up to {found:g} req/s "
            f"against a bare ASGI server on this machine{above}; a step above that which failed only on the "
            "generator's account was re-run, and a rate it still could not keep leaves the capacity a lower bound."
        )
    return "The load generator could not keep its schedule even at the lowest rate of its ceiling probe."


def _limits(
    grid: Sequence[float],
    curve: bool,
    results: Sequence[CapacityResult],
    runs: Mapping[str, Run],
    ceiling: object = None,
    resolution: float = 0.0,
) -> tuple[str, ...]:
    """What these capacity figures cannot show."""
    limits: list[str] = []
    if isinstance(ceiling, Mapping):
        limits.append(_ceiling_text(ceiling))
    spacing = grid_spacing(grid)
    if spacing is not None:
        refined = (
            f" Where they were more than {resolution:.0%} apart around it, each curve then measured their geometric "
            f"midpoint until a passing and a failing rate were within {resolution:.0%}; those midpoints are the "
            "curve's own (in the chart, not the table)."
            if resolution > 0.0 and spacing > resolution
            else ""
        )
        limits.append(
            f"Grid resolution: neighbouring rates are about {spacing:.0%} apart. The capacity is interpolated "
            "(linearly in log p99) between the two rates around the SLO crossing of the monotone fit, so it is no "
            f"finer than the curve's shape between them; the p99 table shows only the grid's rates.{refined}"
        )
    if not curve:
        limits.append(
            "These entries come from a capacity search (a bundle written before curves): each config tried its own "
            "rates, so there is no p99 at shared rates, and a search's capacity is the highest rate that passed."
        )
    limits.append(
        "A censored repetition only bounds the capacity: below the lowest rate measured (it met the SLO nowhere) or "
        "at least the highest (it met it everywhere); an interval end it may occupy is left open ('below', 'above')."
    )
    requests = [
        run.requests
        for result in results
        for step in result.steps
        if (run := runs.get(step.run or "")) is not None and run.counted
    ]
    if requests:
        limits.append(
            f"Each step's p99 rests on one window of about {int(median(requests)):,} requests (median over steps); "
            "the interval over repetitions is what says how far it moves."
        )
    if len({result.repetition for result in results}) < MIN_REPETITIONS_FOR_INTERVAL:
        limits.append(
            f"Fewer than {MIN_REPETITIONS_FOR_INTERVAL} repetitions: no interval and no verdict word, only the "
            "medians and the range of the ratios."
        )
    return tuple(limits)
