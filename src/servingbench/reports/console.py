"""The terminal summary printed after ``servingbench run`` and by ``servingbench report``: the report's own grouping
and statistics (:func:`verdicts`, :func:`capacity_views`) as rich tables, so the terminal never says more than the
HTML page does.

Per model x scenario x config: the median over valid repetitions with its interval and the verdict word against the
best config (or the plan's reference), for throughput, p50 and p99; per capacity curve, each config's capacity with
its interval and verdict word; then the plain-language recommendations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .bundle import Bundle, load_bundle
from .capacity import CapacityView, capacity_views
from .metrics import METRICS
from .numbers import estimate_text, format_number
from .stats import CONFIDENCE, GEOMETRIC_MEAN, Estimate
from .verdict import ConfigOutcome, GroupVerdict, MetricVerdict, plan_margin, recommendations, verdicts

__all__ = ["capacity_table", "print_summary", "verdict_table"]

SUMMARY_METRICS = ("rps", "p50", "p99")
OUTCOME_STYLE = {
    "best": "bold cyan",
    "reference": "bold cyan",
    "faster": "cyan",
    "slower": "red",
}
SHORT_WORDS = {"equivalent": "equivalent", "inconclusive": "not settled", "range": "no verdict"}
TIMES = "\N{MULTIPLICATION SIGN}"


def _word(outcome: ConfigOutcome) -> str:
    """The verdict word of a cell with its ratio, coloured: "slower 0.61x", "not settled 0.98x", "best" (the x is
    typeset as a times sign)."""
    text = SHORT_WORDS.get(outcome.outcome, outcome.outcome_text)
    if outcome.comparison is not None and outcome.comparison.ratio is not None:
        text += f" {outcome.comparison.ratio:.2f}{TIMES}"
    style = OUTCOME_STYLE.get(outcome.outcome)
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _cell(verdict: MetricVerdict | None, arm: str) -> str:
    """The estimate on one line, the verdict word on the next; empty when the metric has no verdict here."""
    if verdict is None:
        return ""
    outcome = next((item for item in verdict.outcomes if item.config == arm), None)
    if outcome is None:
        return "not recorded"
    return f"{escape(estimate_text(outcome.estimate))}\n{_word(outcome)}"


def _caption(margin: float) -> str:
    return escape(
        f"median [interval] over valid repetitions; verdicts paired by repetition, {CONFIDENCE:.0%} Bonferroni-"
        f"corrected; equivalent = within \N{PLUS-MINUS SIGN}{margin:.0%}; no verdict below 5 pairs"
    )


def _table(title: str, names: Sequence[str]) -> Table:
    table = Table(title=f"[bold]{escape(title)}[/]", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("config", no_wrap=True, min_width=max((len(name) for name in names), default=6))
    return table


def verdict_table(group: GroupVerdict) -> Table:
    """One model x scenario (or config x scenario when the models are the arms): a row per arm, a column per metric
    with the estimate on one line and the verdict word on the next."""
    arms = list(group.valid_runs.items())
    table = _table(f"{group.held} · {group.info.name} ({group.info.description})", [arm for arm, _ in arms])
    table.add_column("reps", justify="right")
    for name in SUMMARY_METRICS:
        table.add_column(f"{METRICS[name].label} ({METRICS[name].unit})", justify="right")
    by_metric = {verdict.metric.name: verdict for verdict in group.metrics}
    for arm, count in arms:
        table.add_row(escape(arm), str(count), *(_cell(by_metric.get(name), arm) for name in SUMMARY_METRICS))
    return table


def _reference_text(estimate: Estimate) -> str:
    """A capacity at the reference speed: a geometric mean, or a median marked as one (a censored repetition)."""
    text = estimate_text(estimate)
    return text if estimate.statistic == GEOMETRIC_MEAN else f"{text} (median)"


def capacity_table(view: CapacityView) -> Table:
    """Each config's capacity at the SLO in one capacity view, with its verdict word and queueing theory."""
    title = f"capacity · {view.model} · {view.scenario} · {view.arrivals_text} · p99 ≤ {view.slo_p99_ms:g} ms"
    table = _table(title, view.configs)
    table.add_column("capacity (req/s)", justify="right")
    if view.adjusted:
        table.add_column("at the reference speed (geometric mean)", justify="right")
    table.add_column("verdict")
    table.add_column("queueing theory", justify="right")
    for config in view.configs:
        outcome = next((item for item in view.outcomes if item.config == config), None)
        theory = view.theory.get(config)
        at_speed = view.at_speed(config)
        cells = [escape(estimate_text(outcome.estimate)) if outcome is not None else "not measured"]
        if view.adjusted:
            cells.append(escape(_reference_text(at_speed)) if at_speed is not None else "")
        table.add_row(
            escape(config),
            *cells,
            _word(outcome) if outcome is not None else "",
            f"{format_number(theory.rps)} ({theory.model})" if theory is not None else "",
        )
    if view.speed is not None:
        table.caption = escape(view.speed.text)
        table.caption_justify = "left"
    return table


def print_summary(bundle: Bundle | Path | str, console: Console) -> None:
    """Print the capacity and verdict tables and the recommendations of ``bundle`` (loaded, or its directory) to
    ``console``. Raises ``BundleError`` on a bad bundle."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    margin = plan_margin(bundle)
    groups = verdicts(bundle)
    views = capacity_views(bundle)
    for view in views:
        console.print(capacity_table(view))
        for config, note in view.far_below_peak.items():
            console.print(f"\N{BULLET} {escape(config)}: {escape(note)}", highlight=False)
    for group in groups:
        console.print(verdict_table(group))
    if views or groups:
        console.print(_caption(margin), style="dim")
    for note in recommendations(bundle, groups):
        console.print(f"\N{BULLET} {escape(note)}", highlight=False)
