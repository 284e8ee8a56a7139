"""How well independent runs of one machine agree on capacity: the check of "Capacity as a measured curve" (each
run's value within +-15 % of the median of three, the intervals overlapping, the same order), read from results
bundles with the report's own code.

For every capacity view (model, scenario, arrival process, SLO) found in all the bundles, and each config: its
capacity at the reference speed per run (the report's figure, with its interval; the capacity as measured
where no adjustment applied), the largest deviation of a run from the median of the runs, whether every run's
interval overlaps every other's, the same for the capacities as measured (median over repetitions), the capacity
over the closed-loop peak, and each run's order. Then how each run was brought to the reference speed (probe
median, fitted exponent, reliability). Nothing is measured here: run ``servingbench run --out DIR`` (what ``make
bench`` runs) three times first::

    .venv/bin/python scripts/capacity_reproducibility.py RUN1/latest RUN2/latest RUN3/latest
    .venv/bin/python scripts/capacity_reproducibility.py --model fast RUN1/latest RUN2/latest RUN3/latest

Each run is stated at its own reference speed by default (the report's rule: its fast phase, the 10th percentile of
its probe readings); the runs' references are printed, and agree on a machine whose fast phase each run visits.
``--shared-reference`` brings every run to one reference, the median of the runs' own, so the figures are at the
same speed whatever each run met. Two what-ifs re-judge the same bundles under another rule, to try one offline
before it is built (freeze the rule before you read the runs you test it on): ``--reference-us`` brings every figure
to that probe reading, and ``--noise-correction`` divides the fitted exponent by the reliability of the curves'
probes (the rule before 2026-12-04 was ``--reference-us 500 --noise-correction``), and ``--memory`` adds the memory
probe's term (runs of a plan with ``memory_probe_steps``; set 12 in docs/measurements.md), fitted in each run at
its own memory reference; ``--memory-exponent C`` instead brings every curve to the runs' shared memory speed with
the fixed exponent C (set 14)::

    .venv/bin/python scripts/capacity_reproducibility.py --reference-us 500 --noise-correction RUN1/latest ...
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

if not __package__:  # run as a script (scripts/ on sys.path, not the repository): make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servingbench.reports.bundle import Bundle, load_bundle
from servingbench.reports.capacity import CapacityView, capacity_views
from servingbench.reports.speed import SpeedRule, curve_probe, reference_probe
from servingbench.reports.stats import Estimate, log_mean_interval

ViewKey = tuple[str, str, str, float]
EFFECT_ALPHA = 0.05
"""A run effect (or a config's own difference) is called beyond the noise below this chance."""


@dataclass(frozen=True)
class ConfigAgreement:
    """One config over the runs: its figures (at the reference speed where adjusted), their worst deviation from
    the median of the runs, whether their intervals all overlap; the same for the capacities as measured."""

    config: str
    figures: tuple[Estimate | None, ...]
    deviation: float | None
    overlap: bool | None
    measured: tuple[Estimate | None, ...]
    measured_deviation: float | None
    peak_shares: tuple[float | None, ...]


def _value(estimate: Estimate | None) -> float | None:
    """The estimate's central value; ``None`` without one (censoring left the median unknown, or not positive)."""
    if estimate is None or not estimate.median_known or estimate.median <= 0.0:
        return None
    return estimate.median


def _figure(view: CapacityView, config: str) -> Estimate | None:
    """The config's figure: at the reference speed where the view was adjusted, else as measured."""
    return view.at_speed(config) or view.estimate(config)


def worst_deviation(values: Sequence[float | None]) -> float | None:
    """The largest |value / median - 1| over the runs; ``None`` when a run has no value."""
    known = [value for value in values if value is not None]
    if len(known) != len(values) or not known:
        return None
    middle = statistics.median(known)
    return max(abs(value / middle - 1.0) for value in known)


def all_overlap(estimates: Sequence[Estimate | None]) -> bool | None:
    """True when every run's interval overlaps every other's (an open end overlaps everything on its side);
    ``None`` when a run has no interval."""
    if any(estimate is None or estimate.level is None for estimate in estimates):
        return None
    lows = [estimate.ci_low for estimate in estimates if estimate is not None and estimate.ci_low is not None]
    highs = [estimate.ci_high for estimate in estimates if estimate is not None and estimate.ci_high is not None]
    return not lows or not highs or max(lows) <= min(highs)


def agreement(views: Sequence[CapacityView]) -> list[ConfigAgreement]:
    """Each config of the first view that every view measured, in the first view's order."""
    configs = [config for config in views[0].configs if all(config in view.configs for view in views[1:])]
    out = []
    for config in configs:
        figures = tuple(_figure(view, config) for view in views)
        measured = tuple(view.estimate(config) for view in views)
        out.append(
            ConfigAgreement(
                config,
                figures,
                worst_deviation([_value(figure) for figure in figures]),
                all_overlap(figures),
                measured,
                worst_deviation([_value(figure) for figure in measured]),
                tuple(view.peak_share(config) for view in views),
            )
        )
    return out


@dataclass(frozen=True)
class RunEffects:
    """Where the runs' figures at the reference speed differ, on the log scale, over the configs with a geometric mean
    of two or more curves in every run (two-way: run by config; ``dropped``: the configs left out).

    ``effects``: each run's part shared by every config (the mean over configs of its log figure less each config's
    mean over the runs); ``effect_sd`` their standard deviation; ``effect_noise_sd`` what noise alone gives a run's
    shared part: the root mean square over runs of its standard error, with the repetitions as clusters (the configs
    of one repetition meet the same phase of the machine, so their noise is not independent), plus the fitted
    exponent's error (it moves every config of a run together, by the exponent's standard error times how far from
    the reference the curves ran); ``effect_p`` the F test of the effects against that noise, on ``effect_df``
    degrees of freedom (runs - 1, and the repetitions' over the runs). ``own_sd``: what is left of each config's
    difference once the run's shared part is taken out (pooled over (runs - 1) x (configs - 1) degrees of freedom);
    ``own_noise_sd`` the root mean square of the figures' own standard errors (their curves' spread over the square
    root of their count, without the exponent's part); ``own_p`` the F test of the one against the other, on
    ``own_df``. The configs of a repetition share part of their noise, which the run's shared part takes out of what
    is left, so that test leans towards "not distinguishable from the curves' noise".

    What it is for: a shared part beyond the noise is a difference between the runs (a state of the machine the run
    met that the probe did not read), which more curves per run would not remove; an own part that the noise explains
    is what more curves shrink. With three runs the first test has two degrees of freedom: it can show a large run
    effect, not rule out a small one. The noise is estimated, which the F test allows for; the exponent's part is
    taken as known, and its sign as the same for every config (the run's own reference is its fast phase, so the
    curves ran at or above it)."""

    configs: tuple[str, ...]
    dropped: tuple[str, ...]
    effects: tuple[float, ...]
    effect_sd: float
    effect_noise_sd: float
    effect_p: float
    effect_df: tuple[int, int]
    own_sd: float
    own_noise_sd: float
    own_p: float
    own_df: tuple[int, int]


TINY_VARIANCE = 1e-12
"""A variance (log scale) below this is none: identical curves leave rounding, not noise."""


def _run_noise(values: Mapping[str, Sequence[tuple[int, float]]], configs: Sequence[str]) -> tuple[float, int]:
    """The variance of one run's mean over ``configs`` of their mean log value, with the repetitions as clusters, and
    its degrees of freedom (the repetitions less one). The sandwich estimate: each repetition's share of the
    deviations, summed over configs and squared; each config's deviations scaled by sqrt(n / (n - 1)) for its own
    count n, so one config alone gives its unbiased variance of the mean and a config that lacks some repetitions
    is not understated by the others' count."""
    shares: dict[int, float] = {}
    for config in configs:
        logs = [(repetition, math.log(value)) for repetition, value in values[config]]
        count = len(logs)
        centre = statistics.fmean(log for _, log in logs)
        scale = math.sqrt(count / (count - 1)) / (len(configs) * count)
        for repetition, log in logs:
            shares[repetition] = shares.get(repetition, 0.0) + (log - centre) * scale
    return sum(share * share for share in shares.values()), len(shares) - 1


def _mean_log(values: Sequence[tuple[int, float]]) -> float:
    return statistics.fmean(math.log(value) for _, value in values)


def _own_noise(values: Sequence[tuple[int, float]]) -> float:
    """The variance of a config's mean log value over its curves (two or more): their variance over their count."""
    logs = [math.log(value) for _, value in values]
    return statistics.variance(logs) / len(logs)


def run_effects(views: Sequence[CapacityView]) -> RunEffects | None:
    """The two-way reading of ``views`` (one per run); ``None`` with fewer than two runs, or fewer than two configs
    with a geometric mean of two or more curves in every run."""
    if len(views) < 2:
        return None
    measured = [config for config in views[0].configs if all(config in view.reference_values for view in views)]
    configs = tuple(config for config in measured if all(len(view.reference_values[config]) >= 2 for view in views))
    if len(configs) < 2:
        return None
    table = np.array([[_mean_log(view.reference_values[config]) for config in configs] for view in views])
    centred = table - table.mean(axis=0)
    effects = centred.mean(axis=1)
    own = centred - effects[:, None]
    runs, count = table.shape
    noises = [_run_noise(view.reference_values, configs) for view in views]
    exponent = [
        statistics.fmean(view.reference_exponent_se.get(config, 0.0) for config in configs) ** 2 for view in views
    ]
    effect_noise = statistics.fmean(noise + part for (noise, _), part in zip(noises, exponent, strict=True))
    own_noise = statistics.fmean(_own_noise(view.reference_values[c]) for view in views for c in configs)
    effect_df = (runs - 1, sum(df for _, df in noises))
    own_df = ((runs - 1) * (count - 1), sum(len(view.reference_values[c]) - 1 for view in views for c in configs))
    effect_ss = float(np.sum((effects - effects.mean()) ** 2))
    own_ss = float(np.sum(own**2))
    return RunEffects(
        configs,
        tuple(config for config in views[0].configs if config not in configs),
        tuple(float(effect) for effect in effects),
        math.sqrt(effect_ss / effect_df[0]),
        math.sqrt(effect_noise),
        _f_p(effect_ss / effect_df[0], effect_noise, effect_df),
        effect_df,
        math.sqrt(own_ss / own_df[0]),
        math.sqrt(own_noise),
        _f_p(own_ss / own_df[0], own_noise, own_df),
        own_df,
    )


def _f_p(mean_square: float, noise: float, df: tuple[int, int]) -> float:
    """The chance that noise of estimated variance ``noise`` alone gives a mean square this large or larger (F with
    ``df`` degrees of freedom); without noise (under :data:`TINY_VARIANCE`), 1 for no difference and 0 for any."""
    if noise < TINY_VARIANCE:
        return 1.0 if mean_square < TINY_VARIANCE else 0.0
    if df[1] < 1:
        return math.nan
    return float(scipy_stats.f.sf(mean_square / noise, *df))


def _effects_lines(found: RunEffects) -> list[str]:
    def said(p: float, df: tuple[int, int], beyond: str, within: str) -> str:
        test = f"F test on {df[0]} and {df[1]} df, "
        if math.isnan(p):
            return test + "no test: too few curves"
        return test + f"p = {p:.2g}: " + (beyond if p < EFFECT_ALPHA else within)

    shared = ", ".join(f"{math.expm1(effect):+.1%}" for effect in found.effects)
    left = f"; left out, a censored or single curve in some run: {', '.join(found.dropped)}" if found.dropped else ""
    return [
        f"  where the runs differ (log scale, over {len(found.configs)} configs with a geometric mean in every run"
        f"{left}):",
        f"    shared by every config of a run: {shared} (sd {found.effect_sd:.1%}); the curves' noise and the "
        f"exponent's error give about {found.effect_noise_sd:.1%} ("
        + said(
            found.effect_p,
            found.effect_df,
            "beyond that noise: a difference between the runs, which more curves per run would not remove",
            "not distinguishable from that noise",
        )
        + ")",
        f"    each config's own: sd {found.own_sd:.1%}; its curves' noise about {found.own_noise_sd:.1%} ("
        + said(
            found.own_p,
            found.own_df,
            "beyond that noise",
            "not distinguishable from that noise, which more curves shrink",
        )
        + ")",
        f"    (with {len(found.effects)} runs the first test can show a large run effect, not rule out a small one)",
    ]


def at_shared_memory(
    views: Sequence[CapacityView], bundles: Sequence[Bundle], key: ViewKey, exponent: float
) -> tuple[list[CapacityView], float] | None:
    """What if each curve's figure at the reference speed were also brought to one memory speed shared by the runs:
    times (the curve's memory probe / R) ^ ``exponent``, R the median of the runs' own references of the memory
    probe (each run's 10th percentile). The exponent is fixed, not fitted: a run's own fit did not pin it down (set
    12), and a reference of the run's own cancels a difference between runs by construction. Each config's figure
    becomes the geometric mean of its curves with the t interval on their logs (without the first exponent's error);
    configs without a geometric mean (a censored curve) are left as they are. ``None`` (with the reason left to the
    caller) when a run has no memory probe reading or a curve lacks one."""
    references = [reference_probe(bundle.runs, memory=True) for bundle in bundles]
    if any(value is None for value in references):
        return None
    shared = statistics.median(value for value in references if value is not None)
    out = []
    for view, bundle in zip(views, bundles, strict=True):
        runs = {run.id: run for run in bundle.runs}
        chase: dict[tuple[str, int], float | None] = {
            (result.config, result.repetition): curve_probe(result, runs, memory=True)
            for result in bundle.capacity
            if (result.model, result.scenario, result.arrivals, result.slo_p99_ms) == key
        }
        values: dict[str, tuple[tuple[int, float], ...]] = {}
        for config, curves in view.reference_values.items():
            readings = [chase.get((config, repetition)) for repetition, _ in curves]
            if any(reading is None for reading in readings):
                return None
            values[config] = tuple(
                (repetition, value * (reading / shared) ** exponent)
                for (repetition, value), reading in zip(curves, readings, strict=True)
                if reading is not None
            )
        figures = {
            **view.at_reference,
            **{config: log_mean_interval([value for _, value in curves]) for config, curves in values.items()},
        }
        out.append(replace(view, at_reference=figures, reference_values=values))
    return out, shared


def order(view: CapacityView) -> list[str]:
    """The view's configs by their figure (at the reference speed where adjusted), highest first."""
    ranked = [(value, config) for config in view.configs if (value := _value(_figure(view, config)))]
    return [config for _, config in sorted(ranked, reverse=True)]


def _number(estimate: Estimate | None) -> str:
    value = _value(estimate)
    return "-" if value is None else f"{value:.0f}"


def _cell(estimate: Estimate | None) -> str:
    if estimate is None or _value(estimate) is None:
        return "-"
    low = "open" if estimate.ci_low is None else f"{estimate.ci_low:.0f}"
    high = "open" if estimate.ci_high is None else f"{estimate.ci_high:.0f}"
    return f"{_number(estimate)} [{low}, {high}]" if estimate.level is not None else _number(estimate)


def _us(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) else "-"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report(
    paths: Sequence[Path],
    model: str | None,
    *,
    reference_us: float | None = None,
    noise_correction: bool = False,
    shared_reference: bool = False,
    memory: bool = False,
    memory_exponent: float | None = None,
) -> list[str]:
    """The lines printed for ``paths`` (one bundle per run) under the rule ``reference_us`` (None: each run's own, or
    with ``shared_reference`` the median of the runs' own), ``noise_correction`` and ``memory`` (the memory probe's
    term, always at each run's own reference); ``memory_exponent``: each figure also at the runs' shared memory speed
    with this fixed exponent (:func:`at_shared_memory`)."""
    bundles = [load_bundle(path) for path in paths]
    lines: list[str] = []
    if reference_us is None and shared_reference:
        own = [reference_probe(bundle.runs) for bundle in bundles]
        known = [value for value in own if value is not None]
        if not known:
            lines.append("no shared reference: no bundle has a probe reading (each run is judged as the report does)")
        else:
            reference_us = statistics.median(known)
            lines.append(
                f"shared reference {reference_us:.0f} us: the median of the runs' own "
                f"({', '.join('-' if value is None else f'{value:.0f}' for value in own)} us)"
            )
    rule = SpeedRule(reference_us, noise_correction, memory)
    per_run: list[dict[ViewKey, CapacityView]] = []
    for bundle in bundles:
        views = capacity_views(bundle, rule)
        per_run.append({(v.model, v.scenario, v.arrivals, v.slo_p99_ms): v for v in views if model in (None, v.model)})
    keys = [key for key in per_run[0] if all(key in views for views in per_run[1:])]
    if not keys:
        return [*lines, "no capacity view is in every bundle" + (f" for model {model}" if model else "")]
    for key in keys:
        views = [views[key] for views in per_run]
        what_if = None
        if memory_exponent is not None:
            moved = at_shared_memory(views, bundles, key, memory_exponent)
            if moved is None:
                what_if = (
                    "  no shared memory speed: a run or a curve has no memory probe reading (figures as the report's)"
                )
            else:
                views = moved[0]
                every = [c for c in views[0].configs if all(c in view.reference_values for view in views)]
                what_if = (
                    f"  what if: each figure with a geometric mean also at the runs' shared memory speed "
                    f"{moved[1]:.0f} us (the median of their own 10th percentiles) with the fixed exponent "
                    f"{memory_exponent:g}: {len(every)} of {len(views[0].configs)} configs in every run (the others "
                    "as the report's, at their own memory speed)"
                )
        adjusted = all(view.adjusted for view in views)
        lines.append(
            f"== {key[0]} / {key[1]} / {key[2]} arrivals, p99 <= {key[3]:g} ms: {len(views)} runs, "
            + ("capacity at the reference speed" if adjusted else "capacity as measured (not every run adjusted)")
        )
        if what_if is not None:
            lines.append(what_if)
        rows = agreement(views)
        for row in rows:
            shares = "/".join("-" if share is None else f"{share:.2f}" for share in row.peak_shares)
            lines.append(
                f"  {row.config}: "
                + "; ".join(_cell(figure) for figure in row.figures)
                + f"  worst deviation {_percent(row.deviation)}, intervals overlap: "
                + ("-" if row.overlap is None else "yes" if row.overlap else "NO")
                + f"; as measured {'/'.join(_number(m) for m in row.measured)} "
                + f"({_percent(row.measured_deviation)}); capacity / closed-loop peak {shares}"
            )
        deviations = [row.deviation for row in rows if row.deviation is not None]
        measured = [row.measured_deviation for row in rows if row.measured_deviation is not None]
        lines.append(
            f"  worst deviation {_percent(max(deviations) if deviations else None)} "
            f"(as measured {_percent(max(measured) if measured else None)}); "
            f"every config's intervals overlap: {all(row.overlap for row in rows)}"
        )
        if (found := run_effects(views)) is not None:
            lines += _effects_lines(found)
        orders = [order(view) for view in views]
        lines.append("  same order in every run: " + str(all(ranked == orders[0] for ranked in orders)))
        for index, (view, ranked) in enumerate(zip(views, orders, strict=True), start=1):
            lines.append(f"  run {index}: " + " > ".join(ranked))
            adjustment = view.speed
            if adjustment is not None:
                lines.append(
                    f"    probe median {adjustment.probe_median or 0:.0f} us ({adjustment.probe_low or 0:.0f} to "
                    f"{adjustment.probe_high or 0:.0f}), reference {_us(adjustment.reference_us)} us, exponent "
                    f"{adjustment.exponent:.2f} (fit {-(adjustment.slope or 0.0):.2f}, reliability "
                    f"{adjustment.reliability:.2f})"
                    + ("" if adjustment.applied else f"; not applied: {adjustment.reason}")
                )
                if (term := adjustment.memory) is not None:
                    lines.append(
                        f"    memory probe: reference {term.reference_us:.0f} us, exponent {term.exponent:.2f} (fit "
                        f"{-term.slope:.2f}" + ("" if term.slope_se is None else f" +/- {term.slope_se:.2f}") + ")"
                    )
                elif adjustment.memory_reason:
                    lines.append(f"    no memory term: {adjustment.memory_reason}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundles", nargs="+", type=Path, help="results bundles, one per run (two or more)")
    parser.add_argument("--model", help="only this model's views")
    parser.add_argument("--reference-us", type=float, help="what if: bring every figure to this probe reading (us)")
    parser.add_argument(
        "--noise-correction", action="store_true", help="what if: divide the exponent by the probes' reliability"
    )
    parser.add_argument(
        "--shared-reference", action="store_true", help="every run at the median of the runs' own references"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="what if: add the memory probe's term (bundles of a plan with memory_probe_steps)",
    )
    parser.add_argument(
        "--memory-exponent",
        type=float,
        help="what if: also bring every curve to the runs' shared memory speed with this fixed exponent",
    )
    args = parser.parse_args(argv)
    if len(args.bundles) < 2:
        parser.error("give two or more bundles")
    if args.reference_us is not None and not args.reference_us > 0:
        parser.error("--reference-us must be a positive number of microseconds")
    if args.noise_correction and args.memory:
        parser.error("--noise-correction is for the first probe alone: not with --memory")
    if args.memory_exponent is not None and not 0.0 <= args.memory_exponent <= 5.0:
        parser.error("--memory-exponent must be between 0 and 5")
    if args.memory_exponent is not None and args.memory:
        parser.error("give --memory (a fitted term, own references) or --memory-exponent (fixed, shared), not both")
    if args.reference_us is not None and args.shared_reference:
        parser.error("give --reference-us or --shared-reference, not both")
    lines = report(
        args.bundles,
        args.model,
        reference_us=args.reference_us,
        noise_correction=args.noise_correction,
        shared_reference=args.shared_reference,
        memory=args.memory,
        memory_exponent=args.memory_exponent,
    )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
