"""Statistics against known answers: paired comparisons, order-statistic intervals, Welch ratios, histograms.

Coverage under noise is checked by simulation in ``test_coverage.py``; here every expected value is computed by
hand or by scipy directly, so a mistake in the engine's plumbing shows as a mismatch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from scipy import stats as scipy_stats

from servingbench.reports.stats import (
    GEOMETRIC_MEAN,
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_DIGITS,
    MAX_SUGGESTED_REPETITIONS,
    MEDIAN,
    Family,
    best_arm,
    coefficient_of_variation,
    compare_arms,
    compare_difference,
    decode_histogram,
    direction_of,
    log_mean_interval,
    median_interval,
    merge_histograms,
    nines,
    order_statistic_ranks,
    paired_differences,
    paired_log_ratios,
    percentile_ms,
    percentile_spectrum,
    ratio_of_medians_ci,
    repetitions_to_settle,
    unpaired_ratio,
)

# Per-repetition throughput of a reference whose speed drifts from repetition to repetition, and arms that follow
# the same drift: pairing must see through it.
DRIFT = (1000.0, 1200.0, 800.0, 1100.0, 900.0, 1050.0)
JITTER = (1.00, 1.02, 0.98, 1.01, 0.99, 1.00)


def _series(scale: float, jitter: tuple[float, ...] = JITTER) -> dict[int, float]:
    return {rep: value * scale * wobble for rep, (value, wobble) in enumerate(zip(DRIFT, jitter, strict=True))}


def _encoded(values_us: range | list[int]) -> str:
    histogram = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)
    for value in values_us:
        histogram.record_value(value)
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


# --- paired comparisons -----------------------------------------------------------------------------------------


def test_the_ratio_is_the_geometric_mean_of_per_repetition_ratios_and_the_interval_is_scipys_t() -> None:
    reference, arm = _series(1.0, (1.0,) * 6), _series(0.8)
    verdict = compare_arms({"ref": reference, "arm": arm}, reference="ref", higher_is_better=True)
    (comparison,) = verdict.comparisons
    logs = np.log([arm[rep] / reference[rep] for rep in range(6)])
    expected = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(confidence_level=0.95)
    assert comparison.ratio == pytest.approx(math.exp(float(np.mean(logs))))
    assert comparison.low == pytest.approx(math.exp(expected.low))
    assert comparison.high == pytest.approx(math.exp(expected.high))
    assert comparison.pairs == 6 and comparison.outcome == "worse"
    assert verdict.family == Family(0.95, 1, "named") and comparison.interval_label == "95% paired t interval"


def test_pairing_sees_through_drift_that_hides_the_difference_between_unpaired_sets() -> None:
    reference, arm = _series(1.0, (1.0,) * 6), _series(0.9)
    paired = compare_arms({"ref": reference, "arm": arm}, reference="ref", higher_is_better=True).comparisons[0]
    unpaired = unpaired_ratio(reference.values(), arm.values())
    assert paired.outcome == "worse" and paired.high is not None and paired.high < 1.0
    assert not unpaired.significant  # the drift (800..1200) swamps 10 % without pairing


def test_the_family_is_every_pair_when_the_best_is_chosen_from_the_data() -> None:
    values = {name: _series(scale) for name, scale in (("a", 1.0), ("b", 0.99), ("c", 0.7), ("d", 0.98))}
    best = compare_arms(values, higher_is_better=True)
    named = compare_arms(values, reference="b", higher_is_better=True)
    assert best.reference == "a" and best.family == Family(0.95, 6, "best")
    assert best.family.level == pytest.approx(1 - 0.05 / 6)
    assert best.family.label == "95% simultaneous, Bonferroni over 6 pairs"
    assert named.reference == "b" and named.family == Family(0.95, 3, "named")
    assert named.family.label == "95% simultaneous, Bonferroni over 3 comparisons with the reference"
    assert {item.arm for item in best.comparisons} == {"b", "c", "d"}


def test_a_wider_family_gives_a_wider_interval() -> None:
    values = {name: _series(scale) for name, scale in (("b", 0.9), ("c", 0.8), ("d", 0.7))}
    values = {"a": _series(1.0, (1.0,) * 6), **values}
    two = compare_arms({"a": values["a"], "b": values["b"]}, higher_is_better=True).of("b")
    four = compare_arms(values, higher_is_better=True).of("b")
    assert two is not None and four is not None and two.low is not None and four.low is not None
    assert two.ratio == four.ratio and four.low < two.low


def test_lower_latency_is_better_and_higher_is_worse() -> None:
    reference = _series(1.0, (1.0,) * 6)
    verdict = compare_arms(
        {"ref": reference, "quick": _series(0.5), "sluggish": _series(2.0)}, reference="ref", higher_is_better=False
    )
    assert [(item.arm, item.outcome) for item in verdict.comparisons] == [("quick", "better"), ("sluggish", "worse")]


def test_an_interval_inside_the_margin_is_equivalent_and_one_that_spans_it_is_inconclusive() -> None:
    reference = _series(1.0, (1.0,) * 6)
    tight = _series(1.0, (1.01, 0.99, 1.0, 1.01, 0.99, 1.0))
    loose = _series(1.0, (1.2, 0.8, 1.1, 0.9, 1.15, 0.85))
    verdict = compare_arms({"ref": reference, "tight": tight, "loose": loose}, reference="ref", higher_is_better=True)
    equivalent, inconclusive = verdict.of("tight"), verdict.of("loose")
    assert equivalent is not None and equivalent.outcome == "equivalent" and equivalent.within_margin
    assert inconclusive is not None and inconclusive.outcome == "inconclusive"
    assert inconclusive.more_repetitions is not None and inconclusive.more_repetitions > 0
    narrower = compare_arms({"ref": reference, "tight": tight}, reference="ref", higher_is_better=True, margin=0.001)
    assert narrower.comparisons[0].outcome == "inconclusive"


def test_a_real_difference_smaller_than_the_margin_is_still_called_and_flagged() -> None:
    reference = _series(1.0, (1.0,) * 6)
    verdict = compare_arms({"ref": reference, "arm": _series(0.98, (1.0,) * 6)}, reference="ref", higher_is_better=True)
    comparison = verdict.comparisons[0]
    assert comparison.outcome == "worse" and comparison.within_margin
    assert comparison.low == comparison.high == pytest.approx(0.98)  # zero spread: a zero-width interval


def test_fewer_than_five_pairs_gives_only_the_range() -> None:
    reference = {rep: 100.0 for rep in range(4)}
    arm = {0: 50.0, 1: 80.0, 2: 60.0, 3: 70.0}
    comparison = compare_arms({"ref": reference, "arm": arm}, reference="ref", higher_is_better=True).comparisons[0]
    assert comparison.outcome == "too-few" and not comparison.has_interval
    assert (comparison.low, comparison.high) == (None, None)
    assert (comparison.range_low, comparison.range_high) == pytest.approx((0.5, 0.8))
    assert comparison.interval_label == "range of 4 repetitions"


def test_pairs_are_pairwise_complete() -> None:
    reference = _series(1.0, (1.0,) * 6)
    holes = {rep: value for rep, value in _series(0.7).items() if rep != 2}
    other = dict(_series(0.9))
    other[4] = math.nan
    verdict = compare_arms({"ref": reference, "holes": holes, "other": other}, reference="ref", higher_is_better=True)
    assert [(item.arm, item.pairs) for item in verdict.comparisons] == [("holes", 5), ("other", 5)]
    assert paired_log_ratios(holes, reference).size == 5
    assert paired_log_ratios({0: 0.0, 1: -1.0, 2: 2.0}, {0: 1.0, 1: 1.0, 2: 1.0}).tolist() == [math.log(2.0)]


def test_the_best_arm_needs_the_minimum_repetitions_when_some_arm_has_them() -> None:
    values = {"lucky": {0: 5000.0}, "steady": _series(1.0), "slow": _series(0.5)}
    assert best_arm(values, higher_is_better=True) == "steady"
    assert best_arm({"lucky": {0: 5000.0}, "other": {0: 10.0}}, higher_is_better=True) == "lucky"
    assert best_arm({"none": {}}, higher_is_better=True) is None
    verdict = compare_arms(values, higher_is_better=True)
    lucky = verdict.of("lucky")
    assert lucky is not None and lucky.outcome == "too-few" and lucky.pairs == 1


def test_bad_knobs_and_unknown_references_are_rejected() -> None:
    values = {"a": _series(1.0), "b": _series(0.9)}
    with pytest.raises(ValueError, match="reference 'c' is not one of the arms"):
        compare_arms(values, reference="c", higher_is_better=True)
    for margin in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="equivalence margin"):
            compare_arms(values, higher_is_better=True, margin=margin)
    assert compare_arms({"a": {}}, higher_is_better=True).reference is None


def test_repetitions_to_settle_follow_the_power_formula() -> None:
    level, sd, mean = 1 - 0.05 / 3, 0.2, math.log(0.9)
    more = repetitions_to_settle(mean, sd, 6, level, 0.05)
    assert more is not None
    total = 6 + more

    def half(n: int) -> float:
        quantiles = scipy_stats.t.ppf(1 - (1 - level) / 2, n - 1) + scipy_stats.t.ppf(0.8, n - 1)
        return float(quantiles * sd / math.sqrt(n))

    assert half(total) < abs(mean) <= half(total - 1)
    assert repetitions_to_settle(math.log(1.001), 0.5, 6, level, 0.05) is None  # out of reach
    assert MAX_SUGGESTED_REPETITIONS == 1000


# --- one arm -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, 7, 10, 15, 20, 31])
def test_order_statistic_interval_matches_scipy_quantile_test_where_95_percent_is_reachable(n: int) -> None:
    values = np.arange(1.0, n + 1.0) ** 1.5
    estimate = median_interval(values)
    expected: Any = scipy_stats.quantile_test(values, q=float(np.median(values))).confidence_interval(
        0.95
    )  # stub: float
    assert (estimate.ci_low, estimate.ci_high) == (expected.low, expected.high)
    assert estimate.level is not None and estimate.level >= 0.95


def test_five_values_give_min_to_max_labelled_with_its_real_level() -> None:
    estimate = median_interval([3.0, 1.0, 5.0, 2.0, 4.0])
    assert (estimate.median, estimate.ci_low, estimate.ci_high) == (3.0, 1.0, 5.0)
    assert estimate.level == pytest.approx(0.9375) and order_statistic_ranks(5) == (1, 0.9375)
    assert estimate.label == "93.8% interval of the median (order statistics 1 and 5 of 5)"


@pytest.mark.parametrize("n", [5, 6, 9, 10])
def test_the_geometric_mean_and_its_interval_are_scipys_t_on_the_log_values(n: int) -> None:
    values = [600.0 * 1.13 ** ((index * 7) % n - n / 2) for index in range(n)]
    estimate = log_mean_interval(values)
    logs = np.log(values)
    expected = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert estimate.median == pytest.approx(math.exp(float(np.mean(logs))), rel=1e-12)
    assert estimate.median == pytest.approx(float(scipy_stats.gmean(values)), rel=1e-12)
    assert estimate.ci_low == pytest.approx(math.exp(expected.low), rel=1e-12)
    assert estimate.ci_high == pytest.approx(math.exp(expected.high), rel=1e-12)
    assert (estimate.n, estimate.level, estimate.statistic, estimate.censored) == (n, 0.95, GEOMETRIC_MEAN, 0)
    assert estimate.label == f"95% t interval of the geometric mean (on the log values of {n})"
    assert median_interval(values).statistic == MEDIAN


def test_the_geometric_mean_gives_no_interval_below_five_and_refuses_what_has_no_log() -> None:
    estimate = log_mean_interval([100.0, 400.0])
    assert estimate.median == pytest.approx(200.0) and not estimate.has_interval
    assert estimate.label == "no interval from 2 repetitions"
    flat = log_mean_interval([250.0] * 6)
    assert flat.ci_low == flat.ci_high == flat.median == pytest.approx(250.0)
    for bad in ([], [1.0, 0.0, 2.0], [1.0, -3.0], [1.0, math.nan], [math.inf, 1.0]):
        with pytest.raises(ValueError):
            log_mean_interval(bad)


def test_a_shared_error_widens_the_geometric_means_interval_in_quadrature() -> None:
    values = [520.0, 610.0, 480.0, 575.0, 545.0, 600.0]
    logs = np.log(values)
    plain = log_mean_interval(values)
    widened = log_mean_interval(values, extra_log_se=0.04)
    t = float(scipy_stats.t.ppf(0.975, len(values) - 1))
    half = t * math.hypot(float(np.std(logs, ddof=1)) / math.sqrt(len(values)), 0.04)
    centre = float(np.mean(logs))
    assert widened.median == plain.median
    assert (widened.ci_low, widened.ci_high) == pytest.approx((math.exp(centre - half), math.exp(centre + half)))
    assert log_mean_interval(values, extra_log_se=0.0) == plain
    # A shared error is not seen in the spread: values that agree exactly still get an interval from it.
    flat = log_mean_interval([250.0] * 6, extra_log_se=0.05)
    assert flat.ci_low == pytest.approx(250.0 * math.exp(-t * 0.05))
    assert flat.ci_high == pytest.approx(250.0 * math.exp(t * 0.05))
    assert not log_mean_interval([100.0, 400.0], extra_log_se=0.05).has_interval  # still none below five
    for bad in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError):
            log_mean_interval(values, extra_log_se=bad)


def test_fewer_than_five_values_give_no_interval() -> None:
    estimate = median_interval([3.0, 1.0, 2.0])
    assert estimate.median == 2.0 and not estimate.has_interval and estimate.ci_low is None
    assert estimate.label == "no interval from 3 repetitions"


def test_censored_values_leave_the_lower_end_open_and_never_raise_it() -> None:
    observed = [200.0, 220.0, 240.0, 260.0, 280.0]
    estimate = median_interval(observed, censored_below=[100.0])  # one repetition: below the lowest rate tried
    assert estimate.n == 6 and estimate.censored == 1
    assert estimate.ci_low is None and estimate.open_below and estimate.ci_high == 280.0
    assert estimate.median == 230.0 and not estimate.median_is_bound
    mostly = median_interval([200.0, 220.0], censored_below=[100.0, 100.0, 100.0])
    assert mostly.median == 100.0 and mostly.median_is_bound  # the median is censored: only "at most 100"
    overlapping = median_interval([50.0, 60.0, 70.0, 80.0, 90.0], censored_below=[75.0])
    assert overlapping.median_is_bound and overlapping.median == 72.5


def test_values_censored_above_leave_the_upper_end_open_and_never_lower_it() -> None:
    observed = [200.0, 220.0, 240.0, 260.0, 280.0]
    estimate = median_interval(observed, censored_above=[300.0])  # one repetition: at least the highest rate
    assert estimate.n == 6 and estimate.censored == 1 and estimate.censored_above == 1
    assert estimate.ci_high is None and estimate.open_above and estimate.ci_low == 200.0
    assert estimate.median == 250.0 and not estimate.median_at_least and not estimate.median_is_bound
    mostly = median_interval([200.0, 220.0], censored_above=[500.0, 500.0, 500.0])
    assert mostly.median == 500.0 and mostly.median_at_least  # only "at least 500"
    both = median_interval([100.0, 110.0, 120.0, 130.0], censored_below=[50.0], censored_above=[200.0])
    assert both.open_below and both.open_above and both.censored_below == 1 and both.median == 115.0
    unknown = median_interval([], censored_below=[50.0], censored_above=[200.0])
    assert not unknown.median_known


def test_censored_bounds_bracket_every_order_statistic() -> None:
    """Replacing each censored value by any value beyond its bound never moves the interval's ends past the true
    order statistics: lower ends only go down, upper ends only go up."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        true = rng.lognormal(5.0, 0.3, 8)
        low_bound, high_bound = np.quantile(true, 0.2), np.quantile(true, 0.8)
        below, above = true[true < low_bound], true[true > high_bound]
        middle = true[(true >= low_bound) & (true <= high_bound)]
        estimate = median_interval(
            middle, censored_below=[low_bound] * below.size, censored_above=[high_bound] * above.size
        )
        exact = median_interval(true)
        assert estimate.ci_low is None or estimate.ci_low <= exact.ci_low  # type: ignore[operator]
        assert estimate.ci_high is None or estimate.ci_high >= exact.ci_high  # type: ignore[operator]


