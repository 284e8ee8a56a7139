"""The Jinja2 environment shared by the report and compare pages: autoescaped, strict, with number filters."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .numbers import format_number, interval_text, median_text
from .stats import CONFIDENCE, Estimate, PairedComparison, PairedDifference
from .verdict import NO_INTERVAL, comparison_label, comparison_numbers

__all__ = [
    "environment",
    "format_compact",
    "format_difference",
    "format_estimate",
    "format_number",
    "format_ratio_cell",
]


def format_estimate(estimate: Estimate | None) -> Markup:
    """Median with its interval, e.g. ``0.731 [0.72-0.74]``, the interval's level and method in its title; "≤" or
    "≥" where censored values leave only a bound, "below"/"above" for an open end; flagged "unstable" when the
    spread is wide."""
    if estimate is None:
        return Markup('<span class="muted">not recorded</span>')
    text = Markup('<span class="value">{}</span>').format(median_text(estimate))
    title = estimate.label if estimate.has_interval else NO_INTERVAL
    text += Markup(' <span class="ci" title="{}">{}</span>').format(title, interval_text(estimate))
    if estimate.censored:
        text += Markup(' <span class="muted">({} censored)</span>').format(estimate.censored)
    if estimate.unstable and estimate.cv is not None:
        text += Markup(' <span class="badge unstable" title="coefficient of variation {}">unstable</span>').format(
            f"{estimate.cv:.0%}"
        )
    return text


def format_compact(estimate: Estimate | None) -> Markup:
    """The median and, when there is one, its interval, without the repetition count or the censored count (a table
    that states those elsewhere); an em dash for None."""
    if estimate is None:
        return Markup('<span class="muted">\N{EM DASH}</span>')
    text = Markup('<span class="value">{}</span>').format(median_text(estimate))
    if estimate.has_interval:
        text += Markup(' <span class="ci" title="{}">{}</span>').format(estimate.label, interval_text(estimate))
    return text


def format_ratio_cell(comparison: PairedComparison | None) -> Markup:
    """A paired comparison: its ratio and interval, then a smaller line saying what they are and how many pairs they
    rest on; an em dash for the reference itself."""
    if comparison is None:
        return Markup("\N{EM DASH}")
    return Markup('<span class="ratio">{}</span><span class="pairs">{}</span>').format(
        comparison_numbers(comparison), comparison_label(comparison)
    )


def format_difference(difference: PairedDifference | None) -> Markup:
    """A paired difference with its sign, e.g. ``+41.2 [+30.1 to +52.3]``, and what the interval is (its family is in
    the table's heading); below the minimum pairs the range of the per-repetition differences."""
    if difference is None or difference.mean is None:
        return Markup('<span class="muted">not measured</span>')
    if difference.low is not None and difference.high is not None:
        numbers = f"{difference.mean:+.1f} [{difference.low:+.1f} to {difference.high:+.1f}]"
        label = f"paired t on differences; {difference.pairs} pairs"  # the table's heading names the family
    else:
        numbers = f"{difference.mean:+.1f} (range {difference.range_low:+.1f} to {difference.range_high:+.1f})"
        label = f"range of {difference.pairs} repetition{'' if difference.pairs == 1 else 's'}: no interval"
    return Markup('<span class="ratio">{}</span><span class="pairs">{}</span>').format(numbers, label)


@cache
def environment() -> Environment:
    """Templates from ``servingbench/reports/templates``; autoescape on, undefined names are errors."""
    env = Environment(
        loader=PackageLoader("servingbench.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = format_number
    env.filters["estimate"] = format_estimate
    env.filters["compact"] = format_compact
    env.filters["ratio"] = format_ratio_cell
    env.filters["difference"] = format_difference
    env.globals["confidence"] = f"{CONFIDENCE:.0%}"
    env.globals["no_interval"] = NO_INTERVAL
    return env
