"""The capacity curve's pure parts: the shared grid, each config's climb, the step verdict and the monotone fit."""

from __future__ import annotations

import itertools
import math

import pytest

from servingbench.harness.curve import (
    CurvePoint,
    bracket,
    fit_capacity,
    inflight_cap,
    is_midpoint,
    judge_step,
    next_rate,
    rate_grid,
)
from servingbench.harness.loadgen import LatencyHistograms, LoadResult
from servingbench.loadtests.openloop import OpenLoopCounts
from servingbench.loadtests.recorder import new_histogram

SLO = 50.0
GRID = (100.0, 150.0, 200.0, 300.0, 400.0, 600.0)


# ---- the grid ----


def test_the_grid_spans_half_the_slowest_peak_to_more_than_the_fastest() -> None:
    grid = rate_grid([400.0, 1000.0], points=6)
    assert grid[0] == 200.0 and grid[-1] == 1500.0
    assert len(grid) == 6 and list(grid) == sorted(grid)
    ratios = [high / low for low, high in itertools.pairwise(grid)]
    assert max(ratios) / min(ratios) < 1.01  # geometric (up to rounding to 3 digits)


def test_the_grid_holds_the_expected_traffic_and_rounds_rates() -> None:
    grid = rate_grid([333.3333], points=3, extra=[250.0, 0.0])
    assert 250.0 in grid
    assert all(rate == float(f"{rate:.3g}") for rate in grid)


@pytest.mark.parametrize("peaks", [[], [0.0], [math.nan, -1.0]])
def test_a_grid_needs_a_positive_peak(peaks: list[float]) -> None:
    with pytest.raises(ValueError, match="peak"):
        rate_grid(peaks, points=5)


def test_the_inflight_cap_is_four_times_rate_times_slo() -> None:
    assert inflight_cap(10.0, SLO) == 64
    assert inflight_cap(5000.0, SLO) == 1000


# ---- the climb ----


def point(rate: float, ok: bool, *, gross: bool = False, generator: bool = False) -> CurvePoint:
    return CurvePoint(rate, 10.0 if ok else 80.0, ok, generator_limited=generator, gross=gross)


def climb(
    capacity: float, peak: float | None, *, gross_above: float = math.inf, resolution: float = 0.0
) -> list[float]:
    """The rates a config with a sharp ``capacity`` measures (failures past ``gross_above`` are gross)."""
    points: list[CurvePoint] = []
    while (rate := next_rate(GRID, points, peak=peak, resolution=resolution)) is not None:
        points.append(point(rate, rate <= capacity, gross=rate > gross_above))
        assert len(points) <= len(GRID) + 20
    return [item.rate for item in points]


def test_a_climb_starts_at_half_its_peak_and_stops_after_two_failures() -> None:
    assert climb(capacity=250.0, peak=400.0) == [200.0, 300.0, 400.0]


def test_a_gross_failure_stops_the_climb_at_once() -> None:
    assert climb(capacity=250.0, peak=400.0, gross_above=250.0) == [200.0, 300.0]


def test_a_failing_start_steps_down_until_a_rate_passes() -> None:
    assert climb(capacity=120.0, peak=800.0) == [400.0, 300.0, 200.0, 150.0, 100.0]


def test_a_config_failing_everywhere_steps_below_the_grid_at_most_three_rates() -> None:
    assert climb(capacity=10.0, peak=300.0) == [150.0, 100.0, 66.7, 44.5, 29.7]  # x 2/3 each, 3 digits


def test_below_the_grid_the_first_pass_ends_the_climb() -> None:
    assert climb(capacity=50.0, peak=300.0) == [150.0, 100.0, 66.7, 44.5]


def test_without_a_peak_the_climb_starts_at_the_bottom_and_goes_past_the_top_by_the_grid_ratio() -> None:
    assert climb(capacity=10_000.0, peak=None) == [*GRID, 900.0, 1350.0, 2020.0]  # x 1.5 each (3 digits), at most 3


