"""Open-loop load: the arrival schedule, the late/dropped rules and when a run's generator fell behind.

An open-loop generator sends request k at its intended time t_k whatever happened to earlier requests, so queueing
at the server shows in the latency instead of slowing the generator down (no coordinated omission). Latency is
counted from t_k (corrected); the time from the actual send to the answer is kept too (uncorrected, the service
time). The generator itself can fail to keep its schedule: a request issued more than `LATE_TOLERANCE_MS` after t_k
is *late*; an arrival that finds the in-flight cap reached is *dropped* (never sent). A run with too many of either
measured the generator, not the server, and is invalid. Nothing here imports Locust or gevent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "ARRIVAL_PROCESSES",
    "DEFAULT_ARRIVALS",
    "DEFAULT_CEILING_LAG_MS",
    "GEVENT_BACKEND_ENV_VAR",
    "LATE_TOLERANCE_MS",
    "MAX_DROPPED",
    "MAX_LATE_FRACTION",
    "OPEN_LOOP_GEVENT_BACKEND",
    "UNFINISHED_ERROR",
    "ArrivalProcess",
    "ArrivalSchedule",
    "CeilingStep",
    "GeneratorCeiling",
    "OpenLoopCounts",
    "ceiling_rps",
    "constant_arrival_time",
    "first_constant_index",
    "inflight_cap_per_process",
]

ArrivalProcess = Literal["poisson", "constant"]
ARRIVAL_PROCESSES: tuple[ArrivalProcess, ...] = get_args(ArrivalProcess)
DEFAULT_ARRIVALS: ArrivalProcess = "poisson"
"""Poisson arrivals (exponential gaps) by default: independent clients, and the M/D/1 model applies."""

GEVENT_BACKEND_ENV_VAR = "GEVENT_BACKEND"
OPEN_LOOP_GEVENT_BACKEND = "select"
"""The libev backend of open-loop Locust processes. gevent's default, epoll, waits with a timeout in whole
milliseconds, so a timer fires up to 1 ms late (measured on an idle core: send lag p50 0.6 ms, p99 1.1-1.4 ms, and
all of it lands in the corrected latency); select waits in microseconds (p99 0.25-0.8 ms up to 1500 req/s). libev's
select backend sizes its own fd sets, so it is not limited to 1024 connections."""

LATE_TOLERANCE_MS = 2.0
"""A request issued more than this many milliseconds after its intended time is late.

