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
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "ARRIVAL_PROCESSES",
    "DEFAULT_ARRIVALS",
    "GEVENT_BACKEND_ENV_VAR",
    "LATE_TOLERANCE_MS",
    "MAX_DROPPED",
    "MAX_LATE_FRACTION",
    "OPEN_LOOP_GEVENT_BACKEND",
    "UNFINISHED_ERROR",
    "ArrivalProcess",
    "ArrivalSchedule",
    "OpenLoopCounts",
    "constant_origin",
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


def constant_origin(*, anchor: float, now: float, total_rate: float, stream: int, streams: int) -> float:
    """Origin (same clock as `anchor` and `now`, seconds) of constant-spacing stream `stream` of `streams`.

    The streams share one grid, `anchor + n / total_rate`, stream i taking the n with n % streams == i, so together
    they are evenly spaced at `total_rate`; the origin returned is the stream's first grid point at or after `now`.
    """
    period = streams / total_rate
    phase = anchor + stream / total_rate
    return phase + math.ceil((now - phase) / period) * period


def inflight_cap_per_process(total_cap: int, processes: int) -> int:
    """Each load process's share of the run's in-flight cap (rounded up, at least 1)."""
    return max(1, math.ceil(total_cap / processes))
