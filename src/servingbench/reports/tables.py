"""Rows of the report's tables: the summary, errors by kind, every run with its artifacts, how it was measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .bundle import Bundle, CapacityResult, CapacityStep, ModelInfo, Run
from .metrics import metric_samples
from .speed import probe_readings
from .stats import (
    CONFIDENCE,
    MAX_SUGGESTED_REPETITIONS,
    MIN_REPETITIONS_FOR_INTERVAL,
    SETTLING_POWER,
    UNSTABLE_CV,
    Estimate,
    median_interval,
)
from .verdict import (
    ScenarioInfo,
    arrivals_text,
    config_order,
    group_runs,
    models_are_arms,
    plan_margin,
    plan_reference,
    scenario_info,
)

__all__ = [
    "SUMMARY_METRICS",
    "ErrorRow",
    "Measurement",
    "ModelFacts",
    "RunRow",
    "SearchRow",
    "StepRow",
    "SummaryRow",
    "artifact_link",
    "error_rows",
    "measurement",
    "model_facts",
    "run_rows",
    "search_rows",
    "statistics_text",
    "summary_rows",
]

SUMMARY_METRICS = ("rps", "p50", "p90", "p99", "p999", "cpu_us_per_request", "rss_mb_per_worker")
ENVIRONMENT_KEYS = (
    "cpu_model",
    "logical_cpus",
    "usable_cpus",
    "cpu_quota",
    "server_cpus",
    "load_cpus",
    "blas_threads",
    "hostname",
    "kernel",
    "platform",
    "python",
    "git_revision",
    "git_dirty",
    "load_avg_before",
    "load_avg_after",
    "fingerprint",
)
SHA_PREFIX = 12  # hex digits of a model's sha256 the report shows
OUTPUT_TEXT = {
    "value": "a value (regression)",
    "label": "a class label",
    "probabilities": "class probabilities",
}
SAMPLES_FROM_MODEL = (
    "rows drawn from what the model records (its categories and value ranges), not real samples: the load may take "
    "other paths through the model than your traffic does"
)


@dataclass(frozen=True)
class SummaryRow:
    """One config x model x scenario: medians over valid repetitions with intervals (``None`` = not recorded)."""

    info: ScenarioInfo
    config: str
    label: str
    valid: int
    total: int
    estimates: Mapping[str, Estimate | None]
    requests: int
    errors: int


@dataclass(frozen=True)
class ErrorRow:
    """Errors of one kind summed over every run (valid or not) of one config x model x scenario."""

    model: str
    scenario: str
    label: str
    kind: str
    count: int
    requests: int


@dataclass(frozen=True)
class RunRow:
    """One run as listed in the report, with relative links to its artifacts (``None`` when missing)."""

    run: Run
    label: str
    locust_html: str | None
    server_log: str | None


@dataclass(frozen=True)
class StepRow:
    """One measured step of a capacity curve (or search). Rates in req/s, p99 in ms, ``error_rate`` a fraction.

    ``ok`` says whether the step met the SLO (``None``: not recorded); ``run`` is the step's run id, ``linked``
    whether the bundle holds that run, ``counted`` whether its measurement was valid (``None`` without a run).
    ``generator_limited``: it failed only because the load generator fell behind, so it was re-run and does not
    count as the server's; ``requests`` and ``wall_s`` come from the step's run; ``drain_s`` and ``drain_backlog``
    say how the server was drained after a failed step (see :class:`CapacityStep`).
    """

    rate: float
    achieved_rps: float | None
    p99_ms: float | None
    error_rate: float | None
    late: int | None
    dropped: int | None
    ok: bool | None
    reason: str | None
    run: str | None
    linked: bool
    counted: bool | None
    generator_limited: bool = False
    requests: int | None = None
    wall_s: float | None = None
    drain_s: float | None = None
    drain_backlog: int | None = None

    @property
    def drain_text(self) -> str:
        """How the server was drained after this step ("" when it was not)."""
        if self.drain_s is None:
            return ""
        if self.drain_backlog is None:
            return f"drained in {self.drain_s:.1f} s"
        return f"drained in {self.drain_s:.1f} s ({self.drain_backlog} request(s) waiting at its socket at most)"


@dataclass(frozen=True)
class SearchRow:
    """One capacity search (config x model x repetition x arrival process) with its steps in the order measured.

    ``result`` is ``None`` for a search whose steps are in the bundle but whose capacity entry is not (the run
    was interrupted mid-search); ``arrivals`` and ``slo_p99_ms`` are then unknown.
    """

    id: str | None
    config: str
    label: str
    model: str
    repetition: int
    arrivals: str | None
    slo_p99_ms: float | None
    result: CapacityResult | None
    steps: tuple[StepRow, ...]

    @property
    def arrivals_text(self) -> str:
        """e.g. "Poisson arrivals", or "arrivals not recorded"."""
        return arrivals_text(self.arrivals) if self.arrivals is not None else "arrivals not recorded"


@dataclass(frozen=True)
class Measurement:
    """How the runs were measured, as stated in the bundle."""

    fairness: tuple[str, ...]
    server_cpus: str
    load_cpus: str
    environment: tuple[tuple[str, str], ...]
    packages: tuple[tuple[str, str], ...]
    warmup_s: str
    duration_s: str
    repetitions: str
    seed: str
    preset: str
    order: str
    searches: str | None = None
    statistics: tuple[str, ...] = ()
    sessions: str = "not recorded"


@dataclass(frozen=True)
class ModelFacts:
    """What one of the plan's models is, in words: ``identity`` (name, version, sha256 prefix, kind), ``spec`` (what
    the plan asked for), ``input`` (the request shape and, for named columns, each column's kind), ``output`` and
    ``samples`` (where the load's rows came from; ``synthetic_rows`` when drawn from the model, not real samples)."""

    name: str
    identity: str
    spec: str | None
    input: str
    columns: tuple[tuple[str, str], ...]
    output: str
    samples: str | None
    synthetic_rows: bool


def _identity(info: ModelInfo) -> str:
    parts = [f"{info.model_name or info.name}" + (f" v{info.version}" if info.version else "")]
    if info.sha256:
        parts.append(f"sha256 {info.sha256[:SHA_PREFIX]}\N{HORIZONTAL ELLIPSIS}")
    if info.kind:
        parts.append(info.kind)
    return ", ".join(parts)


def _input_text(info: ModelInfo) -> str:
    if not info.columns:
        count = f"{info.n_features} " if info.n_features is not None else ""
        return f"a list of {count}numbers per row"
    kinds = ", ".join(f"{count} {kind}" for kind, count in _kind_counts(info).items())
    return f"{len(info.columns)} named columns ({kinds}), one record per row"


def _kind_counts(info: ModelInfo) -> dict[str, int]:
    counts: dict[str, int] = {}
    for column in info.columns:
        counts[column.kind] = counts.get(column.kind, 0) + 1
    return counts


def _column_text(kind: str, categories: int | None, nullable: bool) -> str:
    known = f", {categories} categories" if categories is not None else ""
    return f"{kind}{known}{', may be null' if nullable else ''}"


def _output_text(info: ModelInfo) -> str:
    if info.output_kind is None:
        return "what the model predicts (not recorded for a bundled or synthetic model)"
    text = OUTPUT_TEXT.get(info.output_kind, info.output_kind)
    classes = f" over {info.classes} classes" if info.classes and info.output_kind != "value" else ""
    return f"{text}{classes} ({info.output_method or 'predict'})"


def _samples_text(info: ModelInfo) -> str | None:
    if info.sample_source is None:
        return None
    if info.samples_from_model:
        return SAMPLES_FROM_MODEL
    return f"real rows, from {info.sample_source.removeprefix('file ')}"


def model_facts(bundle: Bundle) -> list[ModelFacts]:
    """Every model the bundle measured, with what ``GET /model`` said it is (name only in bundles that lack it)."""
    names = list(dict.fromkeys([*bundle.models, *(run.model for run in bundle.runs)]))
    facts = []
    for name in names:
        info = bundle.models.get(name)
        if info is None:
            facts.append(ModelFacts(name, "not recorded in this bundle", None, "not recorded", (), "not recorded", None,
                                    False))  # fmt: skip
            continue
        columns = tuple(
            (column.name, _column_text(column.kind, column.categories, column.nullable)) for column in info.columns
        )
        facts.append(
            ModelFacts(
                name=name,
                identity=_identity(info),
                spec=info.spec,
                input=_input_text(info),
                columns=columns,
                output=_output_text(info),
                samples=_samples_text(info),
                synthetic_rows=info.samples_from_model,
            )
        )
    return facts


def summary_rows(bundle: Bundle) -> list[SummaryRow]:
    """Per model x scenario x config, valid-run medians of :data:`SUMMARY_METRICS` with intervals.

    Capacity-search steps are left out: each runs at its own rate, so they are listed by :func:`search_rows`.
    """
    order = config_order(bundle)
    rows: list[SummaryRow] = []
    for by_config in group_runs(bundle.all_scenario_runs, order).values():
        for config, runs in by_config.items():
            valid = [run for run in runs if run.counted]
            estimates: dict[str, Estimate | None] = {}
            for metric in SUMMARY_METRICS:
                samples = metric_samples(valid, metric)
                estimates[metric] = median_interval(samples) if samples else None
            rows.append(
                SummaryRow(
                    info=scenario_info(runs[0]),
                    config=config,
                    label=bundle.label(config),
                    valid=len(valid),
                    total=len(runs),
                    estimates=estimates,
                    requests=sum(run.requests for run in runs),
                    errors=sum(run.errors for run in runs),
                )
            )
    return rows


def error_rows(bundle: Bundle) -> list[ErrorRow]:
    """Errors by kind, summed over all runs of each config x model x scenario; empty when there were none.

    Capacity-search steps are left out: their errors are in the step-by-step table (:func:`search_rows`).
    """
    rows: list[ErrorRow] = []
    for (model, scenario), by_config in group_runs(bundle.all_scenario_runs, config_order(bundle)).items():
        for config, runs in by_config.items():
            counts: dict[str, int] = {}
            for run in runs:
                for kind, count in run.errors_by_kind.items():
                    counts[kind] = counts.get(kind, 0) + count
            requests = sum(run.requests for run in runs)
            for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
                rows.append(ErrorRow(model, scenario, bundle.label(config), kind, count, requests))
    return rows


def artifact_link(bundle: Bundle, run: Run, key: str) -> str | None:
    """The artifact's path relative to the bundle, if it is a plain relative path to an existing file."""
    raw = run.artifacts.get(key)
    if not raw:
        return None
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        return None
    return str(path) if (bundle.path / path).is_file() else None


def run_rows(bundle: Bundle) -> list[RunRow]:
    """Every run in executed order (runs without an order last), with artifact links."""
    runs = sorted(bundle.runs, key=lambda run: (run.order is None, run.order or 0, run.id))
    return [
        RunRow(
            run,
            bundle.label(run.config),
            artifact_link(bundle, run, "locust_html"),
            artifact_link(bundle, run, "server_log"),
        )
        for run in runs
    ]


def _step_from_run(run: Run) -> StepRow:
    return StepRow(
        rate=run.target_rps if run.target_rps is not None else run.offered_rps or 0.0,
        achieved_rps=run.achieved_rps,
        p99_ms=run.latency_ms.get("p99"),
        error_rate=run.errors / run.requests if run.requests else None,
        late=run.late,
        dropped=run.dropped,
        ok=run.step_ok,
        reason=run.step_reason,
        run=run.id,
        linked=True,
        counted=run.counted,
        requests=run.requests,
        wall_s=run.wall_s,
    )


def _or(value: Any, fallback: Any) -> Any:
    return value if value is not None else fallback


def _step_row(step: CapacityStep, run: Run | None) -> StepRow:
    """The step as the capacity entry recorded it; what an older entry lacks is read from the step's run."""
    if run is None:
        return StepRow(
            rate=step.rate,
            achieved_rps=step.achieved_rps,
            p99_ms=step.p99_ms,
            error_rate=step.error_rate,
            late=step.late,
            dropped=step.dropped,
            ok=step.ok,
            reason=step.reason,
            run=step.run,
            linked=False,
            counted=None,
            generator_limited=step.generator_limited,
            requests=step.requests,
            drain_s=step.drain_s,
            drain_backlog=step.drain_backlog,
        )
    from_run = _step_from_run(run)
    return StepRow(
        rate=step.rate,
        achieved_rps=_or(step.achieved_rps, from_run.achieved_rps),
        p99_ms=_or(step.p99_ms, from_run.p99_ms),
        error_rate=_or(step.error_rate, from_run.error_rate),
        late=_or(step.late, from_run.late),
        dropped=_or(step.dropped, from_run.dropped),
        ok=step.ok,
        reason=step.reason or run.step_reason,
        run=run.id,
        linked=True,
        counted=from_run.counted and not step.generator_limited,
        generator_limited=step.generator_limited,
        requests=_or(step.requests, from_run.requests),
        wall_s=run.wall_s,
        drain_s=step.drain_s,
        drain_backlog=step.drain_backlog,
    )


def _search_row(
    bundle: Bundle, result: CapacityResult, runs: Mapping[str, Run], step_runs: Mapping[str, list[Run]]
) -> SearchRow:
    steps = tuple(_step_row(step, runs.get(step.run or "")) for step in result.steps)
    if not steps and result.id is not None:
        steps = tuple(_step_from_run(run) for run in step_runs.get(result.id, []))
    return SearchRow(
        id=result.id,
        config=result.config,
        label=bundle.label(result.config),
        model=result.model,
        repetition=result.repetition,
        arrivals=result.arrivals,
        slo_p99_ms=result.slo_p99_ms,
        result=result,
        steps=steps,
    )


def _unfinished_search_row(bundle: Bundle, search: str, runs: Sequence[Run]) -> SearchRow:
    first = runs[0]
    return SearchRow(
        id=search,
        config=first.config,
        label=bundle.label(first.config),
        model=first.model,
        repetition=first.repetition,
        arrivals=None,
        slo_p99_ms=None,
        result=None,
        steps=tuple(_step_from_run(run) for run in runs),
    )


def search_rows(bundle: Bundle) -> list[SearchRow]:
    """Every capacity search with its steps, by model, arrival process, config (plan order) and repetition.

    Searches whose step runs are in the bundle without a capacity entry (an interrupted run) are listed too.
    """
    step_runs: dict[str, list[Run]] = {}
    for run in sorted(bundle.step_runs, key=lambda item: (item.order is None, item.order or 0, item.id)):
        step_runs.setdefault(run.search or "", []).append(run)
    runs = {run.id: run for run in bundle.runs}
    rows = [_search_row(bundle, result, runs, step_runs) for result in bundle.capacity]
    known = {result.id for result in bundle.capacity}
    rows += [_unfinished_search_row(bundle, search, runs) for search, runs in step_runs.items() if search not in known]
    models = list(dict.fromkeys(row.model for row in rows))
    rank = {name: index for index, name in enumerate(config_order(bundle))}

    def key(row: SearchRow) -> tuple[int, bool, str, float, int, int]:
        unknown = row.result is None  # unfinished searches last within their model
        where = (row.arrivals or "", row.slo_p99_ms or 0.0, rank.get(row.config, len(rank)), row.repetition)
        return (models.index(row.model), unknown, *where)

    return sorted(rows, key=key)


def _searches_text(bundle: Bundle) -> str | None:
    """e.g. "6 curves, 41 measured steps; Poisson arrivals; p99 SLO 50 ms"; ``None`` without capacity entries."""
    if not bundle.capacity and not bundle.step_runs:
        return None
    count = len(bundle.capacity)
    curves = all(result.is_curve for result in bundle.capacity)
    noun = ("curve", "curves") if curves else ("search", "searches")
    steps = sum(len(result.steps) for result in bundle.capacity) or len(bundle.step_runs)
    kinds = ", ".join(arrivals_text(name) for name in dict.fromkeys(result.arrivals for result in bundle.capacity))
    slos = ", ".join(f"{slo:g} ms" for slo in dict.fromkeys(result.slo_p99_ms for result in bundle.capacity))
    text = f"{count} {noun[count != 1]}, {steps} measured steps"
    return text + (f"; {kinds}; p99 SLO {slos}" if kinds else "")


def _display(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) if value else "none"
    return str(value)


def _span(values: Sequence[float], unit: str) -> str:
    if not values:
        return "not recorded"
    low, high = min(values), max(values)
    return f"{low:g} {unit}" if low == high else f"{low:g} to {high:g} {unit}"


def _repetitions(runs: Sequence[Run]) -> str:
    """Valid repetitions per config x model x scenario, and all runs when some did not count."""
    valid: dict[tuple[str, str, str], int] = {}
    total: dict[tuple[str, str, str], int] = {}
    for run in runs:
        key = (run.config, run.model, run.scenario)
        total[key] = total.get(key, 0) + 1
        valid[key] = valid.get(key, 0) + (1 if run.counted else 0)
    if not total:
        return "no runs"
    text = _span(sorted(set(valid.values())), "valid per config x model x scenario")
    if valid != total:
        text += f" ({_span(sorted(set(total.values())), 'runs including invalid ones')})"
    return text


def _order_text(runs: Sequence[Run]) -> str:
    ordered = sorted((run for run in runs if run.order is not None), key=lambda run: run.order or 0)
    if len(ordered) < 2:
        return "single run" if ordered else "execution order not recorded"
    switches = sum(1 for before, after in pairwise(ordered) if before.config != after.config)
    return f"{len(ordered)} runs in recorded order; the config changed {switches} times between consecutive runs"


def speed_text(runs: Sequence[Run], kind: object = None, memory_kind: object = None) -> str | None:
    """The machine's speed over the run as its speed probe saw it (``harness.speed``: CPU microseconds of a fixed
    piece of work on the server's cores during every run; higher = slower), and its memory probe where the runs
    recorded one, or ``None`` when no run recorded the first. ``kind``, ``memory_kind``: the probes' kinds
    (``environment.speed_probe``, ``environment.memory_probe``); values of two kinds do not compare."""
    values = probe_readings(runs)
    if not values:
        return None
    low, mid, high = (float(value) for value in np.percentile(values, [10, 50, 90]))
    memory = probe_readings(runs, memory=True)
    memory_part = ""
    if memory:
        m_low, m_mid, m_high = (float(value) for value in np.percentile(memory, [10, 50, 90]))
        memory_part = (
            f"; memory probe median {m_mid:.0f} us over {len(memory)} runs (P10 {m_low:.0f}, P90 {m_high:.0f}"
            + (f", probe {memory_kind}" if memory_kind else "")
            + "): the shared caches' contention, which the first does not feel"
        )
    return (
        f"speed probe median {mid:.0f} us over {len(values)} runs (P10 {low:.0f}, P90 {high:.0f}): higher is slower; "
        "compare it between runs on one machine to see how fast the machine was for each"
        + (f" (probe {kind}: only with runs of the same probe)" if kind else " (an older probe: only with runs of it)")
        + memory_part
    )


def measurement(bundle: Bundle) -> Measurement:
    """The measurement conditions stated by the bundle: fairness rules, environment, versions, timing, order."""
    env: Mapping[str, Any] = bundle.environment
    environment = tuple((key, _display(env.get(key))) for key in ENVIRONMENT_KEYS if key in env)
    extra = tuple(
        (key, _display(value)) for key, value in env.items() if key not in ENVIRONMENT_KEYS and key != "packages"
    )
    speed = speed_text(bundle.runs, env.get("speed_probe"), env.get("memory_probe"))
    if speed is not None:
        extra += (("machine_speed", speed),)
    packages_raw = env.get("packages")
    packages = (
        tuple(sorted((str(k), str(v)) for k, v in packages_raw.items())) if isinstance(packages_raw, dict) else ()
    )
    return Measurement(
        fairness=bundle.fairness,
        server_cpus=_display(env.get("server_cpus")),
        load_cpus=_display(env.get("load_cpus")),
        environment=environment + extra,
        packages=packages,
        warmup_s=_span([run.warmup_s for run in bundle.runs if run.warmup_s is not None], "s"),
        duration_s=_span([round(run.duration_s, 2) for run in bundle.runs if run.duration_s is not None], "s"),
        repetitions=_repetitions(bundle.all_scenario_runs),
        seed=_display(bundle.seed),
        preset=_display(bundle.preset),
        order=_order_text(bundle.runs),
        searches=_searches_text(bundle),
        statistics=statistics_text(bundle),
        sessions=_sessions_text(bundle),
    )


def _sessions_text(bundle: Bundle) -> str:
    """e.g. "5 server starts (one per config and model), 0 failed; ready after 10.9 to 11.6 s"."""
    if not bundle.sessions:
        return "not recorded"
    failed = [session for session in bundle.sessions if session.failed]
    ready = [session.start_s for session in bundle.sessions if session.start_s is not None]
    text = f"{len(bundle.sessions)} server start{'s' if len(bundle.sessions) != 1 else ''}, {len(failed)} failed"
    if ready:
        text += f"; ready after {_span([round(value, 1) for value in ready], 's')}"
    if failed:
        text += "; " + "; ".join(f"{session.config}: {session.failed}" for session in failed)
    return text


def statistics_text(bundle: Bundle) -> tuple[str, ...]:
    """The method section's account of the statistics: test, correction, margin, and what a figure cannot show."""
    margin = f"\N{PLUS-MINUS SIGN}{plan_margin(bundle):.0%}"
    reference = plan_reference(bundle)
    arms = "the models on the one config" if models_are_arms(bundle) else "the configs of one model and scenario"
    named = (
        f"The plan names the reference config {bundle.label(reference)!r}: each verdict makes k - 1 comparisons."
        if reference is not None
        else "The reference is the best arm, chosen from the same data."
    )
    return (
        f"Unit: the repetition. Every repetition measures every arm ({arms}), so arms are compared in pairs within "
        "a repetition, which removes the slow drift they share. A repetition where one arm's run is invalid drops "
        "out of that pair only; every cell says how many pairs it rests on.",
        "Test: a paired t interval on the per-repetition log ratios arm / reference; the ratio shown is their "
        "geometric mean. The difference of two runs' noise is symmetric, and t on it keeps its level with 5 to 20 "
        "pairs, two-level (bimodal) machine-speed noise included (checked by simulation in the test suite); exact "
        "sign-flip or signed-rank tests cannot reach 95% with 5 or 6 pairs.",
        f"Correction: Bonferroni, {CONFIDENCE:.0%} for the whole family of comparisons a verdict could make. "
        f"{named} With a data-chosen best the family is every pair, k (k - 1) / 2, since the best is picked from the "
        'same noise; correcting for only k - 1 comparisons would make false "slower" calls likely (the winner\'s '
        "curse). Each interval is labelled with its family.",
        f"Outcomes: faster or slower when the corrected interval excludes 1; equivalent within {margin} (the plan's "
        "equivalence_margin) when the whole corrected interval lies inside it, i.e. two one-sided tests at the "
        "corrected level; otherwise not settled, with the further repetitions that would settle it with a "
        f"{SETTLING_POWER:.0%} chance if the observed ratio and spread held (a plug-in estimate; beyond "
        f"{MAX_SUGGESTED_REPETITIONS} the report says so). Fewer than {MIN_REPETITIONS_FOR_INTERVAL} pairs: no "
        "interval and no verdict, only the range of the per-repetition ratios, labelled as such.",
        "One arm's figures: the median over valid repetitions with a distribution-free interval between two order "
        f"statistics, exact for any noise shape and labelled with its level (min to max of 5 covers 93.75%; from 6 "
        "repetitions at least 95%); censored values (a capacity below the lowest rate measured, or at least the "
        "highest; a p99 past the SLO at a rate a climb never reached) count as beyond their bound, which leaves that "
        f'end of the interval open. "Unstable" marks a coefficient of variation over {UNSTABLE_CV:.0%}.',
        "Capacity comparisons: the paired t interval on log ratios over the repetitions where both configs have a "
        "measured capacity; a repetition censored on either side is left out of that pair (the count is shown) and "
        "checked against the verdict: where its bounds decide which config is higher (e.g. below 100 req/s against "
        "150 measured) and that contradicts a faster or slower call, or where any pair is left out of an "
        "equivalence, the outcome becomes not settled. A sign-only test of the censored pairs cannot reach 95% with "
        "5 or 6 repetitions, and dropping them silently would favour the config that failed more often.",
        f"What a figure cannot show: a difference smaller than its interval (equivalent rules out only differences "
        f"beyond {margin}; not settled rules out nothing and is no evidence that the stacks are alike); why a "
        "difference arises (a causal note appears only where server CPU per request and the Server-Timing predict "
        "time show it); machines, models, loads or versions other than those measured; and a disturbance that hits "
        "every arm of a repetition alike, which cancels in the ratios but not in the absolute figures.",
    )