Why 2 ms: about 3 times the p99 send lag of an undisturbed generator (see `OPEN_LOOP_GEVENT_BACKEND`), so only a
generator that is really behind (CPU-starved, or busy with a burst of answers) trips it. Lateness never flatters a
server: it is part of the corrected latency, so at most 2 ms (4% of the default 50 ms SLO) of an on-time-enough
request's latency can be the generator's.
"""
MAX_LATE_FRACTION = 0.01
"""A run in which more than 1% of the requests were late is invalid (the generator's p99 lag passed the tolerance)."""
MAX_DROPPED = 0
"""A run that dropped more than this many scheduled requests at the in-flight cap is invalid."""
UNFINISHED_ERROR = "Unfinished"
"""Error kind of a request still in flight when the drain time after the window ran out (it is counted, not lost)."""


@dataclass(frozen=True)
class OpenLoopCounts:
    """What an open-loop run scheduled and sent, counted over requests whose intended time lies in the window.

    `scheduled` arrivals were due; `dropped` of them were not sent (in-flight cap reached); the others were sent and
    recorded (so `scheduled == recorded + dropped`), `late` of those more than `LATE_TOLERANCE_MS` after their time.
    `sent_in_window` counts requests actually sent inside the window (by send time): the achieved rate's numerator.
    `send_lag_p99_ms` is the 99th percentile of send lag (actual minus intended send time), milliseconds.
    """

    scheduled: int
    dropped: int
    late: int
    sent_in_window: int
    send_lag_p99_ms: float | None = None

    def problems(self, recorded: int) -> list[str]:
        """Why the run did not keep its schedule (empty if it did); `recorded` is the number of requests sent."""
        return [*self.drop_problems(), *self.late_problems(recorded)]

    def drop_problems(self) -> list[str]:
        """Arrivals dropped at the in-flight cap: answers stopped coming back, so the server fell behind."""
        if self.dropped <= MAX_DROPPED:
            return []
        return [
            f"{self.dropped} of {self.scheduled} scheduled requests dropped at the in-flight cap "
            "(the server fell behind the schedule)"
        ]

    def late_problems(self, recorded: int) -> list[str]:
        """Requests sent late: the load generator itself fell behind its schedule."""
        if recorded <= 0 or self.late / recorded <= MAX_LATE_FRACTION:
            return []
        lag = "" if self.send_lag_p99_ms is None else f", p99 send lag {self.send_lag_p99_ms:.1f} ms"
        return [
            f"load generator fell behind: {self.late / recorded:.1%} of requests sent over "
            f"{LATE_TOLERANCE_MS:g} ms late (limit {MAX_LATE_FRACTION:.0%}{lag})"
        ]


class ArrivalSchedule:
    """Intended send times of one arrival stream, in seconds after its origin, strictly increasing.

    `poisson`: exponential gaps of mean 1/`rate` from a `random.Random(seed)` (the same seed gives the same times);
    the first arrival is one gap after the origin. `constant`: arrival k at exactly k/`rate` (the first at the
    origin), computed by multiplication so that no rounding accumulates. `rate` in requests per second, > 0.
    """

    def __init__(self, *, process: ArrivalProcess, rate: float, seed: int | str) -> None:
        if process not in ARRIVAL_PROCESSES:
            raise ValueError(f"arrival process must be one of {ARRIVAL_PROCESSES}, got {process!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        self.process = process
        self.rate = rate
        self._rng = random.Random(seed)
        self._index = 0
        self._last = 0.0

    def __iter__(self) -> ArrivalSchedule:
        return self

    def __next__(self) -> float:
        if self.process == "constant":
            self._last = self._index / self.rate
        else:
            self._last += self._rng.expovariate(self.rate)
        self._index += 1
        return self._last


def constant_arrival_time(*, start: float, rate: float, index: int) -> float:
    """Intended time (epoch seconds) of constant-spacing arrival `index` of a run whose window starts at `start`:
    `start + index / rate`, the same float for every process that computes it (index < 0: during the warm-up)."""
    return start + index / rate


def first_constant_index(*, start: float, rate: float, not_before: float, stream: int, streams: int) -> int:
    """The first arrival index of stream `stream` of `streams` whose time is at or after `not_before`.

    The run's constant-spacing arrivals form one grid, `constant_arrival_time(index=k)` for every integer k, anchored
    at the window's start; stream i takes the k with k % streams == i, so together the streams are evenly spaced at
    `rate` and the window holds the same arrivals however many processes share them.
    """
    index = math.ceil((not_before - start) * rate)
    index += (stream - index) % streams
    # The product above may round across a grid point: settle on the exact first one by the times themselves.
    while constant_arrival_time(start=start, rate=rate, index=index - streams) >= not_before:
        index -= streams
    while constant_arrival_time(start=start, rate=rate, index=index) < not_before:
        index += streams
    return index


def inflight_cap_per_process(total_cap: int, processes: int) -> int:
    """Each load process's share of the run's in-flight cap (rounded up, at least 1)."""
    return max(1, math.ceil(total_cap / processes))


DEFAULT_CEILING_LAG_MS = 5.0
"""The generator's ceiling is the highest offered rate whose p99 send lag stays within this many milliseconds."""


@dataclass(frozen=True)
class CeilingStep:
    """One rate offered to a cheap server to find the generator's own ceiling: asked vs offered vs achieved rate
    (requests/s), p99 send lag (ms), and the counts behind them."""

    rate: float
    offered_rps: float | None
    achieved_rps: float | None
    send_lag_p99_ms: float | None
    requests: int
    late: int
    dropped: int

    def within(self, max_send_lag_ms: float) -> bool:
        """Whether the generator kept this rate: some requests sent, p99 send lag within the bound, none dropped
        (a drop means the server fell behind, so the step says nothing about the generator)."""
        return (
            self.requests > 0
            and self.dropped == 0
            and self.send_lag_p99_ms is not None
            and self.send_lag_p99_ms <= max_send_lag_ms
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "rate": self.rate,
            "offered_rps": self.offered_rps,
            "achieved_rps": self.achieved_rps,
            "send_lag_p99_ms": self.send_lag_p99_ms,
            "requests": self.requests,
            "late": self.late,
            "dropped": self.dropped,
        }


def ceiling_rps(steps: Sequence[CeilingStep], max_send_lag_ms: float = DEFAULT_CEILING_LAG_MS) -> float | None:
    """The highest rate (requests/s) up to which every step kept its p99 send lag within `max_send_lag_ms`: the
    rates are taken in increasing order and the first miss ends the climb. None if the lowest rate already missed
    (or there are no steps)."""
    ceiling = None
    for step in sorted(steps, key=lambda step: step.rate):
        if not step.within(max_send_lag_ms):
            break
        ceiling = step.rate
    return ceiling


@dataclass(frozen=True)
class GeneratorCeiling:
    """The load generator's ceiling on this machine: the steps measured and the judgement on them."""

    max_send_lag_ms: float
    steps: tuple[CeilingStep, ...]

    @property
    def ceiling_rps(self) -> float | None:
        """See `ceiling_rps`."""
        return ceiling_rps(self.steps, self.max_send_lag_ms)

    @property
    def limited(self) -> bool:
        """Whether some step missed the bound: False means the ceiling lies above the highest rate tried."""
        return any(not step.within(self.max_send_lag_ms) for step in self.steps)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: the bound, the ceiling (null if even the lowest rate missed), whether a rate missed,
        and the steps."""
        return {
            "max_send_lag_ms": self.max_send_lag_ms,
            "ceiling_rps": self.ceiling_rps,
            "limited": self.limited,
            "steps": [step.to_json() for step in self.steps],
        }
