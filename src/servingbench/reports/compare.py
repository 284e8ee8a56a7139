"""Compare two bundles: for every config x model x scenario in both, the ratio current / baseline of each metric.

The two bundles' repetitions are not paired (they ran at different times), so each cell is the ratio of geometric
means with a Welch t interval on log values (:func:`servingbench.reports.stats.unpaired_ratio`), from at least 5
valid repetitions a side. The intervals are simultaneous over every cell that has one (Bonferroni: each at
1 - 0.05 / cells), so the page's counts of significantly better and worse cells are corrected for how many were
looked at. :func:`compare_metrics` returns the comparison as data; :func:`compare_bundles` writes it as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servingbench.files import write_atomic

from .bundle import Bundle, Run, load_bundle
from .html import environment
from .metrics import COMPARED_METRICS, METRICS, metric_samples
from .stats import (
    CONFIDENCE,
    MIN_REPETITIONS_FOR_INTERVAL,
    UNSTABLE_CV,
    Direction,
    coefficient_of_variation,
    direction_of,
    unpaired_ratio,
)
from .verdict import config_order, group_runs

__all__ = [
    "COMPARE_FILE",
    "COMPARE_TEMPLATE",
    "Comparison",
    "EnvironmentDiff",
    "compare_bundles",
    "compare_metrics",
    "environment_diff",
]

COMPARE_FILE = "compare.html"
COMPARE_TEMPLATE = "compare.html.j2"
FINGERPRINT_KEYS = ("cpu_model", "logical_cpus", "usable_cpus", "cpu_quota", "kernel", "python", "platform")

GroupKey = tuple[str, str, str]  # config, model, scenario


@dataclass(frozen=True)
class Comparison:
    """One metric of one config x model x scenario: ``ratio`` = current / baseline geometric mean.

    ``ci_low``/``ci_high`` bound the ratio, simultaneously over the ``family_size`` cells that have an interval
    (each at ``level``); ``None`` with fewer than 5 valid repetitions on a side. ``direction`` is "better" or "worse"
    only when ``significant`` (the interval excludes 1), else "same", which means "not shown different", not "equal".
    """

    config: str
    model: str
    scenario: str
    metric: str
    baseline_median: float
    current_median: float
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    direction: Direction
    baseline_n: int = 0
    current_n: int = 0
    unstable: bool = False
    family_size: int = 1
    level: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        """True when both sides had enough repetitions for an interval."""
        return self.ci_low is not None and self.ci_high is not None

    @property
    def interval_label(self) -> str:
        """What the interval is, e.g. "95% simultaneous over 24 cells (Welch t on logs, unpaired)"."""
        if not self.has_interval:
            return f"fewer than {MIN_REPETITIONS_FOR_INTERVAL} repetitions a side: no interval"
        if self.family_size > 1:
            return (
                f"{CONFIDENCE:.0%} simultaneous over {self.family_size} cells (Bonferroni; Welch t on logs, unpaired)"
            )
        return f"{CONFIDENCE:.0%} Welch t interval on log values (unpaired)"

    @property
    def change_pct(self) -> float | None:
        """(ratio - 1) in percent, e.g. -20.0 for a 0.80 ratio."""
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0


@dataclass(frozen=True)
class EnvironmentDiff:
    """How the two bundles' environments differ; ``same_fingerprint`` is false when either lacks one."""

    same_fingerprint: bool
    baseline_fingerprint: str | None
    current_fingerprint: str | None
    differences: tuple[tuple[str, str, str], ...]  # key, baseline value, current value


def _as_bundle(value: Bundle | Path | str) -> Bundle:
    return value if isinstance(value, Bundle) else load_bundle(value)


def _valid_groups(bundle: Bundle) -> dict[GroupKey, list[Run]]:
    """Valid runs per config x model x scenario; capacity-search steps (rates chosen per search) are no group."""
    groups: dict[GroupKey, list[Run]] = {}
    for (model, scenario), by_config in group_runs(bundle.scenario_runs, config_order(bundle)).items():
        for config, runs in by_config.items():
            groups[(config, model, scenario)] = runs
    return groups


