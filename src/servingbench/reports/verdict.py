"""The verdict: per model and scenario, which config wins each metric, by how much, and how sure we are.

Every config is compared with the winner of the metric by the ratio of medians over repetitions
(config / winner) and its bootstrap interval; an interval containing 1 is "no significant difference".
The plain-language recommendations are derived from these comparisons and from the share of each
request spent in the model's predict (``server_timing_ms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Literal

from .bundle import DEFAULT_ARRIVALS, DEFAULT_CAPACITY_SCENARIO, Bundle, CapacityResult, Run
from .metrics import METRICS, VERDICT_METRICS, MetricSpec, metric_samples
from .stats import (
    CONFIDENCE,
    DEFAULT_SEED,
    Estimate,
    RatioEstimate,
    direction_of,
    median_ci,
    ratio_of_medians_ci,
)

__all__ = [
    "NO_INTERVAL",
    "PREDICT_DOMINATES_SHARE",
    "CapacityTable",
    "CapacityTheory",
    "ConfigOutcome",
    "GroupVerdict",
    "MetricVerdict",
    "Outcome",
    "ScenarioInfo",
    "arrivals_text",
    "capacity_tables",
    "config_order",
    "format_ratio",
    "group_runs",
    "predict_share",
    "rank_against_best",
    "recommendations",
    "scenario_info",
    "users_text",
    "verdicts",
]

PREDICT_DOMINATES_SHARE = 0.5  # predict takes at least half of the mean request latency
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
NO_INTERVAL = "not enough repetitions for an interval"
OPEN_LOOP_VERDICT_METRICS = ("p50", "p99")

Outcome = Literal["winner", "same", "slower", "faster", "no-interval"]
OUTCOME_TEXT: dict[str, str] = {
    "winner": "best",
    "same": "no significant difference",
    "slower": "slower",
    "faster": "faster",
    "no-interval": NO_INTERVAL,
}
GroupKey = tuple[str, str]
CapacityKey = tuple[str, str, str, float]  # model, scenario, arrivals, SLO p99 (ms)
ARRIVALS_TEXT = {"poisson": "Poisson arrivals", "constant": "constant-rate arrivals"}


def arrivals_text(arrivals: str) -> str:
    """ "Poisson arrivals", "constant-rate arrivals"; an unknown process by its name."""
    return ARRIVALS_TEXT.get(arrivals, f"{arrivals} arrivals")


def _repetitions_text(count: int) -> str:
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
    """One config on one metric: its median with interval and its ratio to the winner (config / winner)."""

    config: str
    label: str
    estimate: Estimate
    vs_winner: RatioEstimate | None
    outcome: Outcome

    @property
    def outcome_text(self) -> str:
        """The outcome in words, e.g. "no significant difference"."""
        return OUTCOME_TEXT[self.outcome]


@dataclass(frozen=True)
class MetricVerdict:
    """Who wins one metric in one group; ``decided`` when the winner is significantly ahead of every other config."""

    metric: MetricSpec
    winner: str
    winner_label: str
    outcomes: tuple[ConfigOutcome, ...]
    decided: bool
    headline: str


@dataclass(frozen=True)
class GroupVerdict:
    """The verdict for one model x scenario over its valid runs."""

    info: ScenarioInfo
    metrics: tuple[MetricVerdict, ...]
    predict_share: float | None
    valid_runs: Mapping[str, int]


@dataclass(frozen=True)
class CapacityTheory:
    """What queueing theory predicts for one config: the median over repetitions of ``rps`` (req/s) from the
    model ``model`` (e.g. "M/D/1") and of the measured ``service_ms``. ``gap`` is measured capacity / theory - 1
    (0.05: 5 % above theory), ``None`` when no repetition met the SLO."""

    rps: float
    model: str
    service_ms: float | None
    gap: float | None


@dataclass(frozen=True)
class CapacityTable:
    """Capacity at the p99 SLO for one model, scenario and arrival process: the highest offered rate (req/s)
    each config sustained, best first. ``notes`` says per config why its figure is only a lower bound and how
    often the SLO was never met; ``theory`` holds the configs a queueing model applies to."""

    model: str
    slo_p99_ms: float
    outcomes: tuple[ConfigOutcome, ...]
    never_met: Mapping[str, int]  # repetitions without a capacity: no rate met the SLO, or the search is unsettled
    headline: str
    scenario: str = DEFAULT_CAPACITY_SCENARIO
    arrivals: str = DEFAULT_ARRIVALS
    notes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    theory: Mapping[str, CapacityTheory] = field(default_factory=dict)

    @property
    def arrivals_text(self) -> str:
        """e.g. "Poisson arrivals"."""
        return arrivals_text(self.arrivals)

    @property
    def named_scenario(self) -> str | None:
        """The search's scenario name, or ``None`` for the plan's default one (not worth a mention)."""
        return None if self.scenario == DEFAULT_CAPACITY_SCENARIO else self.scenario

    @property
    def unranked(self) -> list[str]:
        """Configs without a capacity in any repetition (see their notes why), so with nothing to rank."""
        ranked = {outcome.config for outcome in self.outcomes}
        return [config for config in self.never_met if config not in ranked]


def config_order(bundle: Bundle) -> list[str]:
    """Configs in plan order, then any config only seen in runs, in run order."""
    order = list(bundle.configs)
    for run in bundle.runs:
        if run.config not in order:
            order.append(run.config)
    return order


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


def format_ratio(estimate: RatioEstimate) -> str:
    """e.g. "0.80x (95% CI 0.78-0.82)", typeset with a times sign and an en dash; no interval below 2 reps."""
    if estimate.ratio is None:
        return "an undefined ratio (zero baseline)"
    if estimate.ci_low is None or estimate.ci_high is None:
        return f"{estimate.ratio:.2f}{TIMES} ({NO_INTERVAL})"
    return f"{estimate.ratio:.2f}{TIMES} ({CONFIDENCE:.0%} CI {estimate.ci_low:.2f}{DASH}{estimate.ci_high:.2f})"


def _outcome(vs_winner: RatioEstimate, spec: MetricSpec) -> Outcome:
    if not vs_winner.has_interval:
        return "no-interval"
    direction = direction_of(vs_winner, higher_is_better=spec.higher_is_better)
    if direction == "same":
        return "same"
    return "slower" if direction == "worse" else "faster"


def _best_config(estimates: Mapping[str, Estimate], spec: MetricSpec) -> str:
    def score(config: str) -> float:
        value = estimates[config].median
        return -value if spec.higher_is_better else value

    return min(estimates, key=score)


def _metric_headline(outcomes: Sequence[ConfigOutcome]) -> str:
    """One sentence: the winner against the runner-up, then every other config that is significantly behind."""
    winner, others = outcomes[0], outcomes[1:]
    if not others:
        return f"only {winner.label} has valid runs"
    runner = others[0]
    assert runner.vs_winner is not None
    ratio = format_ratio(runner.vs_winner)
    if runner.outcome == "same":
        text = f"no significant difference between {winner.label} and {runner.label}, which is at {ratio}"
    elif runner.outcome == "no-interval":
        text = f"{winner.label} is ahead of {runner.label}, which is at {ratio}"
    else:
        text = f"{winner.label} wins; the next best, {runner.label}, is {runner.outcome} at {ratio}"
    behind = [
        f"{item.label} is {item.outcome} at {format_ratio(item.vs_winner)}"
        for item in others[1:]
        if item.outcome in ("slower", "faster") and item.vs_winner is not None
    ]
    return "; ".join([text, *behind])


def rank_against_best(
    samples: Mapping[str, Sequence[float]], labels: Mapping[str, str], spec: MetricSpec, *, seed: int = DEFAULT_SEED
) -> tuple[ConfigOutcome, ...]:
    """Every config with samples compared with the best one (config / best), best first, then closest first."""
    estimates = {config: median_ci(values, seed=seed) for config, values in samples.items()}
    best = _best_config(estimates, spec)
    winner = ConfigOutcome(best, labels.get(best, best), estimates[best], None, "winner")
    others = []
    for config, values in samples.items():
        if config != best:
            ratio = ratio_of_medians_ci(samples[best], values, seed=seed)
            others.append(
                ConfigOutcome(config, labels.get(config, config), estimates[config], ratio, _outcome(ratio, spec))
            )
    return (winner, *sorted(others, key=lambda item: _closeness(item, spec)))


def _closeness(outcome: ConfigOutcome, spec: MetricSpec) -> float:
    value = outcome.estimate.median
    return -value if spec.higher_is_better else value


def metric_verdict(
    by_config: Mapping[str, Sequence[Run]], labels: Mapping[str, str], spec: MetricSpec, *, seed: int = DEFAULT_SEED
) -> MetricVerdict | None:
    """The verdict on one metric over configs with at least one sample; ``None`` when no config has one."""
    samples = {config: metric_samples(runs, spec.name) for config, runs in by_config.items()}
    samples = {config: values for config, values in samples.items() if values}
    if not samples:
        return None
    outcomes = rank_against_best(samples, labels, spec, seed=seed)
    decided = len(outcomes) > 1 and all(item.outcome == "slower" for item in outcomes[1:])
    winner = outcomes[0]
    return MetricVerdict(spec, winner.config, winner.label, outcomes, decided, _metric_headline(outcomes))


def group_verdict(
    by_config: Mapping[str, Sequence[Run]], labels: Mapping[str, str], *, seed: int = DEFAULT_SEED
) -> GroupVerdict:
    """The verdict for one model x scenario; ``by_config`` holds only valid runs."""
    first = next(iter(by_config.values()))[0]
    info = scenario_info(first)
    names = OPEN_LOOP_VERDICT_METRICS if info.kind == "open" else VERDICT_METRICS
    metrics = tuple(
        verdict
        for verdict in (metric_verdict(by_config, labels, METRICS[name], seed=seed) for name in names)
        if verdict is not None
    )
    all_runs = [run for runs in by_config.values() for run in runs]
    valid_runs = {config: len(runs) for config, runs in by_config.items()}
    return GroupVerdict(info, metrics, predict_share(all_runs), valid_runs)


def verdicts(bundle: Bundle, *, seed: int = DEFAULT_SEED) -> list[GroupVerdict]:
    """One verdict per model x scenario that has valid runs, in report order."""
    labels = {name: bundle.label(name) for name in config_order(bundle)}
    groups = group_runs(bundle.scenario_runs, config_order(bundle))
    return [group_verdict(by_config, labels, seed=seed) for by_config in groups.values() if by_config]


def _capacity_notes(results: Sequence[CapacityResult]) -> tuple[str, ...]:
    """Why one config's capacity is only a lower bound, and how often no rate met the SLO."""
    notes: list[str] = []
    limits = list(dict.fromkeys(result.limited_by for result in results if result.limited_by is not None))
    if limits:
        notes.append(f"lower bound: {_join(limits)} limit")
    unconverged = sum(1 for result in results if not result.converged and result.capacity_rps is not None)
    if unconverged:
        notes.append(f"not converged in {_repetitions_text(unconverged)}: lower bound")
    above = sum(1 for result in results if result.passed_above and result.converged and result.limited_by is None)
    if above:
        notes.append(f"a higher rate passed once but was not confirmed in {_repetitions_text(above)}: lower bound")
    never = sum(1 for result in results if result.outcome == "never met")
    if never:
        notes.append(f"never met the SLO in {_repetitions_text(never)}")
    unsettled = [result for result in results if result.outcome == "unsettled"]
    if unsettled:
        why = "; ".join(dict.fromkeys(result.stop_reason or "stopped" for result in unsettled))
        notes.append(
            f"unsettled in {_repetitions_text(len(unsettled))}: the SLO was met at some rate but missed when "
            f"re-measured, and the search stopped before a lower rate passed twice ({why})"
        )
    unmeasured = [result for result in results if result.outcome == "not measured"]
    if unmeasured:
        why = "; ".join(dict.fromkeys(result.stop_reason or "no step ran" for result in unmeasured))
        notes.append(f"not measured in {_repetitions_text(len(unmeasured))} ({why})")
    return tuple(notes)


