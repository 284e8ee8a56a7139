"""The bundle's aggregated figures, for machines: ``aggregates.json`` and ``aggregates.csv`` beside ``results.json``.

The same grouping and statistics as the HTML report and the console summary (:func:`verdicts`, :func:`summary_rows`,
:func:`capacity_views`, :func:`tax_tables`), flattened into rows: per model x scenario x config x metric, the
median over valid repetitions with its interval and the verdict against the reference; per capacity curve, each
config's capacity with its censoring and the p99 and p50 at each offered rate. Format: ``docs/results-format.md``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from servingbench.files import dumps_finite, write_atomic

from .bundle import Bundle
from .capacity import CURVE_METRICS, CapacityView, capacity_views
from .metrics import METRICS
from .stats import CONFIDENCE, MEDIAN, Estimate, PairedComparison
from .tables import SUMMARY_METRICS, summary_rows
from .tax import TaxTable, tax_tables
from .verdict import ConfigOutcome, GroupVerdict, plan_margin, plan_reference, verdicts

__all__ = [
    "AGGREGATES_CSV",
    "AGGREGATES_FORMAT",
    "AGGREGATES_JSON",
    "AGGREGATES_VERSION",
    "CSV_COLUMNS",
    "AggregateRow",
    "aggregate_rows",
    "aggregates_document",
    "write_aggregates",
]

AGGREGATES_JSON = "aggregates.json"
AGGREGATES_CSV = "aggregates.csv"
AGGREGATES_FORMAT = "servingbench-aggregates"
AGGREGATES_VERSION = 1
CAPACITY_METRIC = "capacity_rps"
REFERENCE_CAPACITY_METRIC = "capacity_rps_at_reference_speed"
"""Written beside ``capacity_rps`` (as measured) where the report has a capacity at a reference speed (by default the
run's own fast speed, :mod:`.speed`); no verdict fields (the verdicts are on the measured capacity)."""
VALUE_DIGITS = 6  # significant digits written: more than any figure here is measured to
Key = tuple[str, str, str, str]  # model, scenario, config, metric


@dataclass(frozen=True)
class AggregateRow:
    """One figure: ``kind`` "metric" (a scenario's runs), "capacity" (a config's capacity at the SLO) or "curve" (the
    p99 or p50 at one offered rate). ``median_bound`` is "at most" or "at least" where censoring leaves only a
    bound; ``ci_low``/``ci_high`` are ``None`` without an interval (fewer than 5 repetitions) or at an end censoring
    leaves open. The verdict fields compare ``config`` with ``reference`` (the best config, or the plan's), from
    ``pairs`` paired repetitions: ``ratio`` = config / reference, ``outcome`` one of best, reference, faster, slower,
    cheaper, costlier, smaller, larger, equivalent, inconclusive, range (fewer than 5 pairs), censored."""

    kind: str
    model: str
    scenario: str
    config: str
    metric: str
    unit: str
    median: float | None
    median_bound: str | None
    ci_low: float | None
    ci_high: float | None
    level: float | None
    repetitions: int
    censored_below: int = 0
    censored_above: int = 0
    unstable: bool = False
    outcome: str | None = None
    reference: str | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    pairs: int | None = None
    interval: str | None = None
    arrivals: str | None = None
    slo_p99_ms: float | None = None
    offered_rps: float | None = None
    statistic: str = MEDIAN
    """What ``median`` holds: "median", or "geometric mean" (the capacity at the reference speed of a config with no
    censored repetition; its interval is then the t interval on the log values, see :func:`log_mean_interval`)."""


CSV_COLUMNS = tuple(AggregateRow.__dataclass_fields__)


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{VALUE_DIGITS}g}")


def _estimate_fields(estimate: Estimate) -> dict[str, Any]:
    bound = "at most" if estimate.median_is_bound else "at least" if estimate.median_at_least else None
    return {
        "median": _round(estimate.median),
        "median_bound": bound,
        "ci_low": _round(estimate.ci_low),
        "ci_high": _round(estimate.ci_high),
        "level": _round(estimate.level),
        "repetitions": estimate.n,
        "censored_below": estimate.censored_below,
        "censored_above": estimate.censored_above,
        "unstable": estimate.unstable,
        "statistic": estimate.statistic,
    }


def _comparison_fields(outcome: ConfigOutcome, reference: str | None) -> dict[str, Any]:
    comparison: PairedComparison | None = outcome.comparison
    fields: dict[str, Any] = {"outcome": outcome.outcome, "reference": reference}
    if comparison is not None:
        fields.update(
            ratio=_round(comparison.ratio),
            ratio_low=_round(comparison.low),
            ratio_high=_round(comparison.high),
            pairs=comparison.pairs,
            interval=comparison.interval_label,
        )
    return fields