def test_past_the_top_the_climb_stops_at_its_failures() -> None:
    assert climb(capacity=1000.0, peak=1200.0) == [600.0, 900.0, 1350.0]  # past the grid one failure ends it


def test_a_generator_limited_step_comes_up_again() -> None:
    points = [point(200.0, True), point(300.0, False, generator=True)]
    assert next_rate(GRID, points, peak=400.0) == 300.0


def test_the_expected_traffic_is_measured_below_the_first_failure() -> None:
    points = [point(200.0, True), point(300.0, False), point(400.0, False)]
    assert next_rate(GRID, points, peak=400.0, must=[120.0]) == 120.0
    assert next_rate(GRID, [*points, point(120.0, True)], peak=400.0, must=[120.0]) is None
    assert next_rate(GRID, points, peak=400.0, must=[350.0]) is None  # above a failure: nothing to learn


# ---- refining the crossing ----


def test_after_the_climb_midpoints_narrow_the_bracket_to_the_resolution() -> None:
    # 200 passes, 300 and 400 fail: sqrt(200 x 300) = 245 passes, sqrt(245 x 300) = 271 fails, 271 / 245 < 1.15.
    assert climb(capacity=250.0, peak=400.0, resolution=0.15) == [200.0, 300.0, 400.0, 245.0, 271.0]


def test_a_coarser_resolution_takes_fewer_midpoints_and_none_without_one() -> None:
    assert climb(capacity=250.0, peak=400.0, resolution=0.3) == [200.0, 300.0, 400.0, 245.0]  # 300 / 245 < 1.3
    assert climb(capacity=250.0, peak=400.0, resolution=0.5) == [200.0, 300.0, 400.0]  # 300 / 200 = 1.5: within
    assert climb(capacity=250.0, peak=400.0) == [200.0, 300.0, 400.0]


def test_a_descent_is_refined_between_its_first_pass_and_the_failure_above() -> None:
    # 100 passes, 150 fails: 122 fails, then 110 passes; 122 / 110 < 1.15.
    assert climb(capacity=120.0, peak=800.0, resolution=0.15) == [400.0, 300.0, 200.0, 150.0, 100.0, 122.0, 110.0]


def test_a_gross_failure_is_refined_too_and_a_curve_that_never_passed_is_not() -> None:
    assert climb(capacity=250.0, peak=400.0, gross_above=250.0, resolution=0.15) == [200.0, 300.0, 245.0, 271.0]
    assert climb(capacity=10.0, peak=300.0, resolution=0.15) == [150.0, 100.0, 66.7, 44.5, 29.7]
    assert climb(capacity=10_000.0, peak=None, resolution=0.15) == [*GRID, 900.0, 1350.0, 2020.0]  # no failure


@pytest.mark.parametrize("resolution", [0.5, 0.15, 0.05, 0.01, 1e-6])
def test_refining_ends_within_the_resolution_or_at_the_rates_3_digits(resolution: float) -> None:
    for capacity in (97.0, 101.0, 133.3, 199.0, 250.0, 377.0, 512.0, 777.0, 1200.0):
        rates = climb(capacity, peak=400.0, resolution=resolution)
        assert len(rates) == len(set(rates))  # no rate measured twice
        points = [point(rate, rate <= capacity) for rate in rates]
        around = bracket(points)
        if around is None:
            continue
        low, high = around
        assert low <= capacity < high
        midpoint = float(f"{math.sqrt(low * high):.3g}")
        assert high / low <= 1 + resolution or midpoint in (low, high)


