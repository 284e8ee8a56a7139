"""The CI regression gate: does the current results bundle serve slower than the committed baseline?

A change is a **regression** only when both hold for one config x model x scenario x metric:

1. the shift is statistically significant over repetitions: a one-sided Mann-Whitney U test (each repetition
   is one sample), with Holm's correction over every gated comparison of the check, at :data:`FAMILY_ALPHA`; and
2. the effect is larger than the noise this machine shows: the relative change in cost exceeds
   ``max(minimum effect, NOISE_MULTIPLIER x A/A spread, CURRENT_CV_MULTIPLIER x current spread)``, where the
   A/A spread comes from ``noise.json`` (written next to the baseline by ``servingbench calibrate``).

Effects are measured as a change in *cost*: for latency and CPU per request the ratio current / baseline, for
throughput and capacity the inverse, so "+15 %" means the same thing for every metric. Repetitions whose server
got markedly less CPU than usual (another process took its core) are left out as disturbed. The ``reference``
model of the CI plan is a yardstick: shown, never gated. When the baseline came from another machine, absolute
figures are not comparable: the check then compares each model relative to the reference measured in the same
run, or refuses (exit 2) when the plan has no reference.

Exit codes: :data:`EXIT_PASS` 0, :data:`EXIT_REGRESSION` 1, :data:`EXIT_UNUSABLE` 2 (invalid current run,
unusable baseline, or any error). See ``docs/bench-ci.md``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table
from scipy import stats as scipy_stats

from .bundle import DEFAULT_ARRIVALS, DEFAULT_CAPACITY_SCENARIO, Bundle, BundleError, CapacityResult, Run, load_bundle
from .compare import COMPARE_FILE, compare_bundles
from .html import write_atomic
from .metrics import metric_value
from .stats import DEFAULT_SEED, coefficient_of_variation, ratio_of_medians_ci

__all__ = [
    "ABSOLUTE",
    "CAPACITY_METRIC",
    "CURRENT_CV_MULTIPLIER",
    "EXIT_PASS",
    "EXIT_REGRESSION",
    "EXIT_UNUSABLE",
    "FAMILY_ALPHA",
    "GATE_METRICS",
    "MAX_CPU_SHARE_DROP",
    "MAX_USEFUL_THRESHOLD",
    "MIN_EFFECT",
    "MIN_EFFECT_TAIL",
    "MIN_REPETITIONS",
    "NOISE_FILE",
    "NOISE_MULTIPLIER",
    "REFERENCE_MODEL",
    "RELATIVE",
    "SUMMARY_FILE",
    "Basis",
    "CheckError",
    "CheckResult",
    "Disturbance",
    "GateMetric",
    "GateRow",
    "NoiseEntry",
    "NoiseModel",
    "SeriesKey",
    "check",
    "disturbed_runs",
    "expected_cpu_share",
    "holm",
    "load_noise",
    "machine_differences",
    "markdown_summary",
    "measure_noise",
    "one_sided_p",
    "result_table",
    "run_check",
    "series",
]

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_UNUSABLE = 2

NOISE_FILE = "noise.json"
NOISE_FORMAT = "servingbench-noise"
NOISE_VERSION = 1
SUMMARY_FILE = "check.md"
REFERENCE_MODEL = "reference"  # the yardstick model of the CI plan (machine-independent comparisons)

FAMILY_ALPHA = 0.05  # family-wise error rate over all comparisons of one check (Holm)
# threshold = this x the largest A/A ratio between back-to-back calibration runs: runs further apart in time drift
# more than back-to-back ones do (measured on the 2-core development machine: up to 12 % for an unchanged model).
NOISE_MULTIPLIER = 3.0
CURRENT_CV_MULTIPLIER = 1.0  # ... and at least this x the current run's coefficient of variation
MAX_USEFUL_THRESHOLD = 0.5  # above a 50 % threshold the gate cannot see a realistic regression: "too noisy"
MIN_REPETITIONS = 3  # valid repetitions per side below which no verdict is given (exit 2)
MIN_CALIBRATION_RUNS = 2
# A repetition whose server got this much less CPU per second than the baseline's median for the same figure was
# disturbed: another process took the server's core (the machine was busy). It is left out, like an invalid run.
MAX_CPU_SHARE_DROP = 0.15
PERCENT = 100.0
PLAIN_WIDTH = 200  # characters per line of the table in a CI log

Basis = Literal["absolute", "relative to reference"]
ABSOLUTE: Basis = "absolute"
RELATIVE: Basis = "relative to reference"
Verdict = Literal[
    "regression", "improvement", "within noise", "not significant", "too noisy", "yardstick slower", "yardstick faster"
]
YARDSTICK_VERDICTS: dict[str, Verdict] = {"regression": "yardstick slower", "improvement": "yardstick faster"}
Status = Literal["pass", "regression", "error"]

# What identifies a machine (not the software under test): a change here makes absolute figures incomparable.
# Python and package versions are deliberately absent: a dependency bump is a change the gate should judge.
MACHINE_KEYS = ("cpu_model", "logical_cpus", "usable_cpus", "cpu_quota", "server_cpus", "kernel")
SOFTWARE_KEYS = ("python", "python_implementation")
CAPACITY_METRIC = "capacity_rps"
# The yardstick figures whose move means the machine (or the whole serving stack) changed; p99 is too erratic.
DRIFT_METRICS = ("rps", "p50", "cpu_us_per_request")
DRIFT_NOTE = (
    "the machine is slower or faster than when the baseline was made, or the serving stack changed: only a model "
    "that moved further than the yardstick is a verdict"
)
MIN_EFFECT = 0.10  # the smallest cost change that can fail: 10 % more time or CPU per request
MIN_EFFECT_TAIL = 0.20  # p99 moves more between runs than the median does


@dataclass(frozen=True)
class GateMetric:
    """A metric the gate judges. ``min_effect`` is the smallest relative change in cost that can fail (0.05 = 5 %)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    min_effect: float
    decimals: int


