"""Locust users (closed loop, open loop) and what they record; imported by the load processes only.

A load process serves one run at a time. `begin_run` installs the run (`RunSetup`: the spec, its window plan,
this process's share) and `spawn_users` starts its users; they read the run from here, not from Locust's
host or options. Every request is reported through `events.request` (Locust's own statistics listen there too)
and recorded by the run's `LatencyRecorder` if it started inside the window (open loop: whose intended send time
is inside it; the intended time and send lag ride in the request's `context`). `stop_run` ends the run: users
finish the request in hand and leave; what is still in flight after `DRAIN_TIMEOUT_S` is killed and recorded as
an `UNFINISHED_ERROR` failure, so every request that started in the window is recorded exactly once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.pool import Group
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import User, constant, task
from locust.env import Environment
from locust.exception import CatchResponseError, StopUser
from locust.runners import Runner

from servingbench.loadtests.openloop import (
    UNFINISHED_ERROR,
    ArrivalSchedule,
    constant_arrival_time,
    first_constant_index,
    inflight_cap_per_process,
)
from servingbench.loadtests.protocol import DRAIN_TIMEOUT_S, KILL_WAIT_S
from servingbench.loadtests.recorder import LatencyRecorder
from servingbench.loadtests.scenarios import USER_CLASS_BY_KIND, LoadSpec, PayloadCycle
from servingbench.loadtests.window import WindowPlan

__all__ = [
    "ClosedLoopUser",
    "OpenLoopUser",
    "RunSetup",
    "active_run",
    "begin_run",
    "end_run",
    "install_recording",
    "spawn_users",
    "stop_run",
]

OPEN_LOOP_CONTEXT_KEY = "servingbench_open_loop"
"""Request-context key of an open-loop request's `_OpenLoopMeta` (intended time, send lag)."""
IDLE_POLL_S = 0.05
"""Seconds the open-loop scheduler waits between checks for its stop once its schedule has passed the window."""
OPEN_DRAIN_SHARE = 0.8
"""Share of `DRAIN_TIMEOUT_S` the open-loop scheduler waits for its requests itself: less than all of it, so it has
recorded the unfinished ones before the process gives up on it."""
MS_PER_S = 1000.0
CLIENT_TIMEOUT_S = 60.0
"""Connect and read timeout of both users' client, in seconds (Locust's FastHttpUser default)."""
REQUEST_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    # Ask for the body as is, so no server spends time compressing and every stack sends the same bytes.
    "Accept-Encoding": "identity",
}


@dataclass(frozen=True)
class RunSetup:
    """One run as one load process runs it: the spec and its window plan, and this process's share.

    `stream` (0 .. `streams` - 1) is this process's open-loop arrival stream and `streams` the number of processes
    that run users; `users` how many users it spawns (closed loop: its share of `spec.users`; open loop: 1).
    """

    run: int
    spec: LoadSpec
    plan: WindowPlan
    stream: int = 0
    streams: int = 1
    users: int = 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (the run message to a worker)."""
        return {
            "run": self.run,
            "spec": self.spec.to_json(),
            "plan": self.plan.to_json(),
            "stream": self.stream,
            "streams": self.streams,
            "users": self.users,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSetup:
        """Inverse of `to_json`."""
        return cls(
            run=int(data["run"]),
            spec=LoadSpec.from_json(data["spec"]),
            plan=WindowPlan.from_json(data["plan"]),
            stream=int(data["stream"]),
            streams=int(data["streams"]),
            users=int(data["users"]),
        )


@dataclass
class _Run:
    """The run this process is serving."""

    setup: RunSetup
    recorder: LatencyRecorder
    payloads: PayloadCycle
    stopping: bool = False
    closed: bool = False


_current: _Run | None = None


def begin_run(setup: RunSetup) -> None:
    """Make `setup` this process's run (its recorder, its body order); RuntimeError if one is still active."""
    global _current
    if _current is not None:
        raise RuntimeError(f"run {_current.setup.run} is still active")
    plan = setup.plan
    recorder = LatencyRecorder(plan.provisional, hold_from=plan.min_end if plan.dynamic else None)
    _current = _Run(setup, recorder, PayloadCycle(setup.spec.payloads, setup.spec.seed))
    # Per-process streams that differ between processes but repeat from run to run.
    random.seed(f"{setup.spec.seed}/{setup.stream}")


def active_run() -> _Run | None:
    """The run in progress, if any."""
    return _current


def end_run() -> None:
    """Forget the current run (after its samples were handed over)."""
    global _current
    _current = None


def _run() -> _Run:
    if _current is None:
        raise RuntimeError("no run is active in this load process")
    return _current


def spawn_users(runner: Runner) -> None:
    """Start the current run's users in `runner` (Locust's own spawning, without its dispatch: no ramp, no
    rebalancing, nothing to undo between runs)."""
    setup = _run().setup
    if setup.users > 0:
        runner.spawn_users({USER_CLASS_BY_KIND[setup.spec.kind]: setup.users})