def test_paired_differences_have_a_t_interval_on_the_differences() -> None:
    arm = {rep: 300.0 + value for rep, value in enumerate([12.0, 9.0, 11.0, 14.0, 10.0, 13.0])}
    reference = {rep: 300.0 for rep in range(6)} | {9: 1.0}
    differences = paired_differences(arm, reference)
    assert differences.tolist() == [12.0, 9.0, 11.0, 14.0, 10.0, 13.0]
    family = Family(0.95, 2, "shown")
    result = compare_difference("arm", "ref", differences, family=family)
    expected: Any = scipy_stats.ttest_1samp(differences, 0.0).confidence_interval(confidence_level=family.level)
    assert result.mean == pytest.approx(11.5) and result.pairs == 6 and result.excludes_zero
    assert result.low == pytest.approx(expected.low) and result.high == pytest.approx(expected.high)
    assert family.label == "95% simultaneous, Bonferroni over 2 pairs shown"
    few = compare_difference("arm", "ref", differences[:3], family=family)
    assert not few.has_interval and (few.range_low, few.range_high) == (9.0, 12.0)


def test_wide_spread_is_labelled_unstable() -> None:
    estimate = median_interval([100.0, 150.0, 60.0, 120.0, 90.0])
    assert estimate.cv is not None and estimate.cv > 0.1 and estimate.unstable


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert coefficient_of_variation([1.0]) is None
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2.0) / 2.0)