GATE_METRICS: dict[str, GateMetric] = {
    metric.name: metric
    for metric in (
        GateMetric("rps", "throughput", "req/s", True, MIN_EFFECT, 1),
        GateMetric("p50", "p50 latency", "ms", False, MIN_EFFECT, 3),
        GateMetric("p99", "p99 latency", "ms", False, MIN_EFFECT_TAIL, 3),
        GateMetric("cpu_us_per_request", "CPU per request", "µs", False, MIN_EFFECT, 1),
        GateMetric(CAPACITY_METRIC, "capacity at SLO", "req/s", True, MIN_EFFECT, 1),
    )
}
RUN_METRICS = ("rps", "p50", "p99", "cpu_us_per_request")


class CheckError(Exception):
    """The check cannot give a verdict (exit 2). ``str(err)`` is one line saying why and what to do."""


class SeriesKey(NamedTuple):
    """One judged figure: a metric of a config x model x scenario."""

    config: str
    model: str
    scenario: str
    metric: str


# --- samples ------------------------------------------------------------------------------------------------------


def _capacity_scenario(result: CapacityResult) -> str:
    """The figure's scenario name; the plan's default search keeps the name it had before searches had names."""
    name = f"capacity at p99 <= {result.slo_p99_ms:g} ms"
    if result.arrivals != DEFAULT_ARRIVALS:
        name += f", {result.arrivals} arrivals"
    return name if result.scenario == DEFAULT_CAPACITY_SCENARIO else f"{result.scenario}: {name}"


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0.0 else None


GroupKey = tuple[str, str, str]  # config, model, scenario


def _group(run: Run) -> GroupKey:
    return run.config, run.model, run.scenario


def _cpu_share(run: Run) -> float | None:
    """Server CPU seconds per second of the measured window (1.0 = one core busy); ``None`` when not recorded."""
    if run.server_cpu_s is None or not run.duration_s:
        return None
    return run.server_cpu_s / run.duration_s


def expected_cpu_share(bundles: Sequence[Bundle]) -> dict[GroupKey, float]:
    """Median server CPU share per config x model x scenario over the valid runs of ``bundles`` (no search steps)."""
    shares: dict[GroupKey, list[float]] = {}
    for bundle in bundles:
        for run in bundle.scenario_runs:
            share = _cpu_share(run)
            if share is not None:
                shares.setdefault(_group(run), []).append(share)
    return {group: _median(values) for group, values in shares.items()}


@dataclass(frozen=True)
class Disturbance:
    """A run whose server got ``share`` CPU-seconds per second where ``expected`` was the norm (1.0 = one core)."""

    share: float
    expected: float

    def __str__(self) -> str:
        return f"the server got {self.share:.2f} CPU-s/s against {self.expected:.2f} expected"


DISTURBED_CAUSE = "the machine was busy, or the change makes the server wait"


def disturbed_runs(bundle: Bundle, expected: Mapping[GroupKey, float]) -> dict[str, Disturbance]:
    """Valid runs whose server got :data:`MAX_CPU_SHARE_DROP` less CPU than ``expected``, by run id.

    Capacity-search steps are not judged: a step past capacity leaves the server waiting by design.
    """
    disturbed: dict[str, Disturbance] = {}
    for run in bundle.scenario_runs:
        share, reference = _cpu_share(run), expected.get(_group(run))
        if share is not None and reference and share < reference * (1.0 - MAX_CPU_SHARE_DROP):
            disturbed[run.id] = Disturbance(share, reference)
    return disturbed


def _by_repetition(bundle: Bundle, skip: Collection[str] = ()) -> dict[SeriesKey, dict[int, float]]:
    """Every judged figure of the bundle's valid runs (less ``skip`` and search steps) and capacity results, keyed
    by repetition. A search's steps are judged through its capacity, not one by one: their rates differ per search."""
    figures: dict[SeriesKey, dict[int, float]] = {}
    runs = [run for run in bundle.scenario_runs if run.id not in skip]
    for run in sorted(runs, key=lambda item: item.repetition):
        for metric in RUN_METRICS:
            value = _positive(metric_value(run, metric))
            if value is not None:
                key = SeriesKey(run.config, run.model, run.scenario, metric)
                figures.setdefault(key, {}).setdefault(run.repetition, value)
    for result in bundle.capacity:
        # A lower bound (generator limit, search cut short) says the server did at least this much, not what it does.
        value = None if result.lower_bound else _positive(result.capacity_rps)
        if value is not None:
            key = SeriesKey(result.config, result.model, _capacity_scenario(result), CAPACITY_METRIC)
            figures.setdefault(key, {}).setdefault(result.repetition, value)
    return figures