def test_a_passing_midpoint_or_traffic_step_does_not_restart_the_climb_above_a_failure() -> None:
    """Past the grid's top, 900 failed (one failure: the climb may go on, but only from a rate that passed at the
    top); a pass measured below it afterwards, a midpoint or the expected traffic, must not send it to 1350."""
    assert climb(capacity=777.0, peak=400.0, resolution=0.15) == [200.0, 300.0, 400.0, 600.0, 900.0, 735.0, 813.0]
    points = [point(rate, rate <= 777.0) for rate in (200.0, 300.0, 400.0, 600.0, 900.0)]
    assert next_rate(GRID, [*points, point(120.0, True)], peak=400.0, must=[120.0]) is None


def test_a_midpoint_is_a_rate_inside_the_bracket_off_the_grid() -> None:
    points = [point(200.0, True), point(300.0, False), point(400.0, False)]
    assert is_midpoint(GRID, points, 245.0)
    assert not is_midpoint(GRID, points, 300.0) and not is_midpoint(GRID, points, 600.0)
    assert not is_midpoint(GRID, [point(600.0, True)], 900.0)  # past the grid, but no failure yet: a climb
    beyond = [point(600.0, True), point(900.0, False)]
    assert is_midpoint(GRID, beyond, 735.0)  # between the grid's top and a failure past it


def test_the_bracket_is_the_highest_pass_and_the_lowest_failure_above_it() -> None:
    # A failure below a pass (noise near the knee) does not bound the crossing.
    points = [point(200.0, False), point(300.0, True), point(400.0, False), point(600.0, False)]
    assert bracket(points) == (300.0, 400.0)
    assert bracket([point(300.0, True), point(400.0, False, generator=True)]) is None  # not the server's failure
    assert bracket([point(300.0, False), point(400.0, False)]) is None


def test_a_generator_limited_midpoint_comes_up_again_and_the_expected_traffic_comes_first() -> None:
    points = [point(200.0, True), point(300.0, False), point(400.0, False)]
    assert next_rate(GRID, points, peak=400.0, resolution=0.15) == 245.0
    limited = [*points, point(245.0, False, generator=True)]
    assert next_rate(GRID, limited, peak=400.0, resolution=0.15) == 245.0
    assert next_rate(GRID, points, peak=400.0, must=[120.0], resolution=0.15) == 120.0


# ---- judging one open-loop result ----


def result(
    *,
    latency_ms: float = 20.0,
    service_ms: float | None = None,
    requests: int = 1000,
    errors: int = 0,
    dropped: int = 0,
    send_lag_p99_ms: float | None = 0.5,
) -> LoadResult:
    total, uncorrected = new_histogram(), new_histogram()
    for _ in range(requests):
        total.record_value(round(latency_ms * 1000))
        uncorrected.record_value(round((service_ms or latency_ms) * 1000))
    counts = OpenLoopCounts(
        scheduled=requests + dropped, dropped=dropped, late=0, sent_in_window=requests, send_lag_p99_ms=send_lag_p99_ms
    )
    return LoadResult(
        requests=requests,
        errors=errors,
        errors_by_kind={"HTTP 503": errors} if errors else {},
        warmup_s=1.0,
        duration_s=10.0,
        rps=requests / 10.0,
        histograms=LatencyHistograms(
            total=total, validate=new_histogram(), predict=new_histogram(), total_uncorrected=uncorrected
        ),
        generator_cpu_s=1.0,
        generator_cpu_pct=10.0,
        workers={},
        open_loop=counts,
    )


def test_a_step_within_the_slo_passes() -> None:
    step = judge_step(100.0, result(), slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100)
    assert step.ok and step.reason is None and not step.gross
    assert step.p99_ms == pytest.approx(20.0, rel=1e-3)


@pytest.mark.parametrize(
    ("item", "words", "gross"),
    [
        (result(latency_ms=60.0), "over the SLO", False),
        (result(latency_ms=600.0), "over the SLO", True),
        (result(errors=11), "error rate", True),
        (result(dropped=1), "dropped", True),
        (result(requests=0), "no request", False),
        (result(requests=50), "too few requests to judge", False),
    ],
    ids=["slow", "far-past", "errors", "dropped", "empty", "few"],
)
def test_the_stability_rule_fails_a_step(item: LoadResult, words: str, gross: bool) -> None:
    step = judge_step(100.0, item, slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100)
    assert not step.ok and not step.generator_limited
    assert step.reason is not None and words in step.reason
    assert step.gross is gross