# --- two bundles (unpaired) and the CI gate's bootstrap -------------------------------------------------------


def test_unpaired_ratio_is_welch_t_on_logs() -> None:
    base, cur = [1000.0, 1010.0, 990.0, 1005.0, 995.0], [800.0, 812.0, 790.0, 805.0, 795.0]
    estimate = unpaired_ratio(base, cur)
    welch = scipy_stats.ttest_ind(np.log(cur), np.log(base), equal_var=False).confidence_interval(0.95)
    assert estimate.low == pytest.approx(math.exp(welch.low)) and estimate.high == pytest.approx(math.exp(welch.high))
    assert estimate.significant and direction_of(estimate, higher_is_better=True) == "worse"
    assert not unpaired_ratio(base[:4], cur[:4]).significant  # 4 a side: no interval
    assert unpaired_ratio(base, base).ratio == 1.0 and not unpaired_ratio(base, base).significant


def test_unpaired_ratio_with_one_constant_side_is_a_one_sample_t_on_the_other() -> None:
    flat, varying = [900.0] * 5, [1000.0, 1010.0, 990.0, 1005.0, 995.0]
    one = scipy_stats.ttest_1samp(np.log(varying), math.log(900.0)).confidence_interval(0.95)
    up, down = unpaired_ratio(flat, varying), unpaired_ratio(varying, flat)
    assert (up.low, up.high) == pytest.approx(
        (math.exp(one.low - math.log(900.0)), math.exp(one.high - math.log(900.0)))
    )
    assert (
        up.low is not None and up.high is not None and (down.low, down.high) == pytest.approx((1 / up.high, 1 / up.low))
    )
    assert unpaired_ratio(flat, flat).low == 1.0


def test_the_gates_bootstrap_is_kept_seeded() -> None:
    noisy_a, noisy_b = [1.0, 1.3, 0.8, 1.1], [1.2, 0.9, 1.4, 1.0]
    assert ratio_of_medians_ci(noisy_a, noisy_b, seed=7) == ratio_of_medians_ci(noisy_a, noisy_b, seed=7)
    assert ratio_of_medians_ci([0.0, 0.0], [1.0, 2.0]).ratio is None


# --- histograms ---------------------------------------------------------------------------------------------------


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
