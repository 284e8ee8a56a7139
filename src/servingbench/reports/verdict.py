"""The verdict: per model and scenario, how each arm compares with the reference on each metric, and how sure we are.

Arms are the configs of one model x scenario, or, in a bundle with one config and several models, the models of
one config x scenario. Every repetition measures every arm, so arms are compared as pairs
(:func:`servingbench.reports.stats.compare_arms`): the per-repetition log ratio arm / reference, a paired t
interval Bonferroni-corrected over the comparisons the verdict could make, and the outcome faster / slower,
equivalent within the plan's margin, not settled (with the repetitions likely to settle it), or, below 5 pairs,
only the range of the per-repetition ratios. The plain-language recommendations follow these outcomes and nothing
else; a causal note appears only where the measurement shows the cause.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Literal

from servingbench.units import US_PER_MS

from .bundle import Bundle, Run
from .metrics import METRICS, VERDICT_METRICS, MetricSpec, metric_by_repetition
from .numbers import DASH
from .stats import (
    DEFAULT_EQUIVALENCE_MARGIN,
    MAX_SUGGESTED_REPETITIONS,
    MIN_REPETITIONS_FOR_INTERVAL,
    ArmsVerdict,
    Estimate,
    Family,
    PairedComparison,
    compare_arms,
    median_interval,
)

__all__ = [
    "CPU_BOUND_MAX_RATIO",
    "CPU_BOUND_MIN_RATIO",
    "NO_INTERVAL",
    "WAITING_RATIO",
    "ArmKind",
    "ConfigOutcome",
    "GroupVerdict",
    "MetricVerdict",
    "PredictKind",
    "ScenarioInfo",
    "arm_values",
    "arrivals_text",
    "comparison_label",
    "comparison_numbers",
    "config_order",
    "format_comparison",
    "group_runs",
    "leader_text",
    "metric_verdict",
    "models_are_arms",
    "outcome_words",
    "plan_margin",
    "plan_reference",
    "predict_kind",
    "predict_share",
    "predict_wall_over_cpu",
    "rank_arms",
    "recommendations",
    "repetitions_text",
    "scenario_info",
    "users_text",
    "verdicts",
    "without_verdict_leader",
]

# Whether predict waits or computes, from the lowest-load runs: its wall time (Server-Timing) over the server's CPU
# time for the whole request. At least 2: at least half of predict's wall time is not CPU, whatever share of the CPU
# is predict's, so it waits (sleeps, blocks on I/O). Between 0.5 and 1.25: predict is most of the CPU and its wall
# time is no more than the CPU time allows within the measured noise (+/-20 %), so it computes.
WAITING_RATIO = 2.0
CPU_BOUND_MIN_RATIO = 0.5
CPU_BOUND_MAX_RATIO = 1.25
TIMES = "\N{MULTIPLICATION SIGN}"
PLUS_MINUS = "\N{PLUS-MINUS SIGN}"
NO_INTERVAL = f"fewer than {MIN_REPETITIONS_FOR_INTERVAL} repetitions: no interval"
OPEN_LOOP_VERDICT_METRICS = ("p50", "p99")

ArmKind = Literal["configs", "models"]
PredictKind = Literal["waiting", "cpu-bound"]
GroupKey = tuple[str, str]
ARRIVALS_TEXT = {"poisson": "Poisson arrivals", "constant": "constant-rate arrivals"}


def arrivals_text(arrivals: str) -> str:
    """ "Poisson arrivals", "constant-rate arrivals"; an unknown process by its name."""
    return ARRIVALS_TEXT.get(arrivals, f"{arrivals} arrivals")


def repetitions_text(count: int) -> str:
    """ "1 rep", "3 reps"."""
    return f"{count} rep{'' if count == 1 else 's'}"


def users_text(count: int | None) -> str:
    """ "1 user", "8 users"; "? users" when unknown."""
    if count is None:
        return "? users"
    return f"{count} user{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class ScenarioInfo:
    """What a scenario is, read from its runs: load kind, endpoint, batch size, concurrency or offered rate."""

    model: str
    name: str
    kind: str
    endpoint: str | None
    batch_size: int | None
    concurrency: int | None
    target_rps: float | None

    @property
    def description(self) -> str:
        """e.g. "closed loop, 8 users, /predict" or "open loop, 100 req/s offered, /predict/batch x 32"."""
        load = (
            f"open loop, {self.target_rps:g} req/s offered"
            if self.kind == "open" and self.target_rps is not None
            else f"{self.kind} loop, {users_text(self.concurrency)}"
            if self.concurrency is not None
            else f"{self.kind} loop"
        )
        endpoint = self.endpoint or "?"
        batch = f" x {self.batch_size}" if self.batch_size and self.batch_size > 1 else ""
        return f"{load}, {endpoint}{batch}"


@dataclass(frozen=True)
class ConfigOutcome:
    """One arm on one metric: its median with interval, and its comparison with the reference (``None`` for the
    reference itself). ``outcome`` is the key the page marks cells with: "best", "reference", the metric's words
    (e.g. "faster", "slower"), "equivalent", "inconclusive" or "range" (fewer than 5 pairs: no verdict)."""

    config: str
    label: str
    estimate: Estimate
    comparison: PairedComparison | None
    outcome: str
    outcome_text: str
    advice: str = ""

    @property
    def interval_text(self) -> str:
        """The comparison as numbers with their label, e.g. "0.80x [0.72-0.88] (95% paired t interval; 6 pairs)"."""
        return format_comparison(self.comparison) if self.comparison is not None else ""


@dataclass(frozen=True)
class MetricVerdict:
    """One metric in one group: every arm against ``reference`` (the plan's, when ``named``, else the best).

    ``decided`` when every other arm is significantly worse than the reference.
    """

    metric: MetricSpec
    reference: str
    reference_label: str
    named: bool
    family: Family
    outcomes: tuple[ConfigOutcome, ...]
    decided: bool
    headline: str
    margin: float = DEFAULT_EQUIVALENCE_MARGIN


@dataclass(frozen=True)
class GroupVerdict:
    """The verdict for one model x scenario over its valid runs (``arms`` = "configs"), or for one config x scenario
    when the models are the arms (``arms`` = "models"); ``held`` names the model or config held fixed."""

    info: ScenarioInfo
    metrics: tuple[MetricVerdict, ...]
    predict_share: float | None
    valid_runs: Mapping[str, int]
    arms: ArmKind = "configs"
    held: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, arm: str) -> str:
        """The human label of one arm."""
        return self.labels.get(arm, arm)


def format_comparison(comparison: PairedComparison) -> str:
    """e.g. "0.80x [0.72-0.88] (95% simultaneous, Bonferroni over 3 pairs; 6 pairs)", or, below 5 pairs,
    "0.71x-0.93x (range of 3 repetitions)" (typeset with a times sign and an en dash)."""
    numbers, label = comparison_numbers(comparison), comparison_label(comparison)
    return f"{numbers} ({label})" if numbers else label


def comparison_numbers(comparison: PairedComparison) -> str:
    """The ratio and its interval, or the range of the per-repetition ratios; empty without a pair."""
    if comparison.pairs == 0 or comparison.ratio is None:
        return ""
    if comparison.low is not None and comparison.high is not None:
        return f"{comparison.ratio:.2f}{TIMES} [{comparison.low:.2f}{DASH}{comparison.high:.2f}]"
    low, high = comparison.range_low, comparison.range_high
    if low is None or high is None or math.isclose(low, high):
        return f"{comparison.ratio:.2f}{TIMES}"
    return f"{low:.2f}{TIMES}{DASH}{high:.2f}{TIMES}"


def comparison_label(comparison: PairedComparison) -> str:
    """What the numbers are: "95% paired t interval; 6 pairs", "range of 3 repetitions", "no repetition measured
    both"."""
    if comparison.pairs == 0:
        return "no repetition measured both"
    if comparison.has_interval:
        return f"{comparison.interval_label}; {comparison.pairs} pairs"
    return comparison.interval_label


def _settle_text(comparison: PairedComparison) -> str:
    if comparison.outcome == "too-few":
        return f"run at least {MIN_REPETITIONS_FOR_INTERVAL - comparison.pairs} more repetitions"
    if comparison.more_repetitions is None:
        return f"more than {MAX_SUGGESTED_REPETITIONS} repetitions needed at this noise"
    return f"run about {comparison.more_repetitions} more repetitions"


def outcome_words(comparison: PairedComparison | None, spec: MetricSpec, named: bool) -> tuple[str, str, str]:
    """The words of one cell, (key, text, advice), e.g. ("slower", "slower", ""), ("inconclusive", "not settled",
    "run about 12 more repetitions"), ("range", "no verdict", "run at least 2 more repetitions")."""
    if comparison is None:
        return ("reference", "reference", "") if named else ("best", "best", "")
    margin = f"{PLUS_MINUS}{comparison.margin:.0%}"
    if comparison.outcome in ("better", "worse"):
        word = spec.better if comparison.outcome == "better" else spec.worse
        return word, word + (f" (by less than the {margin} margin)" if comparison.within_margin else ""), ""
    if comparison.outcome == "equivalent":
        return "equivalent", f"equivalent within {margin}", ""
    if comparison.outcome == "inconclusive":
        return "inconclusive", "not settled", _settle_text(comparison)
    return "range", "no verdict", _settle_text(comparison)


def _closeness(outcome: ConfigOutcome, spec: MetricSpec) -> float:
    ratio = outcome.comparison.ratio if outcome.comparison is not None else None
    if ratio is None:
        return math.inf
    return -ratio if spec.higher_is_better else ratio


def rank_arms(
    values: Mapping[str, Mapping[int, float]],
    labels: Mapping[str, str],
    spec: MetricSpec,
    *,
    reference: str | None = None,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
) -> tuple[ArmsVerdict, tuple[ConfigOutcome, ...]]:
    """Every arm with values against the reference (``None``: the best), reference first, then closest first.

    (Capacity, whose repetitions may be censored, is ranked by :mod:`servingbench.reports.capacity`.)
    """
    verdict = compare_arms(values, reference=reference, higher_is_better=spec.higher_is_better, margin=margin)
    named = reference is not None
    outcomes = []
    for arm, by_rep in values.items():
        if not by_rep:
            continue
        comparison = verdict.of(arm)
        if comparison is None and arm != verdict.reference:
            continue  # an arm without any positive value: nothing to compare
        estimate = median_interval(by_rep.values())
        key, text, advice = outcome_words(comparison, spec, named)
        outcomes.append(ConfigOutcome(arm, labels.get(arm, arm), estimate, comparison, key, text, advice))
    outcomes.sort(key=lambda item: (item.comparison is not None, _closeness(item, spec)))
    outcomes = list(without_verdict_leader(outcomes, spec, named))
    return verdict, tuple(outcomes)


def leader_text(spec: MetricSpec) -> str:
    """What the leading arm is called when no comparison rests on enough pairs: "best" is a verdict word."""
    return f"{'highest' if spec.higher_is_better else 'lowest'} median, no verdict"


def without_verdict_leader(
    outcomes: Sequence[ConfigOutcome], spec: MetricSpec, named: bool
) -> tuple[ConfigOutcome, ...]:
    """``outcomes`` with the best arm's text replaced by :func:`leader_text` when no comparison has an interval (a
    named reference keeps its name: it was not chosen from the data)."""
    if named or any(item.comparison is not None and item.comparison.has_interval for item in outcomes):
        return tuple(outcomes)
    return tuple(replace(item, outcome_text=leader_text(spec)) if item.outcome == "best" else item for item in outcomes)


def _metric_headline(outcomes: Sequence[ConfigOutcome], named: bool) -> str:
    """One sentence: the reference, then every other arm's outcome with its ratio, interval and pair count."""
    reference, others = outcomes[0], outcomes[1:]
    if not others:
        return f"only {reference.label} has valid runs"
    if all(item.comparison is not None and not item.comparison.has_interval for item in others):
        few = f"no comparison rests on {MIN_REPETITIONS_FOR_INTERVAL} pairs, so there is no verdict"
        lead = f"against the reference {reference.label}, {few}" if named else f"{reference.label} leads, but {few}"
    else:
        lead = f"against the reference {reference.label}" if named else f"{reference.label} is best"
    return f"{lead}; " + "; ".join(_outcome_clause(item) for item in others)


def _outcome_clause(item: ConfigOutcome) -> str:
    """e.g. "Flask is slower at 0.60x [...] (...)", "Flask is not settled at 0.97x [...] (...): run about 9 more
    repetitions", "Flask: no verdict, 0.55x-0.70x (range of 3 repetitions)"."""
    if item.outcome == "range":
        return f"{item.label}: no verdict, {item.interval_text}"
    advice = f": {item.advice}" if item.advice else ""
    return f"{item.label} is {item.outcome_text} at {item.interval_text}{advice}"


def plan_margin(bundle: Bundle) -> float:
    """The plan's ``equivalence_margin`` (a fraction, 0 < M < 1), or the default 0.05 when absent or unusable."""
    value = bundle.plan.get("equivalence_margin")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value < 1.0:
        return float(value)
    return DEFAULT_EQUIVALENCE_MARGIN


def plan_reference(bundle: Bundle) -> str | None:
    """The plan's ``reference`` config, when it names one of the bundle's configs."""
    value = bundle.plan.get("reference")
    return value if isinstance(value, str) and value in bundle.configs else None


def arm_values(by_arm: Mapping[str, Sequence[Run]], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {repetition: value}}`` of one metric over valid runs; arms without the metric are left out."""
    values = {arm: metric_by_repetition(runs, metric) for arm, runs in by_arm.items()}
    return {arm: by_rep for arm, by_rep in values.items() if by_rep}


def metric_verdict(
    by_arm: Mapping[str, Sequence[Run]],
    labels: Mapping[str, str],
    spec: MetricSpec,
    *,
    reference: str | None = None,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
) -> MetricVerdict | None:
    """The verdict on one metric over arms with at least one value; ``None`` when no arm has one.

    A ``reference`` without values here falls back to the best arm.
    """
    values = arm_values(by_arm, spec.name)
    if not values:
        return None
    reference = reference if reference in values else None
    verdict, outcomes = rank_arms(values, labels, spec, reference=reference, margin=margin)
    if not outcomes:
        return None
    decided = len(outcomes) > 1 and all(
        item.comparison is not None and item.comparison.outcome == "worse" for item in outcomes[1:]
    )
    named = reference is not None
    headline = _metric_headline(outcomes, named)
    first = outcomes[0]
    return MetricVerdict(spec, first.config, first.label, named, verdict.family, outcomes, decided, headline, margin)


def config_order(bundle: Bundle) -> list[str]:
    """Configs in plan order, then any config only seen in runs or capacity entries, in bundle order."""
    return list(
        dict.fromkeys([*bundle.configs, *(run.config for run in bundle.runs), *(r.config for r in bundle.capacity)])
    )


def _scenario_sort_key(run: Run) -> tuple[bool, str, int, int, float, str]:
    return (
        run.kind != "closed",
        run.endpoint or "",
        run.batch_size or 0,
        run.concurrency or 0,
        run.target_rps or 0.0,
        run.scenario,
    )


def group_runs(runs: Iterable[Run], configs: Sequence[str]) -> dict[GroupKey, dict[str, list[Run]]]:
    """Runs grouped by (model, scenario), then by config. Models keep run order; scenarios sort by load."""
    run_list = list(runs)
    models = list(dict.fromkeys(run.model for run in run_list))
    first_of: dict[GroupKey, Run] = {}
    for run in run_list:
        first_of.setdefault((run.model, run.scenario), run)
    keys = sorted(first_of, key=lambda key: (models.index(key[0]), _scenario_sort_key(first_of[key])))
    rank = {name: index for index, name in enumerate(configs)}
    groups: dict[GroupKey, dict[str, list[Run]]] = {}
    for key in keys:
        members = [run for run in run_list if (run.model, run.scenario) == key]
        by_config: dict[str, list[Run]] = {}
        for run in sorted(members, key=lambda item: (rank.get(item.config, len(rank)), item.repetition)):
            by_config.setdefault(run.config, []).append(run)
        groups[key] = by_config
    return groups


def scenario_info(run: Run) -> ScenarioInfo:
    """The scenario description carried by any run of it."""
    return ScenarioInfo(
        model=run.model,
        name=run.scenario,
        kind=run.kind,
        endpoint=run.endpoint,
        batch_size=run.batch_size,
        concurrency=run.concurrency,
        target_rps=run.target_rps,
    )


def predict_share(runs: Iterable[Run]) -> float | None:
    """Median over runs of predict mean / total latency mean (0..1), ``None`` when not recorded."""
    shares = [
        run.server_timing_ms["predict_mean"] / run.latency_ms["mean"]
        for run in runs
        if "predict_mean" in run.server_timing_ms and run.latency_ms.get("mean", 0.0) > 0.0
    ]
    return min(1.0, median(shares)) if shares else None


def _group_verdict(
    by_arm: Mapping[str, Sequence[Run]],
    labels: Mapping[str, str],
    *,
    arms: ArmKind,
    held: str,
    reference: str | None,
    margin: float,
) -> GroupVerdict:
    """The verdict for one group of valid runs, ``by_arm`` (arms in display order)."""
    first = next(iter(by_arm.values()))[0]
    info = scenario_info(first)
    names = OPEN_LOOP_VERDICT_METRICS if info.kind == "open" else VERDICT_METRICS
    found = (metric_verdict(by_arm, labels, METRICS[name], reference=reference, margin=margin) for name in names)
    all_runs = [run for runs in by_arm.values() for run in runs]
    valid_runs = {arm: len(runs) for arm, runs in by_arm.items()}
    metrics = tuple(verdict for verdict in found if verdict is not None)
    return GroupVerdict(info, metrics, predict_share(all_runs), valid_runs, arms, held, dict(labels))


def models_are_arms(bundle: Bundle) -> bool:
    """True when the bundle compares models on one stack: a single config and two or more models."""
    runs = bundle.scenario_runs
    return len({run.config for run in runs}) == 1 and len({run.model for run in runs}) >= 2


def _model_arm_groups(runs: Sequence[Run]) -> dict[tuple[str, str], dict[str, list[Run]]]:
    """Runs grouped by (config, scenario), scenarios sorted by load, then by model in run order."""
    models = list(dict.fromkeys(run.model for run in runs))
    first_of: dict[tuple[str, str], Run] = {}
    for run in runs:
        first_of.setdefault((run.config, run.scenario), run)
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for key in sorted(first_of, key=lambda key: (key[0], _scenario_sort_key(first_of[key]))):
        members = sorted((run for run in runs if (run.config, run.scenario) == key), key=lambda run: run.repetition)
        groups[key] = {model: mine for model in models if (mine := [run for run in members if run.model == model])}
    return groups


def verdicts(bundle: Bundle) -> list[GroupVerdict]:
    """One verdict per group with valid runs, in report order, with the plan's reference and margin."""
    margin = plan_margin(bundle)
    if models_are_arms(bundle):
        runs = bundle.scenario_runs
        labels = {run.model: run.model for run in runs}
        return [
            _group_verdict(by_model, labels, arms="models", held=bundle.label(config), reference=None, margin=margin)
            for (config, _scenario), by_model in _model_arm_groups(runs).items()
        ]
    labels = {name: bundle.label(name) for name in config_order(bundle)}
    reference = plan_reference(bundle)
    return [
        _group_verdict(by_config, labels, arms="configs", held=model, reference=reference, margin=margin)
        for (model, _scenario), by_config in group_runs(bundle.scenario_runs, config_order(bundle)).items()
        if by_config
    ]


@dataclass(frozen=True)
class _Behind:
    """One verdict showing ``arm`` significantly worse than another arm, as a clause."""

    arm: str
    clause: str
    throughput: bool
    ratio: float


def _behind(groups: Sequence[GroupVerdict]) -> dict[str, list[_Behind]]:
    """Per arm, the verdicts that show it significantly worse: against the reference, or, as the reference, against
    an arm significantly better than it."""
    found: dict[str, list[_Behind]] = {}
    for group in groups:
        for verdict in group.metrics:
            where = f"{verdict.metric.label} in {group.info.name}"
            for item in verdict.outcomes:
                comparison = item.comparison
                if comparison is None or comparison.ratio is None or comparison.outcome not in ("worse", "better"):
                    continue
                throughput = verdict.metric.name == "rps"
                if comparison.outcome == "worse":
                    clause = f"{item.label} is {item.outcome_text} on {where} at {item.interval_text}"
                    entry = _Behind(item.config, clause, throughput, comparison.ratio)
                else:
                    clause = f"{verdict.reference_label} is behind {item.label} on {where} ({item.interval_text})"
                    entry = _Behind(verdict.reference, clause, throughput, 1.0 / comparison.ratio)
                found.setdefault(entry.arm, []).append(entry)
    return found


def _worst(entries: Sequence[_Behind]) -> _Behind:
    """The clause to quote: throughput first, then the ratio furthest from 1."""
    return max(entries, key=lambda entry: (entry.throughput, abs(math.log(entry.ratio))))


def _behind_text(behind: Mapping[str, Sequence[_Behind]], total: int) -> str:
    parts = [
        f"{_worst(entries).clause}; significantly worse in {len(entries)} of {total} verdicts"
        for entries in behind.values()
    ]
    return f" {'; '.join(parts)}." if parts else ""


def _open_comparisons(groups: Sequence[GroupVerdict], arms: Iterable[str]) -> list[PairedComparison]:
    """Comparisons involving any of ``arms`` that are not settled (inconclusive, or too few pairs)."""
    chosen = set(arms)
    return [
        item.comparison
        for group in groups
        for verdict in group.metrics
        for item in verdict.outcomes
        if item.comparison is not None
        and item.comparison.outcome in ("inconclusive", "too-few")
        and (item.config in chosen or verdict.reference in chosen)
    ]


def _settle_all_text(comparisons: Sequence[PairedComparison]) -> str:
    """ "run about N more repetitions", N the most any of the comparisons needs."""
    needs = [
        MIN_REPETITIONS_FOR_INTERVAL - item.pairs if item.outcome == "too-few" else item.more_repetitions
        for item in comparisons
    ]
    if any(need is None for need in needs):
        return f"more than {MAX_SUGGESTED_REPETITIONS} repetitions would be needed at this noise"
    return f"run about {max(need for need in needs if need is not None)} more repetitions"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _arms_in_order(groups: Sequence[GroupVerdict]) -> list[str]:
    return list(dict.fromkeys(item.config for group in groups for v in group.metrics for item in v.outcomes))


def _has_interval(groups: Sequence[GroupVerdict]) -> bool:
    return any(
        item.comparison is not None and item.comparison.has_interval
        for group in groups
        for verdict in group.metrics
        for item in verdict.outcomes
    )


def _lead(groups: Sequence[GroupVerdict], margin: float) -> str:
    """What the verdicts support for one model: a stack, an equivalence, or what is not settled yet."""
    if all(verdict.named for group in groups for verdict in group.metrics):
        return _against_reference(groups)
    arms = _arms_in_order(groups)
    label = groups[0].label
    behind = _behind(groups)
    candidates = [arm for arm in arms if arm not in behind]
    total = sum(len(group.metrics) for group in groups)
    behind_text = _behind_text({arm: behind[arm] for arm in arms if arm in behind}, total)
    scope = f"{len(groups)} scenario{'s' if len(groups) != 1 else ''}"
    if not candidates:
        return f"no config is best everywhere: each is significantly worse than another somewhere.{behind_text}"
    names = [label(arm) for arm in candidates]
    unsettled = _open_comparisons(groups, candidates)
    if len(candidates) == 1 and not unsettled:
        lead = f"prefer {names[0]}: the only config significantly worse than none of the others in all {scope}"
        return f"{lead}.{behind_text}"
    if len(candidates) == 1:
        return (
            f"{names[0]} leads: every other config is significantly worse somewhere and it is nowhere, but "
            f"{len(unsettled)} of its comparisons are not settled: {_settle_all_text(unsettled)}.{behind_text}"
        )
    if unsettled:
        return f"not settled between {_join(names)}: {_settle_all_text(unsettled)}.{behind_text}"
    if _all_equivalent(groups, candidates):
        return (
            f"{_join(names)} are equivalent within {PLUS_MINUS}{margin:.0%}: each is best or within "
            f"{PLUS_MINUS}{margin:.0%} of the best on every metric in all {scope}, so choose between them on other "
            f"grounds.{behind_text}"
        )
    return (
        f"{_join(names)} are each significantly worse nowhere, but the verdicts do not compare them with each other "
        f"(name one as the plan's reference to compare them directly).{behind_text}"
    )


def _all_equivalent(groups: Sequence[GroupVerdict], arms: Sequence[str]) -> bool:
    """True when, in every verdict, each of ``arms`` is the reference or equivalent to it."""
    return all(
        item.comparison is None or item.comparison.outcome == "equivalent"
        for group in groups
        for verdict in group.metrics
        for item in verdict.outcomes
        if item.config in arms
    )


def _against_reference(groups: Sequence[GroupVerdict]) -> str:
    """With a reference the plan names: each other config's count of outcomes against it, and nothing more (the
    verdicts do not compare the other configs with each other)."""
    reference = groups[0].metrics[0].reference_label
    total = sum(len(group.metrics) for group in groups)
    counts: dict[str, dict[str, int]] = {}
    unsettled: dict[str, list[PairedComparison]] = {}
    for group in groups:
        for verdict in group.metrics:
            for item in verdict.outcomes:
                if item.comparison is None:
                    continue
                tally = counts.setdefault(item.label, {})
                tally[item.comparison.outcome] = tally.get(item.comparison.outcome, 0) + 1
                if item.comparison.outcome in ("inconclusive", "too-few"):
                    unsettled.setdefault(item.label, []).append(item.comparison)
    parts = []
    for name, tally in counts.items():
        words = [
            f"{word} in {tally[key]}"
            for key, word in (("better", "faster"), ("worse", "slower"), ("equivalent", "equivalent"))
            if tally.get(key)
        ]
        if name in unsettled:
            words.append(f"not settled in {len(unsettled[name])} ({_settle_all_text(unsettled[name])})")
        parts.append(f"{name} is {', '.join(words)} of {total} verdicts")
    return f"against the reference {reference}: {'; '.join(parts)}."


def _model_recommendation(model: str, groups: Sequence[GroupVerdict], runs: Sequence[Run], margin: float) -> str:
    share = predict_share(_lowest_load_runs(runs))
    share_text = "" if share is None else f" Predict takes {share:.0%} of the mean request latency at the lowest load."
    arms = _arms_in_order(groups)
    if len(arms) < 2:
        only = groups[0].label(arms[0]) if arms else "no config"
        return f"For the model {model!r}, only {only} has valid runs: nothing to compare.{share_text}"
    if not _has_interval(groups):
        return (
            f"For the model {model!r}: {NO_INTERVAL} with every config measured, so there is no verdict; the ranges "
            f"below are indicative only.{share_text}"
        )
    return f"For the model {model!r}, {_lead(groups, margin)}{share_text}"


def _models_recommendation(config: str, groups: Sequence[GroupVerdict]) -> str:
    """For a bundle whose arms are models: every verdict on the one stack, as its headline says it."""
    parts = [
        f"{verdict.metric.label} in {group.info.name}: {verdict.headline}"
        for group in groups
        for verdict in group.metrics
    ]
    return f"On {config}, comparing the models: {'; '.join(parts)}."


def _lowest_load_runs(runs: Sequence[Run]) -> list[Run]:
    """Closed-loop runs at the lowest concurrency: service time without queueing. All runs if there are none."""
    closed = [run for run in runs if run.kind == "closed" and run.concurrency is not None]
    if not closed:
        return list(runs)
    lowest = min(run.concurrency or 0 for run in closed)
    return [run for run in closed if run.concurrency == lowest]


def predict_wall_over_cpu(runs: Iterable[Run]) -> float | None:
    """Median over runs of predict's mean wall time (Server-Timing) / the server's CPU time per request.

    ``None`` when no run recorded both. Read it from the lowest load, where a CPU-bound predict is not preempted.
    """
    ratios = [
        run.server_timing_ms["predict_mean"] * US_PER_MS / run.server_cpu_us_per_request
        for run in runs
        if "predict_mean" in run.server_timing_ms
        and run.server_cpu_us_per_request is not None
        and run.server_cpu_us_per_request > 0.0
    ]
    return median(ratios) if ratios else None


def predict_kind(wall_over_cpu: float | None) -> PredictKind | None:
    """ "waiting" (wall time at least :data:`WAITING_RATIO` x the request's CPU), "cpu-bound" (between
    :data:`CPU_BOUND_MIN_RATIO` and :data:`CPU_BOUND_MAX_RATIO`), else ``None``: the measurement does not say."""
    if wall_over_cpu is None:
        return None
    if wall_over_cpu >= WAITING_RATIO:
        return "waiting"
    if CPU_BOUND_MIN_RATIO <= wall_over_cpu <= CPU_BOUND_MAX_RATIO:
        return "cpu-bound"
    return None


def _async_note(model: str, groups: Sequence[GroupVerdict], bundle: Bundle) -> str | None:
    """Why an async def config is slower, only where the lowest-load runs show whether predict waits or computes."""
    async_configs = {name for name, info in bundle.configs.items() if info.route == "async"}
    slower = [
        item
        for group in groups
        for verdict in group.metrics
        for item in verdict.outcomes
        if verdict.metric.name == "rps" and item.config in async_configs and item.outcome == verdict.metric.worse
    ]
    runs = _lowest_load_runs([run for run in bundle.scenario_runs if run.model == model])
    ratio = predict_wall_over_cpu(runs)
    kind = predict_kind(ratio)
    if not slower or kind is None or ratio is None:
        return None
    names = _join(list(dict.fromkeys(item.label for item in slower)))
    measured = f"predict's wall time is {ratio:.2f}{TIMES} the server's CPU time per request at the lowest load"
    if kind == "waiting":
        cause = (
            "so predict mostly waits: on an async def route it is a blocking call on the event loop, and every other "
            "request waits with it (await a non-blocking call, or use a def route)"
        )
    else:
        cause = (
            "so predict is CPU-bound and runs on the event loop, one request at a time; async helps when waiting on I/O"
        )
    return (
        f"For the model {model!r}, {names} (async def route) had significantly lower throughput; {measured}, {cause}."
    )


def recommendations(bundle: Bundle, groups: Sequence[GroupVerdict]) -> list[str]:
    """Plain-language recommendations that follow the verdicts: per model (or, when models are the arms, per config)."""
    margin = plan_margin(bundle)
    notes: list[str] = []
    for held in dict.fromkeys(group.held for group in groups):
        mine = [group for group in groups if group.held == held]
        if mine[0].arms == "models":
            notes.append(_models_recommendation(held, mine))
            continue
        runs = [run for run in bundle.scenario_runs if run.model == held]
        notes.append(_model_recommendation(held, mine, runs, margin))
        note = _async_note(held, mine, bundle)
        if note is not None:
            notes.append(note)
    return notes