def _bound_reason(results: Sequence[CapacityResult]) -> str | None:
    """Why a config's capacity figures are lower bounds: what limited the search, else how often it did not converge."""
    limits = list(dict.fromkeys(result.limited_by for result in results if result.lower_bound and result.limited_by))
    if limits:
        return f"{_join(limits)} limit"
    unconverged = sum(1 for result in results if result.lower_bound and not result.converged)
    if unconverged:
        return f"the search did not converge in {_repetitions_text(unconverged)}"
    above = sum(1 for result in results if result.lower_bound)
    return f"a higher rate passed but was not confirmed in {_repetitions_text(above)}" if above else None


def _capacity_theory(results: Sequence[CapacityResult], measured: float | None) -> CapacityTheory | None:
    with_theory = [result for result in results if result.theory_rps is not None]
    if not with_theory:
        return None
    rps = median(result.theory_rps for result in with_theory if result.theory_rps is not None)
    models = ", ".join(dict.fromkeys(result.theory or "queueing model" for result in with_theory))
    services = [result.service_ms for result in with_theory if result.service_ms is not None]
    gap = measured / rps - 1.0 if measured is not None and rps > 0.0 else None
    return CapacityTheory(rps, models, median(services) if services else None, gap)


def _capacity_headline(outcomes: Sequence[ConfigOutcome], by_config: Mapping[str, Sequence[CapacityResult]]) -> str:
    """The metric headline, and whether the winner's figure is only a lower bound (the others say so in notes)."""
    winner = outcomes[0]
    reason = _bound_reason(by_config[winner.config])
    headline = _metric_headline(outcomes)
    return headline if reason is None else f"{headline}; but {winner.label}'s figure is only a lower bound ({reason})"


