"""The gate's two-arm paired test: head against base, paired by repetition (or by block of repetitions).

The interval is the one the report's verdicts use (``reports.stats.log_ratio_interval``); what the gate adds is the
unit (a repetition, or a block of repetitions on one server start), the p-value and the correction over figures:

- each unit (a repetition, or the block of repetitions one server start served) gives one log ratio head / base;
- the estimate is the mean log ratio, i.e. the geometric mean of the per-unit ratios;
- its interval is a paired t interval on the log ratios at the family's per-figure level, Bonferroni-corrected
  over the figures one check judges (:func:`family_level`);
- below :data:`~servingbench.gate.figures.MIN_UNITS` units there is no interval, only the range.

Why t on log ratios: pairing removes the drift both arms share (they are measured seconds apart); what remains is
the difference of two windows' noise, symmetric whatever its shape, for which t is close to exact even with few
units. Why log: a cost change of +x % and the matching throughput change 1 / (1 + x) are the same size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from servingbench.reports.stats import log_ratio_interval

from .figures import MIN_UNITS, positive

__all__ = [
    "FAMILY_CONFIDENCE",
    "MAX_SUGGESTED_UNITS",
    "PairedTest",
    "block_unit",
    "family_level",
    "paired_test",
    "repetition_unit",
    "unit_log_ratios",
    "units_for_margin",
]

FAMILY_CONFIDENCE = 0.95
"""Confidence of the whole family of figures one check judges: the chance that any figure is called changed when
none is, at most 5 %."""
MAX_SUGGESTED_UNITS = 1000  # beyond this many units, say the margin is out of reach rather than give a number
ZERO_SPREAD = 1e-12  # a log-scale standard deviation below this is rounding, not noise


def family_level(figures: int, confidence: float = FAMILY_CONFIDENCE) -> float:
    """The two-sided level of each figure's interval so that ``figures`` intervals hold together at ``confidence``
    (Bonferroni): 1 - (1 - confidence) / figures."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    return 1.0 - (1.0 - confidence) / max(figures, 1)


def repetition_unit(repetition: int) -> int:
    """Each repetition is its own unit (the servers stay up for the whole run)."""
    return repetition


def block_unit(restart_every: int) -> Callable[[int], int]:
    """Repetitions served by one server start form one unit: they share that start's state (memory layout, hash
    seeds, where the process landed), so they are not independent of each other."""
    if restart_every < 1:
        raise ValueError(f"restart_every must be at least 1, got {restart_every}")
    return lambda repetition: repetition // restart_every


def unit_log_ratios(
    head: Mapping[int, float], base: Mapping[int, float], unit: Callable[[int], int] = repetition_unit
) -> list[float]:
    """log(head / base) per unit, in unit order: the mean over the unit's repetitions where both arms have a positive
    value (a repetition missing on either side drops out of its pair only)."""
    by_unit: dict[int, list[float]] = {}
    for repetition in sorted(head.keys() & base.keys()):
        h, b = positive(head[repetition]), positive(base[repetition])
        if h is not None and b is not None:
            by_unit.setdefault(unit(repetition), []).append(math.log(h / b))
    return [float(np.mean(logs)) for _, logs in sorted(by_unit.items())]


@dataclass(frozen=True)
class PairedTest:
    """The paired t test of ``n`` per-unit log ratios at two-sided ``level``.

    ``mean`` is the mean log ratio; ``low``/``high`` its interval and ``p_value`` the two-sided p-value of "no
    change" (all ``None`` below :data:`MIN_UNITS` units); ``sd`` the log ratios' standard deviation;
    ``range_low``/``range_high`` the smallest and largest log ratio.
    """

    n: int
    level: float
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    p_value: float | None
    range_low: float | None
    range_high: float | None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def above_zero(self) -> bool:
        """The whole interval lies above 0: head is significantly larger."""
        return self.low is not None and self.low > 0.0

    @property
    def below_zero(self) -> bool:
        """The whole interval lies below 0: head is significantly smaller."""
        return self.high is not None and self.high < 0.0


def paired_test(logs: Sequence[float], *, level: float) -> PairedTest:
    """Paired t on per-unit log ratios: mean +/- t(1 - (1 - level) / 2, n - 1) * sd / sqrt(n).

    A zero spread gives a zero-width interval (p 0 when the mean is not 0, else 1).
    """
    n = len(logs)
    if n == 0:
        return PairedTest(0, level, None, None, None, None, None, None, None)
    values = np.asarray(logs, dtype=np.float64)
    mean = float(np.mean(values))
    span = (float(np.min(values)), float(np.max(values)))
    sd = float(np.std(values, ddof=1)) if n > 1 else None
    if n < MIN_UNITS or sd is None:
        return PairedTest(n, level, mean, sd, None, None, None, *span)
    if sd < ZERO_SPREAD:
        return PairedTest(n, level, mean, 0.0, mean, mean, 1.0 if mean == 0.0 else 0.0, *span)
    low, high = log_ratio_interval(values, level)
    p_value = float(2.0 * scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return PairedTest(n, level, mean, sd, float(low), float(high), p_value, *span)


def units_for_margin(sd: float, n: int, level: float, margin_log: float) -> int | None:
    """How many units would make the interval's half-width at most ``margin_log``, at the observed ``sd``; ``None``
    beyond :data:`MAX_SUGGESTED_UNITS` (a plug-in estimate: what to put in the plan, not a promise)."""
    if margin_log <= 0.0:
        return None
    units = np.arange(max(n, MIN_UNITS), MAX_SUGGESTED_UNITS + 1)
    half = scipy_stats.t.ppf(1.0 - (1.0 - level) / 2.0, units - 1) * sd / np.sqrt(units)
    enough = np.flatnonzero(half <= margin_log)
    return int(units[enough[0]]) if enough.size else None