def stop_run(runner: Runner) -> None:
    """Ask the users to stop after the request in hand, wait up to `DRAIN_TIMEOUT_S` for them to leave, kill the
    rest (their unfinished requests are recorded as failures)."""
    _run().stopping = True
    users = runner.user_greenlets
    if not users.join(timeout=DRAIN_TIMEOUT_S):
        users.kill(block=True, timeout=KILL_WAIT_S)


class ClosedLoopUser(User):
    """Closed loop: post the next body, wait for the answer, post again at once. Non-2xx answers are failures.

    It sends through geventhttpclient, the client under Locust's `FastHttpUser`, directly (see `_timed_post`).
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        self._run = _run()
        self._http = _client(self._run.setup.spec.base_url, pool=1)

    def on_stop(self) -> None:
        self._http.close()

    @task
    def post_payload(self) -> None:
        """One request, timed and reported through `events.request`; a killed one is recorded as unfinished."""
        run = self._run
        if run.stopping:
            raise StopUser
        start_time, start = time.time(), time.perf_counter()
        run.recorder.note_start(start_time)
        try:
            outcome = _timed_post(self._http, run.setup.spec.endpoint, next(run.payloads), start_time, start)
        except GreenletExit:
            elapsed_ms = (time.perf_counter() - start) * MS_PER_S
            run.recorder.record(
                start_time=start_time, response_time_ms=elapsed_ms, server_timing=None, error=UNFINISHED_ERROR
            )
            raise
        outcome.fire(self, context={})


@dataclass(frozen=True)
class _Answer:
    """What the recorder reads of an answer: its headers."""

    headers: dict[str, str | None]


@dataclass(frozen=True)
class _Outcome:
    """One timed request: epoch start, milliseconds to the last byte of the body, and how it ended."""

    endpoint: str
    start_time: float
    response_time_ms: float
    length: int
    answer: _Answer
    exception: Exception | None

    def fire(self, user: User, *, context: dict[str, Any]) -> None:
        """Report it through the user's `events.request`, as any Locust client does (the recorder listens there)."""
        user.environment.events.request.fire(
            request_type="POST",
            name=self.endpoint,
            response_time=self.response_time_ms,
            response_length=self.length,
            response=self.answer,
            exception=self.exception,
            context=context,
            start_time=self.start_time,
            url=self.endpoint,
        )


def _client(base_url: str, *, pool: int) -> HTTPClient:
    """A geventhttpclient client for the run's server holding up to `pool` connections."""
    return HTTPClient.from_url(
        URL(base_url),
        concurrency=pool,
        connection_timeout=CLIENT_TIMEOUT_S,
        network_timeout=CLIENT_TIMEOUT_S,
    )


def _timed_post(http: HTTPClient, endpoint: str, body: bytes, start_time: float, start: float) -> _Outcome:
    """POST `body`, timed with `perf_counter` from `start` (taken just before the request is written, as is
    `start_time`, its epoch twin) to the last byte of the answer.

    Both users call geventhttpclient directly rather than through Locust's `FastHttpUser` session: the session
    wrapper added about 0.3 ms of client time to every request (measured against wrk), which would sit in every
    latency, and its CPU cost per request halved the rate one open-loop process could keep on schedule.
    """
    answer, length = _Answer({}), 0
    exception: Exception | None = None
    try:
        response = http.post(endpoint, body=body, headers=REQUEST_HEADERS)
        length = len(response.read())
        timing = response.get("server-timing")
        answer = _Answer({"Server-Timing": timing if isinstance(timing, str) else None})
        if not 200 <= response.status_code < 300:
            exception = CatchResponseError(f"HTTP {response.status_code}")
    except Exception as exc:  # a transport failure is a failed request, named by its class
        exception = exc
    return _Outcome(endpoint, start_time, (time.perf_counter() - start) * MS_PER_S, length, answer, exception)


