"""What a check decides: one row per figure, a status, the exit code and a one-line reason.

Exit codes (``servingbench check``): :data:`EXIT_PASS` 0, :data:`EXIT_REGRESSION` 1, :data:`EXIT_USAGE` 2 (a usage
error: argparse's own code, also for an unknown ref or plan), :data:`EXIT_NO_VERDICT` 3 (the check ran but cannot
judge: too few valid repetitions, another machine, an incomplete run, a base that would not build).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .figures import GATE_METRICS, MIN_UNITS, FigureKey, GateMetric

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_VERDICT",
    "EXIT_PASS",
    "EXIT_REGRESSION",
    "EXIT_USAGE",
    "CheckResult",
    "GateRow",
    "Mode",
    "Status",
    "Verdict",
    "classify",
    "decide",
    "no_verdict",
]

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_NO_VERDICT = 3
EXIT_INTERRUPTED = 130

Status = Literal["pass", "regression", "no verdict"]
Mode = Literal["ab", "baseline"]
Verdict = Literal[
    "regression",  # significantly and materially more expensive: fails
    "improvement",  # significantly and materially cheaper
    "below threshold",  # significant, but smaller than the material threshold
    "equivalent",  # A/B: the whole interval lies within +/- the threshold
    "within noise",  # baseline: inside the A/A prediction interval
    "inconclusive",  # A/B: not significant, and the interval reaches past the threshold
    "too few",  # fewer than MIN_UNITS units: no verdict word
]
EXIT_CODES: dict[Status, int] = {"pass": EXIT_PASS, "regression": EXIT_REGRESSION, "no verdict": EXIT_NO_VERDICT}
PERCENT = 100.0


def _relative(log_value: float | None) -> float | None:
    return None if log_value is None else math.expm1(log_value)


@dataclass(frozen=True)
class GateRow:
    """One judged figure. Every log is of head cost / base cost (+ = more time or CPU per request).

    A/B: ``base``/``head`` are the arms' medians over repetitions, ``n`` the paired units, ``low``/``high`` the
    interval of the mean cost log. Baseline: ``base`` is the baseline's geometric mean of its runs' values, ``head``
    this run's value, ``n`` the calibration runs, ``low``/``high`` the prediction interval of a new run of the same
    code (around 0). ``threshold`` is the material relative cost change; ``more_units`` (inconclusive only): units
    that would likely narrow the interval to the threshold.
    """

    key: FigureKey
    base: float | None
    head: float | None
    n: int
    cost_log: float | None
    low: float | None
    high: float | None
    p_adjusted: float | None
    threshold: float
    threshold_source: str
    verdict: Verdict
    more_units: int | None = None

    @property
    def metric(self) -> GateMetric:
        return GATE_METRICS[self.key.metric]

    @property
    def cost_change(self) -> float | None:
        """Relative change in cost, e.g. 0.15 for 15 % more time or CPU per request."""
        return None if self.cost_log is None else math.expm1(self.cost_log)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key._asdict(),
            "label": self.metric.label,
            "unit": self.metric.unit,
            "base": self.base,
            "head": self.head,
            "n": self.n,
            "cost_change": self.cost_change,
            "low": _relative(self.low),
            "high": _relative(self.high),
            "p_adjusted": self.p_adjusted,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "verdict": self.verdict,
            "more_units": self.more_units,
        }


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome. ``reason`` is one line; ``notes`` say what else a reader should know; ``context`` holds the
    facts of the run (commits, environments, the bundle) for the JSON output."""

    mode: Mode
    status: Status
    reason: str
    rows: tuple[GateRow, ...] = ()
    notes: tuple[str, ...] = ()
    unit: str = "repetition"
    family_level: float | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def regressions(self) -> tuple[GateRow, ...]:
        return tuple(row for row in self.rows if row.verdict == "regression")


def no_verdict(mode: Mode, reason: str, **context: Any) -> CheckResult:
    """The check cannot judge: exit 3 with the reason (what to do about it included)."""
    return CheckResult(mode, "no verdict", f"no verdict: {reason}", context=dict(context))


def classify(
    cost_log: float | None,
    *,
    worse: bool,
    better: bool,
    n: int,
    threshold: float,
    settled: bool,
    baseline: bool,
) -> Verdict:
    """The verdict word of one figure.

    ``worse``/``better``: the figure moved significantly (the interval excludes no change, or the value lies
    outside the prediction interval). ``settled``: not significant, and the interval shows the change is within the
    threshold (A/B) or the value lies inside the prediction interval (baseline).
    """
    if cost_log is None or n < MIN_UNITS:
        return "too few"
    material = math.log1p(threshold)
    if worse:
        return "regression" if cost_log > material else "below threshold"
    if better:
        return "improvement" if -cost_log > material else "below threshold"
    if baseline:
        return "within noise"
    return "equivalent" if settled else "inconclusive"


def _describe(row: GateRow) -> str:
    change = row.cost_change or 0.0
    return f"{row.key.label()} {change * PERCENT:+.1f}% cost (threshold {row.threshold * PERCENT:.0f}%)"


def decide(mode: Mode, rows: Sequence[GateRow]) -> tuple[Status, str]:
    """Any regression fails; otherwise a figure with too few units is no verdict; otherwise pass."""
    regressions = [row for row in rows if row.verdict == "regression"]
    if regressions:
        worst = max(regressions, key=lambda row: row.cost_log or 0.0)
        return "regression", f"regression in {len(regressions)} of {len(rows)} figures; worst: {_describe(worst)}"
    few = [row for row in rows if row.verdict == "too few"]
    if not rows:
        return "no verdict", "no verdict: the run measured no figure the gate judges"
    if few:
        row = few[0]
        return "no verdict", (
            f"no verdict: {row.key.label()} has {row.n} valid "
            f"{'calibration runs' if mode == 'baseline' else 'paired units'} (need {MIN_UNITS})"
        )
    counts = {word: sum(row.verdict == word for row in rows) for word in ("improvement", "inconclusive")}
    extra = ", ".join(f"{count} {word}" for word, count in counts.items() if count)
    return "pass", f"no regression in {len(rows)} figures" + (f" ({extra})" if extra else "")