def _capacity_table(key: CapacityKey, results: Sequence[CapacityResult], labels: Mapping[str, str]) -> CapacityTable:
    model, scenario, arrivals, slo = key
    spec = MetricSpec("capacity_rps", f"capacity at p99 ≤ {slo:g} ms", "req/s", True)
    by_config: dict[str, list[CapacityResult]] = {}
    for result in sorted(results, key=lambda item: item.repetition):
        by_config.setdefault(result.config, []).append(result)
    samples = {
        config: [result.capacity_rps for result in mine if result.capacity_rps is not None]
        for config, mine in by_config.items()
    }
    never_met = {
        config: count for config, mine in by_config.items() if (count := sum(r.capacity_rps is None for r in mine))
    }
    ranked = {config: values for config, values in samples.items() if values}
    outcomes = rank_against_best(ranked, labels, spec) if ranked else ()
    measured = {outcome.config: outcome.estimate.median for outcome in outcomes}
    theory = {
        config: found
        for config, mine in by_config.items()
        if (found := _capacity_theory(mine, measured.get(config))) is not None
    }
    headline = (
        _capacity_headline(outcomes, by_config) if outcomes else f"no config met p99 ≤ {slo:g} ms at any offered rate"
    )
    notes = {config: _capacity_notes(mine) for config, mine in by_config.items()}
    return CapacityTable(model, slo, outcomes, never_met, headline, scenario, arrivals, notes, theory)