class OpenLoopUser(User):
    """Open loop, one user per load process: a scheduler that sends each request at its intended time, in its own
    greenlet, never waiting for earlier answers.

    The process's share of the rate (`rate / streams`) follows `spec.arrivals`; its share of the in-flight cap
    (`users / streams`) is also the size of its connection pool, so no request ever queues for a connection. An
    arrival that finds the cap reached is dropped (counted, not sent). Every arrival takes the next body, dropped
    ones included. Once the run stops, requests in flight get part of `DRAIN_TIMEOUT_S` to finish; the rest are
    recorded as `UNFINISHED_ERROR` failures.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        """Set up the client and the schedule: this process's stream, on the clock of `time.time()`.

        The schedule starts no later than the window: a user that started late (a very busy machine) sends the
        arrivals it missed at once, late, rather than leave them out of the window.
        """
        self._run = run = _run()
        setup, spec = run.setup, run.setup.spec
        self._cap = inflight_cap_per_process(spec.users, setup.streams)
        self._http = _client(spec.base_url, pool=self._cap)
        self._inflight = Group()
        self._clock_offset_s = time.time() - time.perf_counter()  # epoch = perf_counter + offset
        self._rate = float(spec.rate or 0.0)
        origin = min(time.time(), setup.plan.start)
        if spec.arrivals == "constant":
            self._index = first_constant_index(
                start=setup.plan.start, rate=self._rate, not_before=origin, stream=setup.stream, streams=setup.streams
            )
        else:
            self._origin = origin
            self._schedule = ArrivalSchedule(
                process=spec.arrivals, rate=self._rate / setup.streams, seed=f"{spec.seed}/{setup.stream}"
            )
        self._next_epoch = self._advance()

    def _advance(self) -> float:
        """The intended time of this stream's next arrival (epoch seconds)."""
        setup = self._run.setup
        if setup.spec.arrivals == "constant":
            due = constant_arrival_time(start=setup.plan.start, rate=self._rate, index=self._index)
            self._index += setup.streams
            return due
        return self._origin + next(self._schedule)

    @task
    def send_on_schedule(self) -> None:
        """Wait for the next intended time, issue that request, and move the schedule on by one arrival. Once the
        run stops, arrivals due inside the window but not yet sent (the scheduler fell behind) still go out, late,
        so the window's schedule is always complete; then the user drains and leaves."""
        run = self._run
        window = run.recorder.window
        past_window = window is not None and self._next_epoch >= window.end
        if past_window and run.stopping:
            self._drain()
            raise StopUser
        if past_window:
            gevent.sleep(IDLE_POLL_S)  # the schedule is past the window: send nothing more, wait to be stopped
            return
        due_perf = self._next_epoch - self._clock_offset_s
        while (remaining := due_perf - time.perf_counter()) > 0:
            gevent.sleep(remaining)
        self._issue(self._next_epoch, due_perf, next(run.payloads))
        self._next_epoch = self._advance()

    def _issue(self, intended_epoch: float, due_perf: float, body: bytes) -> None:
        dropped = len(self._inflight) >= self._cap
        self._run.recorder.note_scheduled(intended_epoch, dropped=dropped)
        if not dropped:
            self._inflight.spawn(self._send, intended_epoch, due_perf, body)

    def _send(self, intended_epoch: float, due_perf: float, body: bytes) -> None:
        """One request; its timing reaches the recorder through `events.request`, with the meta in its context."""
        meta = _OpenLoopMeta(intended_time=intended_epoch, send_lag_ms=(time.perf_counter() - due_perf) * MS_PER_S)
        send_time, start = time.time(), time.perf_counter()
        try:
            outcome = _timed_post(self._http, self._run.setup.spec.endpoint, body, send_time, start)
        except GreenletExit:
            # Killed while waiting for its answer (nothing was recorded yet): count it, from its intended time.
            elapsed_ms = (time.perf_counter() - start) * MS_PER_S
            _record_open(self._run, meta, send_time, elapsed_ms, server_timing=None, error=UNFINISHED_ERROR)
            raise
        outcome.fire(self, context={OPEN_LOOP_CONTEXT_KEY: meta})

    def _drain(self) -> None:
        """Let the requests in flight finish (within part of the drain time), then kill and count the rest."""
        try:
            self._inflight.join(timeout=DRAIN_TIMEOUT_S * OPEN_DRAIN_SHARE)
        finally:
            self._inflight.kill(block=True, timeout=KILL_WAIT_S)

    def on_stop(self) -> None:
        self._inflight.kill(block=True, timeout=KILL_WAIT_S)
        self._http.close()


@dataclass(frozen=True)
class _OpenLoopMeta:
    """What the recorder needs beyond Locust's own request timing: epoch seconds and milliseconds."""

    intended_time: float
    send_lag_ms: float


if missing_users := set(USER_CLASS_BY_KIND.values()) - set(globals()):
    raise RuntimeError(f"USER_CLASS_BY_KIND names user classes this module lacks: {sorted(missing_users)}")


# ---- recording ----


def _on_request(
    *,
    start_time: float,
    response_time: float,
    response: Any,
    exception: BaseException | None,
    context: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """`response_time` is float milliseconds from `perf_counter` (sub-microsecond), `start_time` epoch seconds."""
    run = _current
    if run is None:
        return
    meta = (context or {}).get(OPEN_LOOP_CONTEXT_KEY)
    server_timing = _header(response, "Server-Timing")
    if isinstance(meta, _OpenLoopMeta):
        _record_open(run, meta, start_time, response_time, server_timing=server_timing, error=_error_kind(exception))
        return
    run.recorder.record(
        start_time=start_time, response_time_ms=response_time, server_timing=server_timing, error=_error_kind(exception)
    )


def _record_open(
    run: _Run,
    meta: _OpenLoopMeta,
    send_time: float,
    response_time_ms: float,
    *,
    server_timing: str | None,
    error: str | None,
) -> None:
    run.recorder.record_open(
        intended_time=meta.intended_time,
        send_time=send_time,
        send_lag_ms=meta.send_lag_ms,
        response_time_ms=response_time_ms,
        server_timing=server_timing,
        error=error,
    )


def _header(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


def _error_kind(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    if isinstance(exception, CatchResponseError):
        return str(exception)
    return type(exception).__name__


def install_recording(environment: Environment) -> None:
    """Record every request of this process's runs (a process that runs users calls this once)."""
    _listen(environment.events.request, _on_request)


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # through Any: Locust's EventHook.add_listener is unannotated
