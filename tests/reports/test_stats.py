"""Statistics: bootstrap intervals, significance, histogram merging. Pure and seeded, so exact where possible."""

from __future__ import annotations

import math

import pytest
from hdrh.histogram import HdrHistogram

from servingbench.reports.stats import (
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_DIGITS,
    coefficient_of_variation,
    decode_histogram,
    direction_of,
    median_ci,
    merge_histograms,
    nines,
    percentile_ms,
    percentile_spectrum,
    ratio_of_medians_ci,
)

FAST_RPS = [1000.0, 1010.0, 990.0, 1005.0, 995.0]
SLOW_RPS = [800.0, 810.0, 790.0, 805.0, 795.0]


def _encoded(values_us: range | list[int]) -> str:
    histogram = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)
    for value in values_us:
        histogram.record_value(value)
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def test_identical_samples_are_not_significant() -> None:
    estimate = ratio_of_medians_ci(FAST_RPS, FAST_RPS)
    assert estimate.ratio == 1.0
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert estimate.ci_low <= 1.0 <= estimate.ci_high
    assert not estimate.significant
    assert direction_of(estimate, higher_is_better=True) == "same"


def test_same_values_in_another_order_are_not_significant() -> None:
    estimate = ratio_of_medians_ci(FAST_RPS, list(reversed(FAST_RPS)))
    assert not estimate.significant


def test_clearly_lower_throughput_is_significant_and_worse() -> None:
    estimate = ratio_of_medians_ci(FAST_RPS, SLOW_RPS)
    assert estimate.ratio == pytest.approx(0.8)
    assert estimate.ci_high is not None and estimate.ci_high < 1.0
    assert estimate.significant
    assert direction_of(estimate, higher_is_better=True) == "worse"


def test_clearly_higher_latency_is_worse_and_lower_is_better() -> None:
    slower = ratio_of_medians_ci([1.0, 1.01, 0.99], [2.0, 2.02, 1.98])
    faster = ratio_of_medians_ci([2.0, 2.02, 1.98], [1.0, 1.01, 0.99])
    assert direction_of(slower, higher_is_better=False) == "worse"
    assert direction_of(faster, higher_is_better=False) == "better"


def test_one_repetition_gives_no_interval_and_no_verdict() -> None:
    estimate = ratio_of_medians_ci([1000.0], [500.0])
    assert estimate.ratio == 0.5
    assert not estimate.has_interval
    assert not estimate.significant
    assert direction_of(estimate, higher_is_better=True) == "same"


def test_zero_baseline_has_no_ratio() -> None:
    estimate = ratio_of_medians_ci([0.0, 0.0], [1.0, 2.0])
    assert estimate.ratio is None and not estimate.significant


def test_bootstrap_is_seeded_and_deterministic() -> None:
    noisy_a, noisy_b = [1.0, 1.3, 0.8, 1.1], [1.2, 0.9, 1.4, 1.0]
    assert ratio_of_medians_ci(noisy_a, noisy_b, seed=7) == ratio_of_medians_ci(noisy_a, noisy_b, seed=7)
    assert median_ci(noisy_a, seed=7) == median_ci(noisy_a, seed=7)


def test_median_ci_brackets_the_median() -> None:
    estimate = median_ci(FAST_RPS)
    assert estimate.median == 1000.0
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert estimate.ci_low <= estimate.median <= estimate.ci_high
    assert estimate.n == 5 and not estimate.unstable


def test_median_ci_of_one_sample_has_no_interval() -> None:
    estimate = median_ci([3.0])
    assert estimate.median == 3.0 and not estimate.has_interval and estimate.cv is None


def test_wide_spread_is_labelled_unstable() -> None:
    estimate = median_ci([100.0, 150.0, 60.0, 120.0, 90.0])
    assert estimate.cv is not None and estimate.cv > 0.1
    assert estimate.unstable


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert coefficient_of_variation([1.0]) is None
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2.0) / 2.0)


def test_merge_histograms_adds_counts_and_keeps_percentiles() -> None:
    first, second = _encoded(range(100, 1100)), _encoded(range(1100, 2100))
    merged = merge_histograms([first, second])
    assert merged is not None
    assert merged.get_total_count() == 2000
    assert percentile_ms(merged, 50) == pytest.approx(1.1, rel=1e-3)
    assert percentile_ms(merged, 100) == pytest.approx(2.099, rel=1e-3)
    assert merge_histograms([]) is None


def test_percentile_from_histogram_in_milliseconds() -> None:
    histogram = decode_histogram(_encoded([731] * 99 + [5000]))
    assert percentile_ms(histogram, 50) == pytest.approx(0.731, rel=1e-3)
    assert percentile_ms(histogram, 99.9) == pytest.approx(5.0, rel=1e-3)


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="HdrHistogram"):
        decode_histogram("not a histogram")


def test_nines_axis_positions() -> None:
    assert nines(0.0) == 0.0
    assert nines(90.0) == pytest.approx(1.0)
    assert nines(99.9) == pytest.approx(3.0)


def test_spectrum_is_monotonic_and_limited_by_sample_count() -> None:
    histogram = decode_histogram(_encoded(range(1, 1001)))
    points = percentile_spectrum(histogram)
    positions = [x for x, _ in points]
    latencies = [y for _, y in points]
    assert positions[0] == 0.0 and positions[-1] == pytest.approx(3.0)  # 1000 samples support 99.9 %, not more
    assert latencies == sorted(latencies)
    assert percentile_spectrum(HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)) == []


def test_spectrum_matches_single_percentile_queries() -> None:
    histogram = decode_histogram(_encoded([value * 7 % 5000 + 1 for value in range(3000)]))
    for position, latency_ms in percentile_spectrum(histogram, points=25):
        assert latency_ms == percentile_ms(histogram, 100.0 * (1.0 - 10.0**-position))