def capacity_tables(bundle: Bundle) -> list[CapacityTable]:
    """Capacity at the SLO per model, scenario, arrival process and SLO, in bundle order; configs best first."""
    labels = {name: bundle.label(name) for name in config_order(bundle)}
    grouped: dict[CapacityKey, list[CapacityResult]] = {}
    for result in bundle.capacity:
        key = (result.model, result.scenario, result.arrivals, result.slo_p99_ms)
        grouped.setdefault(key, []).append(result)
    return [_capacity_table(key, results, labels) for key, results in grouped.items()]


def _top_and_behind(groups: Sequence[GroupVerdict]) -> tuple[list[str], dict[str, ConfigOutcome]]:
    """Configs best or tied for best on every metric of every group, and each other config's worst ratio."""
    labels = [outcome.label for group in groups for verdict in group.metrics for outcome in verdict.outcomes]
    always_top = dict.fromkeys(labels)
    worst: dict[str, ConfigOutcome] = {}
    for group in groups:
        for verdict in group.metrics:
            top = {item.label for item in verdict.outcomes if item.outcome in ("winner", "same")}
            for label in list(always_top):
                if label not in top:
                    del always_top[label]
            for item in verdict.outcomes:
                if item.outcome == "slower" and verdict.metric.name == "rps" and item.vs_winner is not None:
                    previous = worst.get(item.label)
                    if previous is None or _further(item, previous):
                        worst[item.label] = item
    return list(always_top), worst


def _further(item: ConfigOutcome, other: ConfigOutcome) -> bool:
    assert item.vs_winner is not None and other.vs_winner is not None
    return (item.vs_winner.ratio or 1.0) < (other.vs_winner.ratio or 1.0)


