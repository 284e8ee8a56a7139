"""Statistics over repetitions and latency histograms: pure, seeded, deterministic.

Intervals are percentile bootstraps over repetitions (each repetition is one sample): the median of a
metric with its interval, and the ratio of two medians (current / baseline) with its interval. A ratio
whose interval contains 1 is "no significant difference". A spread wider than :data:`UNSTABLE_CV`
(coefficient of variation) is labelled unstable, as pyperf does for a standard deviation over 10 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram
from scipy import stats as scipy_stats

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "DEFAULT_SEED",
    "HDR_HIGHEST_US",
    "HDR_LOWEST_US",
    "HDR_SIGNIFICANT_DIGITS",
    "MIN_REPETITIONS_FOR_INTERVAL",
    "PERCENTILES",
    "SPECTRUM_MAX_NINES",
    "UNSTABLE_CV",
    "Direction",
    "Estimate",
    "RatioEstimate",
    "coefficient_of_variation",
    "decode_histogram",
    "direction_of",
    "median_ci",
    "merge_histograms",
    "new_histogram",
    "nines",
    "percentile_ms",
    "percentile_spectrum",
    "ratio_of_medians_ci",
]

PERCENTILES = (50, 90, 99, 99.9)
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
DEFAULT_SEED = 20_261_124
MIN_REPETITIONS_FOR_INTERVAL = 2
UNSTABLE_CV = 0.10
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_SIGNIFICANT_DIGITS = 3
SPECTRUM_MAX_NINES = 4.0  # 99.99 %
SPECTRUM_POINTS = 160
US_PER_MS = 1000.0

Direction = Literal["better", "worse", "same"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """The median of ``n`` repetitions with its bootstrap interval (``None`` below two repetitions)."""

    median: float
    ci_low: float | None
    ci_high: float | None
    n: int
    cv: float | None
    unstable: bool

    @property
    def has_interval(self) -> bool:
        """True when an interval could be computed (at least two repetitions)."""
        return self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class RatioEstimate:
    """``ratio`` = median(current) / median(baseline), with its bootstrap interval over repetitions.

    ``significant`` is true only when the interval exists and excludes 1.
    """

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    n_baseline: int
    n_current: int
    significant: bool

    @property
    def has_interval(self) -> bool:
        """True when an interval could be computed (at least two repetitions on each side)."""
        return self.ci_low is not None and self.ci_high is not None


def _as_array(samples: Iterable[float]) -> FloatArray:
    return np.asarray([float(value) for value in samples], dtype=np.float64)


def coefficient_of_variation(samples: Iterable[float]) -> float | None:
    """Sample standard deviation / mean; ``None`` below two samples or for a zero mean."""
    values = _as_array(samples)
    if values.size < MIN_REPETITIONS_FOR_INTERVAL:
        return None
    mean = float(np.mean(values))
    if mean == 0.0:
        return None
    return float(np.std(values, ddof=1)) / abs(mean)


def _finite_interval(low: float, high: float) -> tuple[float | None, float | None]:
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    return None, None


def median_ci(
    samples: Iterable[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Estimate:
    """Median of the samples (one per repetition) with a percentile-bootstrap interval at ``confidence``."""
    values = _as_array(samples)
    if values.size == 0:
        raise ValueError("median_ci needs at least one sample")
    median = float(np.median(values))
    cv = coefficient_of_variation(values)
    unstable = cv is not None and cv > UNSTABLE_CV
    if values.size < MIN_REPETITIONS_FOR_INTERVAL:
        return Estimate(median, None, None, int(values.size), cv, unstable)
    result = scipy_stats.bootstrap(
        (values,),
        np.median,
        n_resamples=resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = _finite_interval(float(result.confidence_interval.low), float(result.confidence_interval.high))
    return Estimate(median, low, high, int(values.size), cv, unstable)


def _ratio_of_medians(baseline: FloatArray, current: FloatArray, axis: int = -1) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.median(current, axis=axis) / np.median(baseline, axis=axis)


def ratio_of_medians_ci(
    baseline: Iterable[float],
    current: Iterable[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> RatioEstimate:
    """median(current) / median(baseline) with an independent two-sample percentile-bootstrap interval.

    Fewer than two samples on either side gives no interval and never a significant result.
    """
    base, cur = _as_array(baseline), _as_array(current)
    if base.size == 0 or cur.size == 0:
        raise ValueError("ratio_of_medians_ci needs at least one sample on each side")
    base_median = float(np.median(base))
    if base_median <= 0.0:
        return RatioEstimate(None, None, None, int(base.size), int(cur.size), False)
    ratio = float(np.median(cur)) / base_median
    if min(base.size, cur.size) < MIN_REPETITIONS_FOR_INTERVAL:
        return RatioEstimate(ratio, None, None, int(base.size), int(cur.size), False)
    result = scipy_stats.bootstrap(
        (base, cur),
        _ratio_of_medians,
        n_resamples=resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = _finite_interval(float(result.confidence_interval.low), float(result.confidence_interval.high))
    significant = low is not None and high is not None and (high < 1.0 or low > 1.0)
    return RatioEstimate(ratio, low, high, int(base.size), int(cur.size), significant)


def direction_of(estimate: RatioEstimate, *, higher_is_better: bool) -> Direction:
    """Whether current is ``better``, ``worse`` or the ``same`` as baseline (same = not significant)."""
    if not estimate.significant or estimate.ratio is None:
        return "same"
    increased = estimate.ratio > 1.0
    return "better" if increased == higher_is_better else "worse"


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds: 1 us .. 60 s, 3 significant digits."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)


def decode_histogram(encoded: str) -> HdrHistogram:
    """Decode one HdrHistogram V2 compressed base64 string; raise ``ValueError`` if it is not one."""
    try:
        return HdrHistogram.decode(encoded)
    except Exception as exc:  # hdrh raises several unrelated types for corrupt input
        raise ValueError(f"not an HdrHistogram V2 base64 string: {exc}") from exc


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram | None:
    """Sum the encoded histograms (e.g. over repetitions); ``None`` when there are none."""
    merged: HdrHistogram | None = None
    for text in encoded:
        if merged is None:
            merged = new_histogram()
        merged.add(decode_histogram(text))
    return merged


def percentile_ms(histogram: HdrHistogram, percentile: float) -> float:
    """The value at ``percentile`` (0..100) of a microsecond histogram, in milliseconds."""
    return float(histogram.get_value_at_percentile(percentile)) / US_PER_MS


def nines(percentile: float) -> float:
    """Position of a percentile on a "nines" axis: 0 % -> 0, 90 % -> 1, 99 % -> 2, 99.9 % -> 3."""
    return -math.log10(1.0 - percentile / 100.0)


def percentile_spectrum(
    histogram: HdrHistogram, *, max_nines: float = SPECTRUM_MAX_NINES, points: int = SPECTRUM_POINTS
) -> list[tuple[float, float]]:
    """``(nines, latency ms)`` pairs from 0 % up to ``max_nines``, capped where the sample count runs out."""
    count = int(histogram.get_total_count())
    if count == 0:
        return []
    reachable = min(max_nines, math.log10(count)) if count > 1 else 0.0
    positions: Sequence[float] = np.linspace(0.0, reachable, max(points, 2)).tolist()
    percentiles = [100.0 * (1.0 - 10.0**-x) for x in positions]
    values = histogram.get_percentile_to_value_dict(percentiles)  # one pass over the buckets
    return [(x, float(values[p]) / US_PER_MS) for x, p in zip(positions, percentiles, strict=True) if p in values]
