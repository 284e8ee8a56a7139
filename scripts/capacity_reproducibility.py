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
probe's term (runs of a plan with ``memory_probe_steps``; set 12 in docs/measurements.md)::

    .venv/bin/python scripts/capacity_reproducibility.py --reference-us 500 --noise-correction RUN1/latest ...
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script (scripts/ on sys.path, not the repository): make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servingbench.reports.bundle import load_bundle
from servingbench.reports.capacity import CapacityView, capacity_views
from servingbench.reports.speed import SpeedRule, reference_probe
from servingbench.reports.stats import Estimate

ViewKey = tuple[str, str, str, float]


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
) -> list[str]:
    """The lines printed for ``paths`` (one bundle per run) under the rule ``reference_us`` (None: each run's own, or
    with ``shared_reference`` the median of the runs' own), ``noise_correction`` and ``memory`` (the memory probe's
    term, always at each run's own reference)."""
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
        adjusted = all(view.adjusted for view in views)
        lines.append(
            f"== {key[0]} / {key[1]} / {key[2]} arrivals, p99 <= {key[3]:g} ms: {len(views)} runs, "
            + ("capacity at the reference speed" if adjusted else "capacity as measured (not every run adjusted)")
        )
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
    args = parser.parse_args(argv)
    if len(args.bundles) < 2:
        parser.error("give two or more bundles")
    if args.reference_us is not None and not args.reference_us > 0:
        parser.error("--reference-us must be a positive number of microseconds")
    if args.noise_correction and args.memory:
        parser.error("--noise-correction is for the first probe alone: not with --memory")
    if args.reference_us is not None and args.shared_reference:
        parser.error("give --reference-us or --shared-reference, not both")
    lines = report(
        args.bundles,
        args.model,
        reference_us=args.reference_us,
        noise_correction=args.noise_correction,
        shared_reference=args.shared_reference,
        memory=args.memory,
    )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
