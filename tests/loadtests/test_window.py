"""The measurement window: fixed, sized in advance from an open loop's rate, or ended at a closed loop's request
count within its cap; all decided on given numbers."""

from __future__ import annotations

from typing import Any

import pytest

from servingbench.loadtests import LoadSpec, WindowPlan

OPENED = 1_000_000.0
"""Epoch seconds at which the test runs open (an exact float, so the expected times are exact too)."""


def _spec(**changes: Any) -> LoadSpec:
    base: dict[str, Any] = {
        "base_url": "http://127.0.0.1:8000",
        "endpoint": "/predict",
        "payload": b"{}",
        "kind": "closed",
        "users": 4,
        "warmup_s": 2.0,
        "duration_s": 10.0,
        "seed": 1,
    }
    return LoadSpec(**{**base, **changes})


def test_without_a_target_the_window_is_the_duration() -> None:
    plan = WindowPlan.for_spec(_spec(), opened_at=OPENED)
    assert (plan.start, plan.fixed_end, plan.fixed_reason) == (OPENED + 2.0, OPENED + 12.0, "duration")
    assert not plan.dynamic
    assert plan.decide(now=OPENED, started=0) == (OPENED + 12.0, "duration")


def test_an_open_loop_target_sizes_the_window_from_the_rate() -> None:
    plan = WindowPlan.for_spec(_spec(kind="open", rate=200.0, target_requests=500), opened_at=OPENED)
    assert (plan.fixed_end, plan.fixed_reason) == (plan.start + 2.5, "target")


def test_an_open_loop_window_is_never_shorter_than_its_minimum() -> None:
    spec = _spec(kind="open", rate=1000.0, target_requests=500, min_duration_s=3.0)
    plan = WindowPlan.for_spec(spec, opened_at=OPENED)
    assert (plan.fixed_end, plan.fixed_reason) == (plan.start + 3.0, "target")


def test_an_open_loop_target_beyond_the_cap_ends_at_the_cap() -> None:
    plan = WindowPlan.for_spec(_spec(kind="open", rate=10.0, target_requests=500), opened_at=OPENED)
    assert (plan.fixed_end, plan.fixed_reason) == (plan.cap_end, "cap")
    assert plan.cap_end - plan.start == 10.0


def _closed_plan(**changes: Any) -> WindowPlan:
    return WindowPlan.for_spec(_spec(target_requests=1000, **changes), opened_at=OPENED)


def test_a_closed_loop_target_is_decided_while_the_run_goes() -> None:
    plan = _closed_plan(min_duration_s=1.0)
    assert plan.dynamic and plan.provisional.end == plan.cap_end
    assert plan.decide(now=plan.start + 0.5, started=999) is None
    assert plan.decide(now=plan.start + 4.0, started=999) is None


def test_reaching_the_target_ends_the_window_at_once() -> None:
    plan = _closed_plan(min_duration_s=1.0)
    assert plan.decide(now=plan.start + 4.0, started=1000) == (plan.start + 4.0, "target")


def test_a_target_reached_early_waits_for_the_minimum_duration() -> None:
    plan = _closed_plan(min_duration_s=1.0)
    assert plan.decide(now=plan.start + 0.25, started=5000) == (plan.start + 1.0, "target")


def test_a_target_never_reached_ends_at_the_cap() -> None:
    plan = _closed_plan()
    assert plan.decide(now=plan.cap_end, started=999) == (plan.cap_end, "cap")
    assert plan.decide(now=plan.cap_end + 3.0, started=10) == (plan.cap_end, "cap")


def test_a_target_seen_late_never_ends_past_the_cap() -> None:
    plan = _closed_plan()
    assert plan.decide(now=plan.cap_end + 0.5, started=1000) == (plan.cap_end, "target")


@pytest.mark.parametrize(
    "changes",
    [{}, {"target_requests": 7}, {"target_requests": 7, "min_duration_s": 0.5}, {"kind": "open", "rate": 5.0}],
)
def test_the_plan_round_trips_through_json(changes: dict[str, Any]) -> None:
    plan = WindowPlan.for_spec(_spec(**changes), opened_at=OPENED)
    assert WindowPlan.from_json(plan.to_json()) == plan
