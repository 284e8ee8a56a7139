"""The open-loop arrival schedule (Poisson and constant), stream alignment, the in-flight cap and validity rules."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from servingbench.loadtests.openloop import (
    LATE_TOLERANCE_MS,
    MAX_LATE_FRACTION,
    ArrivalSchedule,
    OpenLoopCounts,
    constant_arrival_time,
    first_constant_index,
    inflight_cap_per_process,
)

POISSON_SAMPLES = 20_000
"""Gaps drawn to check the Poisson mean: the sample mean's relative standard error is 1/sqrt(20000) = 0.7%."""
MEAN_TOLERANCE = 0.03
"""Over 4 standard errors: a seeded stream fails this only if the generator is wrong."""


def _take(schedule: ArrivalSchedule, n: int) -> list[float]:
    return list(itertools.islice(schedule, n))


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise([0.0, *times])]


def test_poisson_gaps_have_mean_one_over_rate_and_exponential_spread() -> None:
    rate = 250.0
    gaps = _gaps(_take(ArrivalSchedule(process="poisson", rate=rate, seed=7), POISSON_SAMPLES))
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=MEAN_TOLERANCE)
    # Exponential: the standard deviation equals the mean (coefficient of variation 1), unlike constant spacing.
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=MEAN_TOLERANCE)
    # P(gap > mean) = 1/e for an exponential distribution.
    assert sum(g > 1 / rate for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)


def test_poisson_schedule_is_seeded() -> None:
    first = _take(ArrivalSchedule(process="poisson", rate=50.0, seed="42/0"), 100)
    assert first == _take(ArrivalSchedule(process="poisson", rate=50.0, seed="42/0"), 100)
    assert first != _take(ArrivalSchedule(process="poisson", rate=50.0, seed="42/1"), 100)
    assert all(b > a for a, b in itertools.pairwise(first))


def test_constant_spacing_is_exact_and_does_not_drift() -> None:
    rate = 3.0
    times = _take(ArrivalSchedule(process="constant", rate=rate, seed=1), 1_000_001)
    assert times[:4] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert times[-1] == pytest.approx(1_000_000 / rate, rel=1e-15)


@pytest.mark.parametrize(("process", "rate"), [("burst", 1.0), ("poisson", 0.0), ("constant", math.inf)])
def test_bad_schedules_are_refused(process: str, rate: float) -> None:
    with pytest.raises(ValueError):
        ArrivalSchedule(process=process, rate=rate, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_constant_streams_share_one_grid_anchored_at_the_window(streams: int) -> None:
    rate, start, now = 100.0, 1000.0, 999.8765
    indexes: list[int] = []
    for stream in range(streams):
        first = first_constant_index(start=start, rate=rate, not_before=now, stream=stream, streams=streams)
        assert first % streams == stream
        assert constant_arrival_time(start=start, rate=rate, index=first) >= now
        assert constant_arrival_time(start=start, rate=rate, index=first - streams) < now
        indexes += range(first, first + 60 * streams, streams)
    assert sorted(indexes) == list(range(min(indexes), min(indexes) + 60 * streams))  # every grid point, once
    assert constant_arrival_time(start=start, rate=rate, index=0) == start


def test_a_window_of_whole_periods_holds_exactly_rate_times_duration_arrivals() -> None:
    start, rate, duration = 1_733_150_000.123456, 200.0, 2.0
    end = start + duration
    times = [constant_arrival_time(start=start, rate=rate, index=k) for k in range(-100, 1000)]
    assert sum(start <= t < end for t in times) == round(rate * duration)


def test_the_first_index_lands_exactly_on_a_grid_point_at_the_bound() -> None:
    start, rate = 50.0, 3.0
    on_grid = constant_arrival_time(start=start, rate=rate, index=7)
    assert first_constant_index(start=start, rate=rate, not_before=on_grid, stream=1, streams=2) == 7
    assert first_constant_index(start=start, rate=rate, not_before=on_grid, stream=0, streams=2) == 8


@pytest.mark.parametrize(("cap", "processes", "share"), [(64, 1, 64), (64, 3, 22), (1, 4, 1), (100, 2, 50)])
def test_inflight_cap_is_shared_rounding_up(cap: int, processes: int, share: int) -> None:
    assert inflight_cap_per_process(cap, processes) == share


def test_a_generator_that_kept_up_is_valid() -> None:
    counts = OpenLoopCounts(scheduled=1000, dropped=0, late=10, sent_in_window=1000, send_lag_p99_ms=1.1)
    assert counts.problems(recorded=1000) == []


def test_drops_or_too_many_late_sends_invalidate_the_run() -> None:
    dropped = OpenLoopCounts(scheduled=1000, dropped=1, late=0, sent_in_window=999)
    assert "dropped" in " ".join(dropped.problems(recorded=999))
    late = round(1000 * MAX_LATE_FRACTION) + 1
    behind = OpenLoopCounts(scheduled=1000, dropped=0, late=late, sent_in_window=1000, send_lag_p99_ms=7.5)
    (problem,) = behind.problems(recorded=1000)
    assert f"{LATE_TOLERANCE_MS:g} ms late" in problem and "7.5 ms" in problem
