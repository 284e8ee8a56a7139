"""The time left learns the pace of the recent work (pure: times are given, never measured)."""

from __future__ import annotations

import pytest

from servingbench.harness.progress import Eta, format_seconds


def test_before_any_pace_is_known_the_estimate_stands() -> None:
    eta = Eta(100.0)
    assert eta.seconds_left(now=eta.started + 1.0) == 100.0


def test_the_time_left_follows_the_recent_pace() -> None:
    eta = Eta(100.0)
    start = eta.started
    for index in range(1, 11):  # ten pieces of 2 s estimated that took 4 s each: twice as slow
        eta.advance(2.0, now=start + 4.0 * index)
    assert eta.seconds_left(now=start + 40.0) == pytest.approx(80.0 * 2.0)


def test_a_slow_block_after_a_fast_one_soon_shows() -> None:
    eta = Eta(200.0)
    now = eta.started
    for _ in range(30):  # fast runs: half their estimate
        now += 1.0
        eta.advance(2.0, now=now)
    for _ in range(30):  # then slow ones: their full estimate
        now += 2.0
        eta.advance(2.0, now=now)
    assert eta.seconds_left(now=now) == pytest.approx(200.0 - 120.0)


def test_format_seconds() -> None:
    assert (format_seconds(45), format_seconds(725), format_seconds(-3)) == ("45s", "12m05s", "0s")
