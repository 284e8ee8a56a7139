"""Numbers as the report, the console summary and the headline write them: a few significant figures, an estimate
with its interval and its bounds, in plain text (the HTML page adds its markup around the same words)."""

from __future__ import annotations

from .stats import Estimate

__all__ = ["DASH", "GE", "LE", "estimate_text", "format_number", "interval_text", "median_text"]

DASH = "\N{EN DASH}"
LE = "\N{LESS-THAN OR EQUAL TO}"
GE = "\N{GREATER-THAN OR EQUAL TO}"
THOUSANDS = 1000
HUNDREDS = 100
TENS = 10


def format_number(value: float | None) -> str:
    """Four significant figures or so, without scientific notation: 1234, 123.4, 12.34, 0.731; "n/a" for None."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= THOUSANDS:
        return f"{value:,.0f}"
    if magnitude >= HUNDREDS:
        return f"{value:.1f}"
    if magnitude >= TENS:
        return f"{value:.2f}"
    return f"{value:.3f}"


def median_text(estimate: Estimate) -> str:
    """The median, with "≤" or "≥" where censored values leave only a bound; "unknown" when they leave none."""
    if not estimate.median_known:
        return "unknown"
    bound = f"{LE} " if estimate.median_is_bound else f"{GE} " if estimate.median_at_least else ""
    return f"{bound}{format_number(estimate.median)}"


def interval_text(estimate: Estimate) -> str:
    """ "[0.72-0.74]", "[below-280]" or "[480-above]" (an end censored values leave open; typeset with an en dash);
    "(n=3)" without one."""
    if not estimate.has_interval:
        return f"(n={estimate.n})"
    low = "below" if estimate.ci_low is None else format_number(estimate.ci_low)
    high = "above" if estimate.ci_high is None else format_number(estimate.ci_high)
    return f"[{low}{DASH}{high}]"


def estimate_text(estimate: Estimate | None, unit: str = "") -> str:
    """e.g. "812.0 [790.0-830.0] req/s", "≤ 77.00 (n=3) req/s" (an en dash in the interval); "not recorded" for
    None."""
    if estimate is None:
        return "not recorded"
    suffix = f" {unit}" if unit else ""
    return f"{median_text(estimate)} {interval_text(estimate)}{suffix}"
