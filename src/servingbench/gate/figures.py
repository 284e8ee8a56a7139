"""What the gate judges, read from a bundle the way reports read it: one value per figure, arm and repetition.

A *figure* is a metric of one model x scenario (throughput, p50, p99, server CPU per request). An *arm* is a
config of the bundle: ``base`` and ``head`` in an A/B run, the plan's one config otherwise. Only valid runs of the
plan's scenarios count (capacity-search steps run at rates chosen per config, so they never pair).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from servingbench.reports.bundle import Bundle, Run
from servingbench.reports.metrics import metric_value
from servingbench.reports.stats import MIN_REPETITIONS_FOR_INTERVAL

__all__ = [
    "GATE_METRICS",
    "MIN_UNITS",
    "FigureKey",
    "GateMetric",
    "arm_values",
    "cost_log",
    "invalid_summary",
    "positive",
    "run_value",
]

MIN_UNITS = MIN_REPETITIONS_FOR_INTERVAL
"""Fewest independent units (paired repetitions, blocks, or calibration runs) behind any interval or verdict word:
the report's own minimum."""


@dataclass(frozen=True)
class GateMetric:
    """A judged metric. ``default_threshold``: the smallest relative change in cost that is material when no
    calibration says otherwise (0.05 = 5 %)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    default_threshold: float
    decimals: int


MATERIAL_DEFAULT = 0.05  # 5 % more time or CPU per request is worth failing a build for
MATERIAL_DEFAULT_TAIL = 0.10  # p99 swings more than the median between runs of the same code

GATE_METRICS: dict[str, GateMetric] = {
    metric.name: metric
    for metric in (
        GateMetric("rps", "throughput", "req/s", True, MATERIAL_DEFAULT, 1),
        GateMetric("p50", "p50 latency", "ms", False, MATERIAL_DEFAULT, 3),
        GateMetric("p99", "p99 latency", "ms", False, MATERIAL_DEFAULT_TAIL, 3),
        GateMetric("cpu_us_per_request", "server CPU per request", "µs", False, MATERIAL_DEFAULT, 1),
    )
}


class FigureKey(NamedTuple):
    """One judged figure: a metric of a model x scenario."""

    model: str
    scenario: str
    metric: str

    def label(self) -> str:
        return f"{self.model} {self.scenario} {GATE_METRICS[self.metric].label}"


def positive(value: float | None) -> float | None:
    """``value`` when it is a positive finite number, else ``None`` (a ratio needs both sides above zero)."""
    return value if value is not None and math.isfinite(value) and value > 0.0 else None


def arm_values(bundle: Bundle, config: str) -> dict[FigureKey, dict[int, float]]:
    """Every figure of ``config``'s valid scenario runs: ``{figure: {repetition: value}}`` (positive values only)."""
    figures: dict[FigureKey, dict[int, float]] = {}
    for run in sorted(bundle.scenario_runs, key=lambda item: item.repetition):
        if run.config != config:
            continue
        for metric in GATE_METRICS:
            value = positive(metric_value(run, metric))
            if value is not None:
                figures.setdefault(FigureKey(run.model, run.scenario, metric), {}).setdefault(run.repetition, value)
    return figures


def cost_log(ratio_log: float, metric: str) -> float:
    """A log ratio head / base turned into a log ratio of *cost*: for throughput the inverse, so that + always means
    more time or CPU per request."""
    return -ratio_log if GATE_METRICS[metric].higher_is_better else ratio_log


def run_value(values: Iterable[float]) -> float:
    """The one value a whole run gives for a figure: the median over its repetitions (robust to one odd window)."""
    return float(statistics.median(values))


MAX_REASONS = 3  # distinct invalid reasons quoted per arm


def invalid_summary(runs: Sequence[Run], configs: Mapping[str, str]) -> list[str]:
    """One line per arm with invalid runs: how many, of how many, and their most common reasons.

    ``configs`` maps a config name to the label used in the line (e.g. ``{"base": "base", "head": "head"}``).
    """
    lines = []
    for config, label in configs.items():
        mine = [run for run in runs if run.config == config and not run.is_step]
        bad = [run for run in mine if not (run.valid and run.status == "ok")]
        if not bad:
            continue
        reasons = [run.invalid_reason or run.status for run in bad]
        common = sorted(set(reasons), key=lambda reason: -reasons.count(reason))[:MAX_REASONS]
        lines.append(f"{label}: {len(bad)} of {len(mine)} runs invalid ({'; '.join(common)})")
    return lines