def series(bundle: Bundle, basis: Basis = ABSOLUTE, *, skip: Collection[str] = ()) -> dict[SeriesKey, list[float]]:
    """One sample per repetition for every judged figure.

    ``absolute``: the figure as measured (req/s, ms, µs). ``relative to reference``: the figure divided by the
    same config x scenario x metric of the :data:`REFERENCE_MODEL` in the same repetition (unitless); the
    reference itself is left out. Runs whose id is in ``skip`` (e.g. disturbed ones) are left out.
    """
    figures = _by_repetition(bundle, skip)
    if basis == ABSOLUTE:
        return {key: list(values.values()) for key, values in figures.items()}
    relative: dict[SeriesKey, list[float]] = {}
    for key, values in figures.items():
        reference = figures.get(key._replace(model=REFERENCE_MODEL))
        if key.model == REFERENCE_MODEL or reference is None:
            continue
        ratios = [value / reference[rep] for rep, value in values.items() if rep in reference]
        if ratios:
            relative[key] = ratios
    return relative


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


# --- noise (A/A calibration) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseEntry:
    """Run-to-run noise of one figure: its median in each A/A run and ``spread`` = max median / min median - 1."""

    basis: Basis
    key: SeriesKey
    run_medians: tuple[float, ...]
    spread: float
    within_cv: float | None

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in ``noise.json``."""
        return {
            "basis": self.basis,
            **self.key._asdict(),
            "run_medians": list(self.run_medians),
            "spread": self.spread,
            "within_cv": self.within_cv,
        }


@dataclass(frozen=True)
class NoiseModel:
    """What ``servingbench calibrate`` measured: the A/A noise of every figure over ``runs`` runs of one plan."""

    runs: int
    fingerprint: str | None
    created: tuple[str, ...]
    entries: Mapping[tuple[Basis, SeriesKey], NoiseEntry] = field(default_factory=dict)

    def get(self, basis: Basis, key: SeriesKey) -> NoiseEntry | None:
        """The entry for one figure, or ``None`` when calibration did not measure it."""
        return self.entries.get((basis, key))

    def to_json(self) -> dict[str, Any]:
        """The ``noise.json`` document."""
        return {
            "format": NOISE_FORMAT,
            "version": NOISE_VERSION,
            "runs": self.runs,
            "fingerprint": self.fingerprint,
            "created": list(self.created),
            "noise_multiplier": NOISE_MULTIPLIER,
            "entries": [entry.to_json() for entry in self.entries.values()],
        }


def _noise_entry(basis: Basis, key: SeriesKey, samples: Sequence[Sequence[float]]) -> NoiseEntry:
    medians = tuple(_median(values) for values in samples)
    cvs = [cv for cv in (coefficient_of_variation(values) for values in samples) if cv is not None]
    within = _median(cvs) if cvs else None
    return NoiseEntry(basis, key, medians, max(medians) / min(medians) - 1.0, within)


def measure_noise(bundles: Sequence[Bundle]) -> NoiseModel:
    """The A/A noise of every figure measured in all ``bundles`` (the same plan run at least twice)."""
    if len(bundles) < MIN_CALIBRATION_RUNS:
        raise ValueError(f"calibration needs at least {MIN_CALIBRATION_RUNS} runs of the same plan, got {len(bundles)}")
    entries: dict[tuple[Basis, SeriesKey], NoiseEntry] = {}
    expected = expected_cpu_share(bundles)
    basis: Basis
    for basis in (ABSOLUTE, RELATIVE):
        per_bundle = [series(bundle, basis, skip=disturbed_runs(bundle, expected)) for bundle in bundles]
        for key in per_bundle[0]:
            samples = [figures[key] for figures in per_bundle if len(figures.get(key, ())) >= MIN_REPETITIONS]
            if len(samples) >= MIN_CALIBRATION_RUNS:
                entries[(basis, key)] = _noise_entry(basis, key, samples)
    created = tuple(bundle.created or "" for bundle in bundles)
    return NoiseModel(len(bundles), bundles[0].fingerprint, created, entries)


def _noise_error(path: Path, problem: str) -> CheckError:
    return CheckError(f"unusable baseline: {path}: {problem} (refresh it with `make baseline`)")


def _parse_noise_entry(raw: object, path: Path) -> NoiseEntry:
    if not isinstance(raw, dict):
        raise _noise_error(path, "every entry must be an object")
    try:
        basis = raw["basis"]
        if basis not in (ABSOLUTE, RELATIVE):
            raise ValueError(f"unknown basis {basis!r}")
        key = SeriesKey(str(raw["config"]), str(raw["model"]), str(raw["scenario"]), str(raw["metric"]))
        medians = tuple(float(value) for value in raw["run_medians"])
        within = raw.get("within_cv")
        spread = float(raw["spread"])
        if not math.isfinite(spread) or spread < 0.0:
            raise ValueError(f"spread must be a number >= 0, found {spread!r}")
        return NoiseEntry(basis, key, medians, spread, None if within is None else float(within))
    except (KeyError, TypeError, ValueError) as exc:
        raise _noise_error(path, f"malformed entry: {exc}") from exc


def load_noise(baseline_dir: Path | str) -> NoiseModel | None:
    """Read ``baseline_dir/noise.json``; ``None`` when there is none; :class:`CheckError` when it is malformed."""
    path = Path(baseline_dir) / NOISE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _noise_error(path, f"cannot read: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != NOISE_FORMAT or doc.get("version") != NOISE_VERSION:
        raise _noise_error(path, f"not a {NOISE_FORMAT} version {NOISE_VERSION} document")
    raw_entries = doc.get("entries")
    if not isinstance(raw_entries, list):
        raise _noise_error(path, "'entries' must be a list")
    entries = [_parse_noise_entry(raw, path) for raw in raw_entries]
    fingerprint = doc.get("fingerprint")
    return NoiseModel(
        runs=int(doc.get("runs") or 0),
        fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        created=tuple(str(item) for item in doc.get("created") or ()),
        entries={(entry.basis, entry.key): entry for entry in entries},
    )


# --- environment ----------------------------------------------------------------------------------------------------


def _machine_value(environment: Mapping[str, Any], key: str) -> object:
    value = environment.get(key)
    return len(value) if isinstance(value, list) else value  # CPU lists compare by count, not by CPU numbers


def machine_differences(baseline: Bundle, current: Bundle) -> list[tuple[str, str, str]]:
    """``(key, baseline, current)`` for every machine property that differs (CPU model and count, quota, kernel)."""
    differences = []
    for key in MACHINE_KEYS:
        before = _machine_value(baseline.environment, key)
        after = _machine_value(current.environment, key)
        if before != after:
            differences.append((key, str(before), str(after)))
    return differences


def _software_differences(baseline: Bundle, current: Bundle) -> list[str]:
    changes = [
        f"{key} {baseline.environment.get(key)} -> {current.environment.get(key)}"
        for key in SOFTWARE_KEYS
        if baseline.environment.get(key) != current.environment.get(key)
    ]
    before, after = baseline.environment.get("packages") or {}, current.environment.get("packages") or {}
    if isinstance(before, dict) and isinstance(after, dict):
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                changes.append(f"{name} {before.get(name)} -> {after.get(name)}")
    return changes


# --- statistics -----------------------------------------------------------------------------------------------------


def one_sided_p(baseline: Sequence[float], current: Sequence[float], *, current_greater: bool) -> float:
    """Mann-Whitney U p-value that ``current`` is stochastically greater (or less) than ``baseline``.

    Exact for small samples without ties (scipy's choice); 1.0 when every sample is equal.
    """
    values = np.asarray([*baseline, *current], dtype=np.float64)
    if values.size == 0 or float(np.ptp(values)) == 0.0:
        return 1.0
    alternative: Literal["greater", "less"] = "greater" if current_greater else "less"
    result = scipy_stats.mannwhitneyu(values[len(baseline) :], values[: len(baseline)], alternative=alternative)
    p_value = float(result.pvalue)
    return p_value if math.isfinite(p_value) else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): reject where adjusted p < alpha."""
    count = len(p_values)
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(sorted(range(count), key=lambda item: p_values[item])):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


# --- comparison rows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateRow:
    """One judged figure. ``ratio`` = current median / baseline median; ``threshold`` is a relative cost change.

    ``p_worse``/``p_better`` are one-sided Mann-Whitney U p-values, Holm-adjusted over the whole check.
    """

    key: SeriesKey
    basis: Basis
    baseline_median: float
    current_median: float
    ratio: float
    ci_low: float | None
    ci_high: float | None
    baseline_n: int
    current_n: int
    threshold: float
    threshold_source: str
    p_worse: float = 1.0
    p_better: float = 1.0
    verdict: Verdict = "not significant"
    gated: bool = True  # False for the reference model: a yardstick of the machine, shown but never failed

    @property
    def metric(self) -> GateMetric:
        """The metric's label, unit and direction."""
        return GATE_METRICS[self.key.metric]

    @property
    def cost_change(self) -> float:
        """Relative change in cost: +0.15 = 15 % more time or CPU per request (or 1/1.15 of the throughput)."""
        cost_ratio = 1.0 / self.ratio if self.metric.higher_is_better else self.ratio
        return cost_ratio - 1.0

    @property
    def gain(self) -> float:
        """Relative improvement, the mirror of :attr:`cost_change`: +0.15 = the baseline cost 15 % more."""
        return 1.0 / (1.0 + self.cost_change) - 1.0 if self.cost_change > -1.0 else math.inf


def _threshold(
    metric: GateMetric, entry: NoiseEntry | None, baseline: Sequence[float], current: Sequence[float]
) -> tuple[float, str]:
    """The smallest cost change that can fail, and where it came from."""
    candidates = [(metric.min_effect, "minimum effect")]
    if entry is not None:
        candidates.append((NOISE_MULTIPLIER * entry.spread, f"{NOISE_MULTIPLIER:g} x A/A spread"))
    else:
        baseline_cv = coefficient_of_variation(baseline) or 0.0
        candidates.append((NOISE_MULTIPLIER * baseline_cv, f"{NOISE_MULTIPLIER:g} x baseline spread (no calibration)"))
    current_cv = coefficient_of_variation(current) or 0.0
    candidates.append((CURRENT_CV_MULTIPLIER * current_cv, f"{CURRENT_CV_MULTIPLIER:g} x current spread"))
    return max(candidates, key=lambda item: item[0])


def _row(
    key: SeriesKey,
    basis: Basis,
    baseline: Sequence[float],
    current: Sequence[float],
    noise: NoiseModel | None,
    seed: int,
    *,
    gated: bool = True,
) -> GateRow:
    """One figure compared: ratio with its interval, one-sided p-values (not yet adjusted), threshold."""
    metric = GATE_METRICS[key.metric]
    estimate = ratio_of_medians_ci(baseline, current, seed=seed)
    threshold, source = _threshold(metric, noise.get(basis, key) if noise else None, baseline, current)
    return GateRow(
        key=key,
        basis=basis,
        baseline_median=_median(baseline),
        current_median=_median(current),
        ratio=estimate.ratio if estimate.ratio is not None else math.nan,
        ci_low=estimate.ci_low,
        ci_high=estimate.ci_high,
        baseline_n=len(baseline),
        current_n=len(current),
        threshold=threshold,
        threshold_source=source,
        p_worse=one_sided_p(baseline, current, current_greater=not metric.higher_is_better),
        p_better=one_sided_p(baseline, current, current_greater=metric.higher_is_better),
        gated=gated,
    )


def _verdict(row: GateRow) -> Verdict:
    worse = row.p_worse < FAMILY_ALPHA
    better = row.p_better < FAMILY_ALPHA
    if worse and row.cost_change > row.threshold:
        return "regression"
    if row.threshold > MAX_USEFUL_THRESHOLD:
        return "too noisy"
    if better and row.gain > row.threshold:
        return "improvement"
    return "within noise" if worse or better else "not significant"


def _holm_family(rows: Sequence[GateRow]) -> list[GateRow]:
    worse = holm([row.p_worse for row in rows])
    better = holm([row.p_better for row in rows])
    adjusted = [
        replace(row, p_worse=p_worse, p_better=p_better)
        for row, p_worse, p_better in zip(rows, worse, better, strict=True)
    ]
    return [replace(row, verdict=_verdict(row)) for row in adjusted]


def _judge(rows: Sequence[GateRow]) -> list[GateRow]:
    """Holm-adjust the gated rows as one family (the yardstick rows as another), then give each row its verdict.

    A yardstick row never fails the check: its "regression" reads "yardstick slower".
    """
    judged: dict[int, GateRow] = {}
    for gated in (True, False):
        indices = [index for index, row in enumerate(rows) if row.gated == gated]
        for index, row in zip(indices, _holm_family([rows[index] for index in indices]), strict=True):
            judged[index] = row if gated else replace(row, verdict=YARDSTICK_VERDICTS.get(row.verdict, row.verdict))
    return [judged[index] for index in range(len(rows))]


# --- the check ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``exit_code`` is 0 (pass), 1 (regression) or 2 (no verdict: ``reason`` says why)."""

    exit_code: int
    status: Status
    reason: str
    baseline_dir: Path
    current_dir: Path
    basis: Basis | None = None
    rows: tuple[GateRow, ...] = ()
    notes: tuple[str, ...] = ()
    summary_path: Path | None = None
    html_path: Path | None = None

    @property
    def regressions(self) -> tuple[GateRow, ...]:
        """The rows that fail the check."""
        return tuple(row for row in self.rows if row.verdict == "regression")


def _load_baseline(path: Path) -> Bundle:
    if not path.exists():
        raise CheckError(f"baseline not found: {path} (create it with `make baseline` and commit it)")
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise CheckError(f"unusable baseline: {exc}") from exc
    if not bundle.complete:
        raise CheckError(f"unusable baseline: {path} is an incomplete run (refresh it with `make baseline`)")
    return bundle


def _load_current(path: Path) -> Bundle:
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        raise CheckError(f"invalid current run: {exc}") from exc
    if not bundle.complete:
        raise CheckError(f"invalid current run: {path} is incomplete (the benchmark was interrupted or failed)")
    return bundle


def _invalid_reasons(bundle: Bundle, key: SeriesKey, disturbed: Mapping[str, Disturbance]) -> str:
    """Why a figure lacks valid repetitions: the runs' invalid reasons and a summary of the disturbed ones."""
    runs = [
        run
        for run in bundle.all_scenario_runs
        if (run.config, run.scenario) == (key.config, key.scenario) and run.model in (key.model, REFERENCE_MODEL)
    ]
    reasons = [run.invalid_reason or run.status for run in runs if not (run.valid and run.status == "ok")]
    hits = [disturbed[run.id] for run in runs if run.id in disturbed]
    if hits:
        low, high = min(hit.share for hit in hits), max(hit.share for hit in hits)
        reasons.append(
            f"{len(hits)} disturbed runs: the server got {low:.2f}-{high:.2f} CPU-s/s against "
            f"{hits[0].expected:.2f} expected ({DISTURBED_CAUSE})"
        )
    return "; ".join(dict.fromkeys(reasons)) or "no runs"


def _disturbed(
    baseline: Bundle, current: Bundle, same_machine: bool
) -> tuple[dict[str, Disturbance], dict[str, Disturbance]]:
    """Disturbed runs of each side. On one machine both sides are held to the baseline's CPU share; across
    machines each side to its own median (CPU share depends on the machine)."""
    expected_base = expected_cpu_share([baseline])
    expected_current = expected_base if same_machine else expected_cpu_share([current])
    return disturbed_runs(baseline, expected_base), disturbed_runs(current, expected_current)


def _basis(baseline: Bundle, current: Bundle) -> tuple[Basis, list[str]]:
    """Absolute figures on the same machine; figures relative to the reference model across machines."""
    differences = machine_differences(baseline, current)
    notes = [
        f"software differs (judged as part of the change): {change}"
        for change in _software_differences(baseline, current)
    ]
    if not differences:
        return ABSOLUTE, notes
    what = ", ".join(f"{key} {before!r} -> {after!r}" for key, before, after in differences)
    if not series(baseline, RELATIVE) or not series(current, RELATIVE):
        raise CheckError(
            f"baseline from a different machine ({what}): absolute figures are not comparable and the plan has no "
            f"{REFERENCE_MODEL!r} model to compare relative to; run `make baseline` on this kind of machine"
        )
    notes.insert(
        0,
        f"baseline from a different machine ({what}): each model is compared relative to the {REFERENCE_MODEL!r} "
        "model measured in the same run; a slowdown shared by every model (the serving stack) is not visible",
    )
    return RELATIVE, notes


def _paired_series(
    baseline: Bundle, current: Bundle, basis: Basis, *, same_machine: bool
) -> tuple[list[tuple[SeriesKey, list[float], list[float]]], list[str]]:
    """The figures measured on both sides, less disturbed runs; a figure the current run lacks or has too few valid
    repetitions of is a :class:`CheckError`; figures only in the current run are noted, not judged."""
    disturbed_base, disturbed_current = _disturbed(baseline, current, same_machine)
    base = series(baseline, basis, skip=disturbed_base)
    cur = series(current, basis, skip=disturbed_current)
    pairs = []
    for key, samples in base.items():
        if len(samples) < MIN_REPETITIONS:
            raise CheckError(
                f"unusable baseline: {' '.join(key)} has {len(samples)} valid repetitions (need {MIN_REPETITIONS}); "
                "refresh it with `make baseline` on a quiet machine"
            )
        current_samples = cur.get(key, [])
        if len(current_samples) < MIN_REPETITIONS:
            raise CheckError(
                f"invalid current run: {' '.join(key[:3])} {key.metric} has {len(current_samples)} valid repetitions "
                f"(need {MIN_REPETITIONS}): {_invalid_reasons(current, key, disturbed_current)}"
            )
        pairs.append((key, samples, current_samples))
    if not pairs:
        raise CheckError("unusable baseline: no figure with valid repetitions to compare")
    extra = sorted({" ".join(key[:3]) for key in cur if key not in base})
    notes = [f"not in the baseline, not checked: {item}" for item in extra]
    notes += [f"run {run_id} left out: {hit} ({DISTURBED_CAUSE})" for run_id, hit in disturbed_current.items()]
    return pairs, notes


def _run_notes(current: Bundle) -> list[str]:
    notes = [
        f"invalid run {run.id} ({run.config} {run.model} {run.scenario}): {run.invalid_reason}"
        for run in current.invalid_runs
    ]
    notes.extend(rule for rule in current.fairness if rule.startswith("VIOLATED:"))
    return notes


def _yardstick_notes(rows: Sequence[GateRow]) -> list[str]:
    moved = [row for row in rows if row.verdict in YARDSTICK_VERDICTS.values()]
    return [
        f"the {REFERENCE_MODEL!r} model (the yardstick, not gated) moved: {row.metric.label} "
        f"{row.cost_change * PERCENT:+.1f}% cost; the machine was slower or faster than for the baseline, or the "
        "serving stack changed"
        for row in moved
    ]


def _decide(all_rows: Sequence[GateRow]) -> tuple[int, Status, str]:
    rows = [row for row in all_rows if row.gated]
    regressions = [row for row in rows if row.verdict == "regression"]
    if regressions:
        worst = max(regressions, key=lambda row: row.cost_change)
        return (
            EXIT_REGRESSION,
            "regression",
            f"regression in {len(regressions)} of {len(rows)} figures; worst: {_describe(worst)}",
        )
    counts = {verdict: sum(row.verdict == verdict for row in rows) for verdict in ("improvement", "too noisy")}
    extras = ", ".join(f"{count} {verdict}" for verdict, count in counts.items() if count)
    return EXIT_PASS, "pass", f"no regression in {len(rows)} figures" + (f" ({extras})" if extras else "")


def _describe(row: GateRow) -> str:
    return (
        f"{' '.join(row.key[:3])} {row.metric.label} {row.cost_change * PERCENT:+.1f}% cost "
        f"(threshold {row.threshold * PERCENT:.1f}%, p={row.p_worse:.2g})"
    )


@dataclass(frozen=True)
class _Judgement:
    """Rows judged on one basis, with the notes that go with them."""

    basis: Basis
    rows: list[GateRow]
    notes: list[str]


def _judge_basis(
    baseline: Bundle,
    current: Bundle,
    basis: Basis,
    noise: NoiseModel | None,
    seed: int,
    *,
    same_machine: bool,
    widen: bool = True,
) -> _Judgement:
    """Every figure on one basis, judged; ``widen`` raises thresholds to the yardstick's drift."""
    pairs, notes = _paired_series(baseline, current, basis, same_machine=same_machine)
    yardstick = {key.model for key, _, _ in pairs} != {REFERENCE_MODEL}  # a plan of the reference alone gates it
    rows = [
        _row(key, basis, base, cur, noise, seed, gated=not (yardstick and key.model == REFERENCE_MODEL))
        for key, base, cur in pairs
    ]
    return _Judgement(basis, _judge(_widen_by_drift(rows) if widen else rows), notes)


def _drift(row: GateRow) -> float:
    """How far a figure moved either way, as a relative change (+20 % cost and -17 % cost both give 0.2)."""
    return max(row.cost_change, row.gain) if math.isfinite(row.ratio) else 0.0


def _widen_by_drift(rows: Sequence[GateRow]) -> list[GateRow]:
    """Raise every gated threshold to the drift of the unchanged yardstick: the noise this machine shows *now*.

    The drift is the yardstick's largest move in throughput, p50 or CPU per request (the machine's pace), or in
    the row's own metric when that moved more (p99 swings further). A model that moved no further than the
    yardstick gives no evidence of a regression.
    """
    yardstick = [row for row in rows if not row.gated]
    pace = max((_drift(row) for row in yardstick if row.key.metric in DRIFT_METRICS), default=0.0)
    widened = []
    for row in rows:
        same_metric = (_drift(other) for other in yardstick if other.key.metric == row.key.metric)
        drift = max([pace, *same_metric])
        if row.gated and drift > row.threshold:
            row = replace(row, threshold=drift, threshold_source="yardstick drift")
        widened.append(row)
    return widened


def _moved_yardstick(rows: Sequence[GateRow]) -> list[GateRow]:
    """Yardstick rows (throughput, p50, CPU per request) that moved significantly and materially."""
    return [row for row in rows if row.verdict in YARDSTICK_VERDICTS.values() and row.key.metric in DRIFT_METRICS]


def _drifted(absolute: _Judgement, decision: tuple[int, Status, str]) -> tuple[_Judgement, tuple[int, Status, str]]:
    """The unchanged yardstick moved on the same machine: only a model that moved beyond it is a verdict.

    Thresholds already include the yardstick's drift, so a regression found stands; anything else is no verdict,
    because a machine in another state and a serving stack made slower alike move every model.
    """
    moved = _moved_yardstick(absolute.rows)
    what = ", ".join(f"{row.metric.label} {row.cost_change * PERCENT:+.1f}% cost" for row in moved)
    absolute.notes.insert(0, f"the {REFERENCE_MODEL!r} yardstick moved ({what}); {DRIFT_NOTE}")
    if decision[0] == EXIT_REGRESSION:
        return absolute, decision
    reason = (
        f"no verdict: the unchanged {REFERENCE_MODEL!r} yardstick moved ({what}) and the model did not move beyond "
        "it: re-run on a quiet machine; if it persists, every model got slower or faster (the serving stack "
        "changed): refresh the baseline with `make baseline` if that is intended"
    )
    return absolute, (EXIT_UNUSABLE, "error", reason)


def _evaluate(baseline_dir: Path, current_dir: Path, seed: int) -> CheckResult:
    baseline = _load_baseline(baseline_dir)
    current = _load_current(current_dir)
    noise = load_noise(baseline_dir)
    basis, notes = _basis(baseline, current)
    # New package versions move the yardstick because of the change itself: then its move is not machine drift.
    software_changed = bool(_software_differences(baseline, current))
    judgement = _judge_basis(
        baseline, current, basis, noise, seed, same_machine=basis == ABSOLUTE, widen=not software_changed
    )
    decision = _decide(judgement.rows)
    if basis == ABSOLUTE and _moved_yardstick(judgement.rows) and not software_changed:
        judgement, decision = _drifted(judgement, decision)
    else:
        notes.extend(_yardstick_notes(judgement.rows))
    notes.extend(_quality_notes(judgement.rows, noise))
    exit_code, status, reason = decision
    return CheckResult(
        exit_code,
        status,
        reason,
        baseline_dir,
        current_dir,
        judgement.basis,
        tuple(judgement.rows),
        (*notes, *judgement.notes, *_run_notes(current)),
    )


def _quality_notes(rows: Sequence[GateRow], noise: NoiseModel | None) -> list[str]:
    notes = []
    if noise is None:
        notes.append(
            f"no {NOISE_FILE} next to the baseline: thresholds use the baseline's own spread (run `make baseline`)"
        )
    if any(row.verdict == "too noisy" for row in rows):
        notes.append(
            f"some figures vary by more than {MAX_USEFUL_THRESHOLD:.0%} run to run: the gate cannot judge them"
        )
    return notes


def _write_reports(result: CheckResult, out_dir: Path | None) -> CheckResult:
    """Write the Markdown summary (always) and the comparison HTML (when both bundles loaded) into ``out_dir``."""
    if out_dir is None:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = None
    if result.status != "error" or result.rows:
        html_path = compare_bundles(result.baseline_dir, result.current_dir, out_dir / COMPARE_FILE)
    result = replace(result, html_path=html_path, summary_path=out_dir / SUMMARY_FILE)
    write_atomic(out_dir / SUMMARY_FILE, markdown_summary(result))
    return result


def check(
    baseline_dir: Path | str, current_dir: Path | str, *, out_dir: Path | str | None = None, seed: int = DEFAULT_SEED
) -> CheckResult:
    """Judge the bundle in ``current_dir`` against the baseline in ``baseline_dir`` (with its ``noise.json``).

    Writes ``check.md`` (Markdown summary) and ``compare.html`` into ``out_dir`` when given. Never raises for a
    bad bundle: the result then has exit code 2 and a one-line ``reason``.
    """
    baseline_path, current_path = Path(baseline_dir), Path(current_dir)
    try:
        result = _evaluate(baseline_path, current_path, seed)
    except CheckError as exc:
        result = CheckResult(EXIT_UNUSABLE, "error", str(exc), baseline_path, current_path)
    return _write_reports(result, None if out_dir is None else Path(out_dir))


# --- output ---------------------------------------------------------------------------------------------------------


def _figure(row: GateRow, value: float) -> str:
    if row.basis == RELATIVE:
        return f"{value:.3f}x ref"
    return f"{value:.{row.metric.decimals}f} {row.metric.unit}"


def _ratio_text(row: GateRow) -> str:
    interval = "" if row.ci_low is None or row.ci_high is None else f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
    return f"{row.ratio:.3f}{interval}"


def _cells(row: GateRow) -> list[str]:
    return [
        row.key.config,
        row.key.model if row.gated else f"{row.key.model} (yardstick)",
        row.key.scenario,
        row.metric.label,
        _figure(row, row.baseline_median),
        _figure(row, row.current_median),
        _ratio_text(row),
        f"{row.cost_change * PERCENT:+.1f}%",
        f"{row.threshold * PERCENT:.1f}%",
        f"{min(row.p_worse, row.p_better):.2g}",
        row.verdict,
    ]


HEADERS = (
    "config",
    "model",
    "scenario",
    "metric",
    "baseline",
    "current",
    "ratio [95% CI]",
    "cost change",
    "threshold",
    "p (Holm)",
    "verdict",
)
VERDICT_STYLE = {"regression": "bold red", "improvement": "green", "too noisy": "yellow"}
STATUS_TITLE = {
    "pass": "no regression",
    "regression": "REGRESSION",
    "error": "no verdict (invalid run or unusable baseline)",
}
STATUS_ICON = {"pass": ":white_check_mark:", "regression": ":x:", "error": ":warning:"}


def result_table(result: CheckResult) -> Table:
    """The rows as a terminal table: baseline, current, ratio with its interval, threshold, verdict."""
    title = f"servingbench check: {STATUS_TITLE[result.status]} ({result.basis or 'no basis'})"
    table = Table(*HEADERS, title=title, box=box.SIMPLE)
    for row in result.rows:
        table.add_row(*_cells(row), style=VERDICT_STYLE.get(row.verdict))
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_summary(result: CheckResult) -> str:
    """The check as GitHub-flavoured Markdown, fit for ``$GITHUB_STEP_SUMMARY``."""
    lines = [
        f"## {STATUS_ICON[result.status]} servingbench check: {STATUS_TITLE[result.status]}",
        "",
        f"**{_md(result.reason)}** (exit {result.exit_code})",
        "",
        f"Baseline `{result.baseline_dir}`, current `{result.current_dir}`"
        + (f", compared on {result.basis} figures." if result.basis else "."),
    ]
    if result.rows:
        lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        for row in result.rows:
            cells = [_md(cell) for cell in _cells(row)]
            cells[-1] = f"**{cells[-1]}**" if row.verdict == "regression" else cells[-1]
            lines.append("| " + " | ".join(cells) + " |")
    if result.notes:
        lines += ["", "Notes:", *(f"- {_md(note)}" for note in result.notes)]
    lines += ["", _LEGEND]
    return "\n".join(lines) + "\n"


_LEGEND = (
    "A figure is a **regression** only when a one-sided Mann-Whitney U test over repetitions is significant "
    f"(Holm-corrected, family-wise alpha {FAMILY_ALPHA:g}) **and** its cost change exceeds the threshold: "
    f"max(minimum effect, {NOISE_MULTIPLIER:g} x the A/A spread measured by `servingbench calibrate`, "
    f"{CURRENT_CV_MULTIPLIER:g} x this run's spread, how far the unchanged reference model moved). Cost change: "
    "+ means slower (for throughput, 1/ratio - 1). The ratio is current / baseline median with a 95% bootstrap "
    "interval. The reference model is a yardstick: shown, never failed. See docs/bench-ci.md."
)


def run_check(
    baseline_dir: Path,
    current_dir: Path,
    *,
    out_dir: Path | None = None,
    summary: Path | None = None,
    console: Console | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``servingbench check``: print the table and verdict, write the reports, return the exit code (0, 1, 2).

    ``out_dir`` (default: the current bundle, when it exists) receives ``check.md`` and ``compare.html``;
    ``summary`` is a file the Markdown summary is appended to (e.g. ``$GITHUB_STEP_SUMMARY``).
    """
    console = console or _console()
    if out_dir is None and current_dir.is_dir():
        out_dir = current_dir
    result = check(baseline_dir, current_dir, out_dir=out_dir)
    if summary is not None:
        with summary.open("a", encoding="utf-8") as handle:
            handle.write(markdown_summary(result))
    if result.status == "error":
        print(f"servingbench check: error: {result.reason}", file=stderr or sys.stderr)
        return result.exit_code
    console.print(result_table(result))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    _print_outcome(console, result)
    return result.exit_code


def _console() -> Console:
    """The terminal, or a wide plain console for CI logs (rich would squeeze the table into 80 columns)."""
    console = Console()
    return console if console.is_terminal else Console(width=PLAIN_WIDTH)


def _print_outcome(console: Console, result: CheckResult) -> None:
    console.print(f"servingbench check: {result.reason}", highlight=False, markup=False, soft_wrap=True)
    for path in (result.summary_path, result.html_path):
        if path is not None:
            console.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)
