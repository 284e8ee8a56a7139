"""The Jinja2 environment shared by the report and compare pages: autoescaped, strict, with number filters."""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .stats import CONFIDENCE, Estimate, PairedComparison
from .verdict import DASH, NO_INTERVAL, comparison_label, comparison_numbers

__all__ = ["environment", "format_estimate", "format_number", "format_ratio_cell", "write_atomic"]

READABLE_FILE_MODE = 0o644


def format_number(value: float | None) -> str:
    """Four significant figures or so, without scientific notation: 1234, 123.4, 12.34, 0.731."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_estimate(estimate: Estimate | None) -> Markup:
    """Median with its interval, e.g. ``0.731 [0.72-0.74]``, the interval's level and method in its title;
    "≤" where censored values leave only an upper bound; flagged "unstable" when the spread is wide."""
    if estimate is None:
        return Markup('<span class="muted">not recorded</span>')
    bound = "\N{LESS-THAN OR EQUAL TO} " if estimate.median_is_bound else ""
    text = Markup('<span class="value">{}{}</span>').format(bound, format_number(estimate.median))
    if estimate.has_interval:
        low = "below" if estimate.ci_low is None else format_number(estimate.ci_low)
        interval = f"[{low}{DASH}{format_number(estimate.ci_high)}]"
        text += Markup(' <span class="ci" title="{}">{}</span>').format(estimate.label, interval)
    else:
        text += Markup(' <span class="ci" title="{}">(n={})</span>').format(NO_INTERVAL, estimate.n)
    if estimate.censored:
        text += Markup(' <span class="muted">({} censored)</span>').format(estimate.censored)
    if estimate.unstable and estimate.cv is not None:
        text += Markup(' <span class="badge unstable" title="coefficient of variation {}">unstable</span>').format(
            f"{estimate.cv:.0%}"
        )
    return text


def format_ratio_cell(comparison: PairedComparison | None) -> Markup:
    """A paired comparison: its ratio and interval, then a smaller line saying what they are and how many pairs they
    rest on; an em dash for the reference itself."""
    if comparison is None:
        return Markup("\N{EM DASH}")
    return Markup('<span class="ratio">{}</span><span class="pairs">{}</span>').format(
        comparison_numbers(comparison), comparison_label(comparison)
    )


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
    env.filters["ratio"] = format_ratio_cell
    env.globals["confidence"] = f"{CONFIDENCE:.0%}"
    env.globals["no_interval"] = NO_INTERVAL
    return env


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, READABLE_FILE_MODE)  # mkstemp makes it private; a report is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
