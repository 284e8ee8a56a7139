"""The metrics the report and compare talk about: names, labels, units, which way is better, how to read a run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .bundle import Run

__all__ = [
    "COMPARED_METRICS",
    "LATENCY_METRICS",
    "METRICS",
    "VERDICT_METRICS",
    "MetricSpec",
    "metric_by_repetition",
    "metric_samples",
    "metric_value",
]


@dataclass(frozen=True)
class MetricSpec:
    """A metric of one run: ``label`` for humans, ``unit`` for axes and tables; ``better``/``worse`` are the words a
    verdict uses for an arm that is significantly better or worse on it ("faster"/"slower" for speed)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    better: str = "faster"
    worse: str = "slower"


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("rps", "throughput", "req/s", True),
        MetricSpec("p50", "p50 latency", "ms", False),
        MetricSpec("p90", "p90 latency", "ms", False),
        MetricSpec("p99", "p99 latency", "ms", False),
        MetricSpec("p999", "p99.9 latency", "ms", False),
        MetricSpec("cpu_us_per_request", "server CPU per request", "µs", False, "cheaper", "costlier"),
        MetricSpec("rss_mb_per_worker", "RSS per worker", "MB", False, "smaller", "larger"),
    )
}
LATENCY_METRICS = ("p50", "p90", "p99", "p999")
VERDICT_METRICS = ("rps", "p50", "p99")
COMPARED_METRICS = ("rps", "p50", "p99", "cpu_us_per_request")


def metric_value(run: Run, metric: str) -> float | None:
    """The value of ``metric`` for one run, or ``None`` when the run did not record it.

    Throughput of an open-loop run is the achieved rate when recorded. RSS per worker is the mean over workers.
    """
    if metric == "rps":
        return run.achieved_rps if run.kind == "open" and run.achieved_rps is not None else run.rps
    if metric in LATENCY_METRICS:
        return run.latency_ms.get(metric)
    if metric == "cpu_us_per_request":
        return run.server_cpu_us_per_request
    if metric == "rss_mb_per_worker":
        per_worker = run.server_rss_mb_per_worker
        return sum(per_worker) / len(per_worker) if per_worker else None
    raise KeyError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def metric_samples(runs: Iterable[Run], metric: str) -> list[float]:
    """One value per run that recorded ``metric``, in repetition order."""
    samples: list[float] = []
    for run in sorted(runs, key=lambda item: item.repetition):
        value = metric_value(run, metric)
        if value is not None:
            samples.append(value)
    return samples


def metric_by_repetition(runs: Iterable[Run], metric: str) -> dict[int, float]:
    """``{repetition: value}`` of ``metric`` over the runs that recorded it (one run per repetition expected; a
    repeated repetition keeps its last run)."""
    values: dict[int, float] = {}
    for run in sorted(runs, key=lambda item: (item.repetition, item.order or 0)):
        value = metric_value(run, metric)
        if value is not None:
            values[run.repetition] = value
    return values
