"""The generator's ceiling: judged on given steps (the highest rate up to which p99 send lag kept within bound)."""

from __future__ import annotations

from servingbench.loadtests import DEFAULT_CEILING_LAG_MS, CeilingStep, GeneratorCeiling, ceiling_rps


def _step(rate: float, lag_ms: float | None, *, dropped: int = 0, requests: int = 1000) -> CeilingStep:
    return CeilingStep(
        rate=rate,
        offered_rps=rate,
        achieved_rps=rate,
        send_lag_p99_ms=lag_ms,
        requests=requests,
        late=0,
        dropped=dropped,
    )


def test_the_ceiling_is_the_last_rate_before_the_first_miss() -> None:
    steps = [_step(100, 0.4), _step(200, 0.9), _step(400, 4.9), _step(800, 12.0)]
    assert ceiling_rps(steps) == 400


def test_a_rate_that_passes_above_a_miss_does_not_raise_the_ceiling() -> None:
    steps = [_step(800, 1.0), _step(100, 0.4), _step(400, 6.0)]  # taken in increasing order whatever is given
    assert ceiling_rps(steps) == 100


def test_the_bound_is_inclusive_and_can_be_changed() -> None:
    steps = [_step(100, DEFAULT_CEILING_LAG_MS), _step(200, 7.0)]
    assert ceiling_rps(steps) == 100
    assert ceiling_rps(steps, max_send_lag_ms=7.0) == 200


def test_no_ceiling_when_the_lowest_rate_misses_or_nothing_ran() -> None:
    assert ceiling_rps([_step(100, 9.0), _step(200, 1.0)]) is None
    assert ceiling_rps([]) is None


def test_a_step_without_requests_drops_or_lag_proves_nothing() -> None:
    assert not _step(100, None).within(DEFAULT_CEILING_LAG_MS)
    assert not _step(100, 0.5, requests=0).within(DEFAULT_CEILING_LAG_MS)
    assert not _step(100, 0.5, dropped=1).within(DEFAULT_CEILING_LAG_MS)


def test_the_result_says_whether_the_ceiling_was_reached() -> None:
    reached = GeneratorCeiling(5.0, (_step(100, 1.0), _step(200, 8.0)))
    assert (reached.ceiling_rps, reached.limited) == (100, True)
    above = GeneratorCeiling(5.0, (_step(100, 1.0), _step(200, 2.0)))
    assert (above.ceiling_rps, above.limited) == (200, False)
    document = reached.to_json()
    assert document["ceiling_rps"] == 100 and document["max_send_lag_ms"] == 5.0
    assert [step["rate"] for step in document["steps"]] == [100, 200]