def _lowest_load_runs(runs: Sequence[Run]) -> list[Run]:
    """Closed-loop runs at the lowest concurrency: service time without queueing. All runs if there are none."""
    closed = [run for run in runs if run.kind == "closed" and run.concurrency is not None]
    if not closed:
        return list(runs)
    lowest = min(run.concurrency or 0 for run in closed)
    return [run for run in closed if run.concurrency == lowest]


def _has_interval(groups: Sequence[GroupVerdict]) -> bool:
    return any(
        outcome.vs_winner is not None and outcome.vs_winner.has_interval
        for group in groups
        for verdict in group.metrics
        for outcome in verdict.outcomes
    )


def _any_significant(groups: Sequence[GroupVerdict]) -> bool:
    return any(o.outcome in ("slower", "faster") for group in groups for v in group.metrics for o in v.outcomes)


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _no_difference_note(model: str, scope: str, share: float | None, share_text: str) -> str:
    if share is not None and share >= PREDICT_DOMINATES_SHARE:
        return (
            f"For the model {model!r} the framework difference is within noise: {share_text}, so the model "
            f"dominates; no config differs significantly in any of {scope}. Choose the stack on other grounds."
        )
    tail = f"; {share_text}" if share_text else ""
    return (
        f"For the model {model!r} no difference between the configs is significant at {CONFIDENCE:.0%} "
        f"in any of {scope}{tail}."
    )


def _behind_text(worst: Mapping[str, ConfigOutcome]) -> str:
    parts = [
        f"{label} reaches as little as {format_ratio(item.vs_winner)} of the best throughput"
        for label, item in worst.items()
        if item.vs_winner is not None
    ]
    return f" {'; '.join(parts)}." if parts else ""


def _model_recommendation(model: str, groups: Sequence[GroupVerdict], runs: Sequence[Run]) -> str:
    share = predict_share(_lowest_load_runs(runs))
    share_text = "" if share is None else f"predict takes {share:.0%} of the mean request latency at the lowest load"
    scope = f"{len(groups)} scenario{'s' if len(groups) != 1 else ''}"
    if not _has_interval(groups):
        return f"For the model {model!r}: {NO_INTERVAL}; treat the differences below as indicative, not as a verdict."
    if not _any_significant(groups):
        return _no_difference_note(model, scope, share, share_text)
    top, worst = _top_and_behind(groups)
    condition = ""
    if share is not None:
        matters = "the serving stack matters here" if share < PREDICT_DOMINATES_SHARE else "the model dominates"
        condition = f" ({share_text}: {matters})"
    if len(top) == 1:
        lead = f"prefer {top[0]}: best or tied for best on every metric in all {scope}"
    elif top:
        lead = (
            f"{_join(top)} are statistically tied at the top on every metric in all {scope}, "
            "so choose between them on other grounds"
        )
    else:
        lead = "the best config depends on the load and the metric (see each scenario below)"
    return f"For the model {model!r}, {lead}{condition}.{_behind_text(worst)}"


def _async_note(model: str, groups: Sequence[GroupVerdict], bundle: Bundle) -> str | None:
    async_configs = {name for name, info in bundle.configs.items() if info.route == "async"}
    slower = sorted(
        {
            outcome.label
            for group in groups
            for verdict in group.metrics
            for outcome in verdict.outcomes
            if verdict.metric.name == "rps" and outcome.config in async_configs and outcome.outcome == "slower"
        }
    )
    if not slower:
        return None
    return (
        f"For the model {model!r}, {_join(slower)} (async def route) had significantly lower throughput than the "
        "best config, as expected when a CPU-bound predict runs on the event loop; async helps when waiting on I/O."
    )


def recommendations(bundle: Bundle, groups: Sequence[GroupVerdict]) -> list[str]:
    """Plain-language recommendations, one or two per model, each naming the conditions it holds under."""
    notes: list[str] = []
    for model in dict.fromkeys(group.info.model for group in groups):
        mine = [group for group in groups if group.info.model == model]
        runs = [run for run in bundle.scenario_runs if run.model == model]
        notes.append(_model_recommendation(model, mine, runs))
        note = _async_note(model, mine, bundle)
        if note is not None:
            notes.append(note)
    return notes