def _compare_one(
    key: GroupKey, metric: str, baseline: Sequence[float], current: Sequence[float], family_size: int
) -> Comparison:
    level = 1.0 - (1.0 - CONFIDENCE) / family_size
    estimate = unpaired_ratio(baseline, current, level=level)
    spreads = [coefficient_of_variation(samples) for samples in (baseline, current)]
    config, model, scenario = key
    return Comparison(
        config=config,
        model=model,
        scenario=scenario,
        metric=metric,
        baseline_median=_median(baseline),
        current_median=_median(current),
        ratio=estimate.ratio,
        ci_low=estimate.low,
        ci_high=estimate.high,
        significant=estimate.significant,
        direction=direction_of(estimate, higher_is_better=METRICS[metric].higher_is_better),
        baseline_n=len(baseline),
        current_n=len(current),
        unstable=any(spread is not None and spread > UNSTABLE_CV for spread in spreads),
        family_size=family_size,
        level=level,
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def compare_metrics(
    baseline: Bundle | Path | str,
    current: Bundle | Path | str,
    metrics: Sequence[str] = COMPARED_METRICS,
) -> list[Comparison]:
    """Every metric of every config x model x scenario with valid runs in both bundles, in baseline order.

    Metrics: names from :data:`servingbench.reports.metrics.METRICS` (default rps, p50, p99, cpu_us_per_request);
    a metric a group did not record on either side is skipped. Intervals are simultaneous (Bonferroni) over the
    returned cells that have one, so asking for fewer metrics gives narrower intervals.
    """
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    base_groups, current_groups = _valid_groups(_as_bundle(baseline)), _valid_groups(_as_bundle(current))
    cells: list[tuple[GroupKey, str, list[float], list[float]]] = []
    for key, base_runs in base_groups.items():
        if key not in current_groups:
            continue
        for metric in metrics:
            base_samples = metric_samples(base_runs, metric)
            current_samples = metric_samples(current_groups[key], metric)
            if base_samples and current_samples:
                cells.append((key, metric, base_samples, current_samples))
    family = max(1, sum(min(len(base), len(cur)) >= MIN_REPETITIONS_FOR_INTERVAL for _, _, base, cur in cells))
    return [_compare_one(key, metric, base, cur, family) for key, metric, base, cur in cells]


def _text(value: Any) -> str:
    return "not recorded" if value is None else str(value)


def environment_diff(baseline: Bundle, current: Bundle) -> EnvironmentDiff:
    """Fingerprints and the fingerprint inputs (CPU, kernel, Python, package versions) that differ."""
    differences: list[tuple[str, str, str]] = []
    for key in FINGERPRINT_KEYS:
        before, after = baseline.environment.get(key), current.environment.get(key)
        if before != after:
            differences.append((key, _text(before), _text(after)))
    packages_before = _packages(baseline.environment)
    packages_after = _packages(current.environment)
    for name in sorted(set(packages_before) | set(packages_after)):
        if packages_before.get(name) != packages_after.get(name):
            differences.append((name, _text(packages_before.get(name)), _text(packages_after.get(name))))
    same = baseline.fingerprint is not None and baseline.fingerprint == current.fingerprint
    return EnvironmentDiff(same, baseline.fingerprint, current.fingerprint, tuple(differences))


def _packages(environment: Mapping[str, Any]) -> dict[str, str]:
    raw = environment.get("packages")
    return {str(name): str(version) for name, version in raw.items()} if isinstance(raw, dict) else {}


@dataclass(frozen=True)
class _Row:
    config: str
    label: str
    model: str
    scenario: str
    cells: Mapping[str, Comparison]

    @property
    def changed(self) -> bool:
        return any(cell.significant for cell in self.cells.values())


def _rows(comparisons: Sequence[Comparison], labels: Mapping[str, str]) -> list[_Row]:
    grouped: dict[GroupKey, dict[str, Comparison]] = {}
    for item in comparisons:
        grouped.setdefault((item.config, item.model, item.scenario), {})[item.metric] = item
    return [
        _Row(config, labels.get(config, config), model, scenario, cells)
        for (config, model, scenario), cells in grouped.items()
    ]


def _only_in(first: Bundle, second: Bundle) -> list[GroupKey]:
    second_keys = set(_valid_groups(second))
    return [key for key in _valid_groups(first) if key not in second_keys]


def _output_path(out: Path) -> Path:
    return out / COMPARE_FILE if out.is_dir() else out


def compare_bundles(a: Path | str, b: Path | str, out: Path | str) -> Path:
    """Write the comparison of bundle ``b`` (current) against ``a`` (baseline) as HTML; return the file written.

    ``out`` is the HTML file, or a directory to write ``compare.html`` into.
    """
    baseline, current = load_bundle(a), load_bundle(b)
    comparisons = compare_metrics(baseline, current)
    labels = {
        **{name: baseline.label(name) for name in baseline.configs},
        **{n: current.label(n) for n in current.configs},
    }
    html = (
        environment()
        .get_template(COMPARE_TEMPLATE)
        .render(
            baseline=baseline,
            current=current,
            env=environment_diff(baseline, current),
            rows=_rows(comparisons, labels),
            metrics=[METRICS[name] for name in COMPARED_METRICS],
            comparisons=comparisons,
            only_baseline=_only_in(baseline, current),
            only_current=_only_in(current, baseline),
            labels=labels,
            min_pairs=MIN_REPETITIONS_FOR_INTERVAL,
        )
    )
    target = _output_path(Path(out))
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(target, html)
