"""Where the time goes: what a framework costs over its bare floor, what idiomatic code costs over equal work, and one
framework against another on the same server, in server CPU per request and in throughput.

A pair is two configs of the bundle that run on the same server kind with the same workers and the same in-flight
limit per worker (and the same route style where both have one), so they differ in the framework only:

- **framework tax**: a framework over the floor it is measured against (``configs[].baseline``, e.g. FastAPI over
  the bare ASGI callable);
- **idiomatic cost**: an idiomatic variant over its equal-work counterpart (FastAPI's own way over the adapter that
  hands the raw body to the shared core);
- **framework vs framework**: two equal-work frameworks on one server (e.g. FastAPI and Flask on Granian), which
  separates the framework from the server.

Each pair is compared in every closed-loop scenario of each model, paired by repetition: the CPU difference
(config - baseline, microseconds per request) with a paired t interval on the per-repetition differences, its ratio
and the throughput ratio with the paired t interval on log ratios (:func:`servingbench.reports.stats.compare_pair`),
whose interval decides the verdict word (the equivalence margin is relative). The intervals of one table (one model,
scenario and metric) are simultaneous over the pairs it shows (Bonferroni).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .bundle import Bundle, ConfigInfo, Run
from .metrics import METRICS
from .stats import (
    CONFIDENCE,
    Estimate,
    Family,
    PairedComparison,
    PairedDifference,
    compare_difference,
    compare_pair,
    median_interval,
    paired_differences,
    paired_log_ratios,
)
from .verdict import (
    ScenarioInfo,
    arm_values,
    config_order,
    group_runs,
    outcome_words,
    plan_margin,
    scenario_info,
)

__all__ = ["TAX_METRICS", "PairKind", "TaxCell", "TaxPair", "TaxTable", "tax_pairs", "tax_tables"]

PairKind = Literal["framework tax", "idiomatic cost", "framework vs framework"]
KIND_ORDER: tuple[PairKind, ...] = ("framework tax", "idiomatic cost", "framework vs framework")
TAX_METRICS = ("cpu_us_per_request", "rps")
EQUAL_WORK = "equal-work"
VARIANT = "variant"


@dataclass(frozen=True)
class TaxPair:
    """``config`` measured against ``baseline``: both on ``server`` with the same workers and in-flight limit."""

    kind: PairKind
    config: str
    baseline: str
    label: str
    baseline_label: str
    server: str

    @property
    def text(self) -> str:
        """e.g. "FastAPI / uvicorn (def) x1 over ASGI floor / uvicorn x1"."""
        joint = " vs " if self.kind == "framework vs framework" else " over "
        return f"{self.label}{joint}{self.baseline_label}"


@dataclass(frozen=True)
class TaxCell:
    """One pair in one scenario: each side's median CPU per request (µs), the paired difference and ratio of CPU per
    request and the throughput ratio, with the verdict words of the ratios (cheaper / costlier, faster / slower,
    equivalent, not settled, or no verdict below 5 pairs)."""

    pair: TaxPair
    cpu: Estimate | None
    baseline_cpu: Estimate | None
    cpu_difference: PairedDifference | None
    cpu_ratio: PairedComparison | None
    cpu_words: tuple[str, str, str]
    throughput: PairedComparison | None
    throughput_words: tuple[str, str, str]


@dataclass(frozen=True)
class TaxTable:
    """Every pair in one closed-loop scenario of one model; the intervals of each metric are simultaneous over the
    ``family`` (the pairs shown)."""

    model: str
    info: ScenarioInfo
    cells: tuple[TaxCell, ...]
    family: Family


def _same_conditions(one: ConfigInfo, other: ConfigInfo, *, route: bool) -> bool:
    """Same server kind, workers and in-flight limit per worker (and route style when asked and both have one)."""
    if one.server is None or one.server != other.server or one.workers != other.workers:
        return False
    if one.inflight_per_worker is not None and other.inflight_per_worker is not None:
        if one.inflight_per_worker != other.inflight_per_worker:
            return False
    return not (route and one.route is not None and other.route is not None and one.route != other.route)


def _kind(config: ConfigInfo, other: ConfigInfo) -> PairKind | None:
    """What comparing ``config`` with ``other`` measures, when they are a pair at all."""
    if config.framework is None or other.framework is None:
        return None
    if config.baseline is not None and config.baseline == other.framework:
        if not _same_conditions(config, other, route=True):
            return None
        return "idiomatic cost" if config.role == VARIANT else "framework tax"
    equal_work = config.role == EQUAL_WORK and other.role == EQUAL_WORK
    if equal_work and config.framework != other.framework and _same_conditions(config, other, route=False):
        return "framework vs framework"
    return None


def tax_pairs(bundle: Bundle) -> list[TaxPair]:
    """Every pair of configs in the bundle, taxes first, then idiomatic costs, then framework against framework;
    within each, in plan order. A framework against framework pair is listed once (the earlier config first)."""
    names = [name for name in config_order(bundle) if name in bundle.configs]
    found: list[TaxPair] = []
    for index, name in enumerate(names):
        config = bundle.configs[name]
        for position, other_name in enumerate(names):
            if other_name == name:
                continue
            kind = _kind(config, bundle.configs[other_name])
            if kind is None or (kind == "framework vs framework" and position < index):
                continue
            server = config.server or "?"
            found.append(TaxPair(kind, name, other_name, bundle.label(name), bundle.label(other_name), server))
    return sorted(found, key=lambda pair: KIND_ORDER.index(pair.kind))


def _estimate(values: Mapping[int, float]) -> Estimate | None:
    return median_interval(values.values()) if values else None


def _cell(pair: TaxPair, by_config: Mapping[str, Sequence[Run]], family: Family, margin: float) -> TaxCell:
    cpu = arm_values(by_config, "cpu_us_per_request")
    rps = arm_values(by_config, "rps")
    mine, theirs = cpu.get(pair.config, {}), cpu.get(pair.baseline, {})
    cpu_ratio = throughput = None
    difference = None
    if mine and theirs:
        difference = compare_difference(pair.config, pair.baseline, paired_differences(mine, theirs), family=family)
        logs = paired_log_ratios(mine, theirs)
        cpu_ratio = compare_pair(pair.config, pair.baseline, logs, family=family, higher_is_better=False, margin=margin)
    if rps.get(pair.config) and rps.get(pair.baseline):
        logs = paired_log_ratios(rps[pair.config], rps[pair.baseline])
        throughput = compare_pair(pair.config, pair.baseline, logs, family=family, higher_is_better=True, margin=margin)
    return TaxCell(
        pair=pair,
        cpu=_estimate(mine),
        baseline_cpu=_estimate(theirs),
        cpu_difference=difference,
        cpu_ratio=cpu_ratio,
        cpu_words=_words(cpu_ratio, "cpu_us_per_request"),
        throughput=throughput,
        throughput_words=_words(throughput, "rps"),
    )


def _words(comparison: PairedComparison | None, metric: str) -> tuple[str, str, str]:
    if comparison is None or comparison.pairs == 0:
        return "range", "not measured", ""
    return outcome_words(comparison, METRICS[metric], True)


def tax_tables(bundle: Bundle) -> list[TaxTable]:
    """One table per model and closed-loop scenario in which at least one pair has valid runs on both sides."""
    pairs = tax_pairs(bundle)
    if not pairs:
        return []
    margin = plan_margin(bundle)
    tables: list[TaxTable] = []
    for (model, _scenario), by_config in group_runs(bundle.scenario_runs, config_order(bundle)).items():
        first = next(iter(by_config.values()))[0]
        if first.kind != "closed":
            continue
        present = [pair for pair in pairs if pair.config in by_config and pair.baseline in by_config]
        if not present:
            continue
        family = Family(CONFIDENCE, len(present), "shown")
        cells = tuple(_cell(pair, by_config, family, margin) for pair in present)
        tables.append(TaxTable(model, scenario_info(first), cells, family))
    return tables