def test_a_step_failing_only_on_the_generator_is_generator_limited() -> None:
    late = judge_step(100.0, result(send_lag_p99_ms=8.0), slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100)
    saturated = judge_step(
        100.0, result(), slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100, generator_problems=["saturated"]
    )
    assert not late.ok and late.generator_limited
    assert not saturated.ok and saturated.generator_limited


def test_a_p99_over_the_slo_only_because_of_late_sends_is_the_generators() -> None:
    step = judge_step(
        100.0,
        result(latency_ms=60.0, service_ms=20.0, send_lag_p99_ms=40.0),
        slo_p99_ms=SLO,
        max_error_rate=0.01,
        min_requests=100,
    )
    assert not step.ok and step.generator_limited and not step.gross


def test_a_p99_over_the_slo_from_the_actual_sends_too_is_the_servers_failure() -> None:
    step = judge_step(
        100.0, result(latency_ms=70.0, send_lag_p99_ms=8.0), slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100
    )
    assert not step.ok and not step.generator_limited


def test_an_error_rate_at_the_limit_passes() -> None:
    step = judge_step(100.0, result(errors=10), slo_p99_ms=SLO, max_error_rate=0.01, min_requests=100)
    assert step.ok


# ---- the fit ----


def measured(*pairs: tuple[float, float]) -> list[CurvePoint]:
    return [CurvePoint(rate, p99, p99 <= SLO) for rate, p99 in pairs]


def test_the_capacity_is_where_the_fit_crosses_the_slo() -> None:
    fit = fit_capacity(measured((100.0, 10.0), (200.0, 25.0), (300.0, 100.0)), SLO)
    assert fit.censored is None
    expected = 200.0 + (math.log(50.0) - math.log(25.0)) / (math.log(100.0) - math.log(25.0)) * 100.0
    assert fit.capacity_rps == pytest.approx(expected)


def test_the_fit_is_monotone_through_a_noisy_dip() -> None:
    fit = fit_capacity(measured((100.0, 10.0), (200.0, 80.0), (300.0, 30.0), (400.0, 300.0)), SLO)
    values = [p99 for _, p99 in fit.fitted]
    assert values == sorted(values)
    assert fit.capacity_rps is not None and 100.0 < fit.capacity_rps < 400.0


def test_nothing_meeting_the_slo_is_censored_below_the_lowest_rate() -> None:
    fit = fit_capacity(measured((100.0, 90.0), (150.0, 200.0)), SLO)
    assert (fit.capacity_rps, fit.censored, fit.bound_rps) == (None, "below", 100.0)


def test_everything_meeting_the_slo_is_censored_above_the_highest_rate() -> None:
    fit = fit_capacity(measured((100.0, 5.0), (150.0, 9.0)), SLO)
    assert (fit.capacity_rps, fit.censored, fit.bound_rps) == (None, "above", 150.0)


def test_a_failure_by_errors_counts_as_past_the_slo() -> None:
    points = [CurvePoint(100.0, 5.0, True), CurvePoint(200.0, 20.0, False, gross=True)]
    fit = fit_capacity(points, SLO)
    assert fit.capacity_rps is not None and 100.0 < fit.capacity_rps < 200.0


def test_generator_limited_steps_are_left_out_of_the_fit() -> None:
    points = [CurvePoint(100.0, 5.0, True), CurvePoint(200.0, 90.0, False, generator_limited=True)]
    assert fit_capacity(points, SLO).censored == "above"
    assert fit_capacity([], SLO).capacity_rps is None