def _verdict_cells(bundle: Bundle, groups: list[GroupVerdict]) -> dict[Key, tuple[ConfigOutcome, str]]:
    """Each verdict cell by (model, scenario, config, metric), with its reference config."""
    cells: dict[Key, tuple[ConfigOutcome, str]] = {}
    only_config = next(iter({run.config for run in bundle.scenario_runs}), "")
    for group in groups:
        for verdict in group.metrics:
            for item in verdict.outcomes:
                if group.arms == "models":  # the arms are models of the one config
                    key = (item.config, group.info.name, only_config, verdict.metric.name)
                else:
                    key = (group.info.model, group.info.name, item.config, verdict.metric.name)
                cells[key] = (item, verdict.reference)
    return cells


def _metric_rows(bundle: Bundle) -> Iterator[AggregateRow]:
    cells = _verdict_cells(bundle, verdicts(bundle))
    for row in summary_rows(bundle):
        for metric in SUMMARY_METRICS:
            estimate = row.estimates.get(metric)
            if estimate is None:
                continue
            key = (row.info.model, row.info.name, row.config, metric)
            verdict = cells.get(key)
            fields = _estimate_fields(verdict[0].estimate if verdict else estimate)
            if verdict is not None:
                fields.update(_comparison_fields(*verdict))
            yield AggregateRow("metric", row.info.model, row.info.name, row.config, metric, METRICS[metric].unit,
                               **fields)  # fmt: skip


def _capacity_rows(view: CapacityView) -> Iterator[AggregateRow]:
    where = {"arrivals": view.arrivals, "slo_p99_ms": view.slo_p99_ms}
    reference = view.verdict.reference if view.verdict is not None else None
    for outcome in view.outcomes:
        fields = {**_estimate_fields(outcome.estimate), **_comparison_fields(outcome, reference), **where}
        yield AggregateRow("capacity", view.model, view.scenario, outcome.config, CAPACITY_METRIC, "req/s", **fields)
        at_speed = view.at_speed(outcome.config)
        if at_speed is not None:
            fields = {**_estimate_fields(at_speed), **where}
            yield AggregateRow("capacity", view.model, view.scenario, outcome.config, REFERENCE_CAPACITY_METRIC,
                               "req/s", **fields)  # fmt: skip
    if not view.curve:
        return
    for rate_row in view.rows:
        for config, cell in rate_row.cells.items():
            for metric in CURVE_METRICS:
                estimate = cell.estimates.get(metric)
                if estimate is None:
                    continue
                fields = {**_estimate_fields(estimate), **where, "offered_rps": rate_row.rate}
                yield AggregateRow("curve", view.model, view.scenario, config, metric, "ms", **fields)


def aggregate_rows(bundle: Bundle) -> list[AggregateRow]:
    """Every aggregated figure of the bundle: metric rows, then capacity and curve rows per capacity view."""
    rows = list(_metric_rows(bundle))
    for view in capacity_views(bundle):
        rows += _capacity_rows(view)
    return rows


def _tax_json(table: TaxTable) -> list[dict[str, Any]]:
    entries = []
    for cell in table.cells:
        difference = cell.cpu_difference
        entries.append(
            {
                "model": table.model,
                "scenario": table.info.name,
                "kind": cell.pair.kind,
                "config": cell.pair.config,
                "baseline": cell.pair.baseline,
                "cpu_us_per_request": _round(cell.cpu.median) if cell.cpu else None,
                "baseline_cpu_us_per_request": _round(cell.baseline_cpu.median) if cell.baseline_cpu else None,
                "cpu_difference_us": _round(difference.mean) if difference else None,
                "cpu_difference_low": _round(difference.low) if difference else None,
                "cpu_difference_high": _round(difference.high) if difference else None,
                "cpu_outcome": cell.cpu_words[0],
                "cpu_ratio": _round(cell.cpu_ratio.ratio) if cell.cpu_ratio else None,
                "throughput_outcome": cell.throughput_words[0],
                "throughput_ratio": _round(cell.throughput.ratio) if cell.throughput else None,
                "throughput_ratio_low": _round(cell.throughput.low) if cell.throughput else None,
                "throughput_ratio_high": _round(cell.throughput.high) if cell.throughput else None,
                "pairs": difference.pairs if difference else None,
                "interval": table.family.label,
            }
        )
    return entries


def aggregates_document(bundle: Bundle) -> dict[str, Any]:
    """``aggregates.json`` as a JSON object (see ``docs/results-format.md``)."""
    return {
        "format": AGGREGATES_FORMAT,
        "version": AGGREGATES_VERSION,
        "results_version": bundle.version,
        "created": bundle.created,
        "complete": bundle.complete,
        "confidence": CONFIDENCE,
        "equivalence_margin": plan_margin(bundle),
        "reference": plan_reference(bundle),
        "rows": [asdict(row) for row in aggregate_rows(bundle)],
        "where_the_time_goes": [entry for table in tax_tables(bundle) for entry in _tax_json(table)],
    }


def _csv(rows: list[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row[key]) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_aggregates(bundle: Bundle) -> tuple[Path, Path]:
    """Write ``aggregates.json`` and ``aggregates.csv`` into the bundle directory (atomically); return both paths."""
    document = aggregates_document(bundle)
    json_path = write_atomic(bundle.path / AGGREGATES_JSON, dumps_finite(document))
    csv_path = write_atomic(bundle.path / AGGREGATES_CSV, _csv(document["rows"]))
    return json_path, csv_path
