"""Locust users and the recording plumbing; loaded by Locust with `-f`, never imported by servingbench itself.

The run is described by the `LocustRunConfig` JSON file named in the `SERVINGBENCH_LOAD_CONFIG` environment variable.

Who does what:
- The process that owns the test (the master, or the single local process) fixes the measurement window at test start
  (`warmup_s` after it, for `duration_s`), tells the workers, appends `window_start` / `window_end` lines to the events
  file as the window opens and closes, stops the users, collects the last samples, writes the result file, and quits.
- Every process that runs users records each request (`events.request`) that starts inside the window (open loop:
  whose intended send time is inside it; the intended time and send lag ride in the request's `context`). A worker
  ships its samples as deltas with each stats report and once more when its users have stopped (a custom message
  sent before Locust's `client_stopped`); the master adds the deltas exactly and waits for every worker's last one.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.pool import Group
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import CatchResponseError
from locust.runners import MasterRunner, Runner, WorkerRunner

from servingbench.loadtests.openloop import UNFINISHED_ERROR, ArrivalSchedule, constant_origin, inflight_cap_per_process
from servingbench.loadtests.recorder import LatencyRecorder, ResultAggregator, SampleDelta, Window
from servingbench.loadtests.scenarios import CONFIG_ENV_VAR, USER_CLASS_BY_KIND, LocustRunConfig

logger = logging.getLogger("servingbench.locustfile")

MSG_WINDOW = "servingbench_window"
"""Master -> workers: the measurement window, `Window.to_json()`."""
MSG_STOP = "servingbench_stop"
"""Master -> workers: the window is over, stop the users."""
MSG_FINAL_SAMPLES = "servingbench_final_samples"
"""Worker -> master: the last `SampleDelta`, sent once the worker's users have stopped."""
REPORT_KEY = "servingbench_samples"
"""Key of the `SampleDelta` a worker adds to its periodic stats report."""
LOCAL_WORKER_ID = "local"
OPEN_LOOP_CONTEXT_KEY = "servingbench_open_loop"
"""Request-context key of an open-loop request's `_OpenLoopMeta` (intended time, send lag)."""
IDLE_POLL_S = 0.05
"""Seconds the open-loop scheduler waits between checks for its stop once its schedule has passed the window."""
DRAIN_SHARE_OF_STOP_TIMEOUT = 0.8
"""Share of Locust's --stop-timeout that open-loop requests still in flight get to finish once the user stops;
less than all of it, so the user is done draining before Locust gives up on it and kills it."""
KILL_WAIT_S = 2.0
"""Seconds to wait for unfinished open-loop requests to die once killed."""
MS_PER_S = 1000.0
CLIENT_TIMEOUT_S = 60.0
"""Connect and read timeout of both users' client, in seconds (Locust's FastHttpUser default)."""
REQUEST_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    # Ask for the body as is, so no server spends time compressing and every stack sends the same bytes.
    "Accept-Encoding": "identity",
}


def _read_config() -> LocustRunConfig:
    path = os.environ.get(CONFIG_ENV_VAR)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV_VAR} is not set; run this locustfile through servingbench.harness.loadgen")
    return LocustRunConfig.read(Path(path))


CONFIG = _read_config()
SPEC = CONFIG.spec


@dataclass
class _RunState:
    """Module state of this process for the one test it runs."""

    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    aggregator: ResultAggregator = field(default_factory=ResultAggregator)
    window: Window | None = None
    expected_workers: frozenset[str] = frozenset()
    result_written: bool = False


_state = _RunState()


class ClosedLoopUser(User):
    """Closed loop: post the payload, wait for the answer, post again at once. Non-2xx answers are failures.

    It sends through geventhttpclient, the client under Locust's `FastHttpUser`, directly (see `_timed_post`).
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        self._http = _client(self.host, pool=1)

    def on_stop(self) -> None:
        self._http.close()

    @task
    def post_payload(self) -> None:
        """One request, timed and reported through `events.request`."""
        _timed_post(self._http).fire(self, context={})


@dataclass(frozen=True)
class _Answer:
    """What the recorder reads of an answer: its headers."""

    headers: dict[str, str | None]


@dataclass(frozen=True)
class _Outcome:
    """One timed request: epoch start, milliseconds to the last byte of the body, and how it ended."""

    start_time: float
    response_time_ms: float
    length: int
    answer: _Answer
    exception: Exception | None

    def fire(self, user: User, *, context: dict[str, Any]) -> None:
        """Report it through the user's `events.request`, as any Locust client does (the recorder listens there)."""
        user.environment.events.request.fire(
            request_type="POST",
            name=SPEC.endpoint,
            response_time=self.response_time_ms,
            response_length=self.length,
            response=self.answer,
            exception=self.exception,
            context=context,
            start_time=self.start_time,
            url=SPEC.endpoint,
        )


def _client(host: str | None, *, pool: int) -> HTTPClient:
    """A geventhttpclient client for the run's server holding up to `pool` connections."""
    return HTTPClient.from_url(
        URL(host or SPEC.base_url),
        concurrency=pool,
        connection_timeout=CLIENT_TIMEOUT_S,
        network_timeout=CLIENT_TIMEOUT_S,
    )


def _timed_post(http: HTTPClient) -> _Outcome:
    """POST the payload and time it with `perf_counter`, from just before the request is written to the last byte.

    Both users call geventhttpclient directly rather than through Locust's `FastHttpUser` session: the session
    wrapper added about 0.3 ms of client time to every request (measured against wrk), which would sit in every
    latency, and its CPU cost per request halved the rate one open-loop process could keep on schedule.
    """
    start_time, start = time.time(), time.perf_counter()
    answer, length = _Answer({}), 0
    exception: Exception | None = None
    try:
        response = http.post(SPEC.endpoint, body=SPEC.payload, headers=REQUEST_HEADERS)
        length = len(response.read())
        timing = response.get("server-timing")
        answer = _Answer({"Server-Timing": timing if isinstance(timing, str) else None})
        if not 200 <= response.status_code < 300:
            exception = CatchResponseError(f"HTTP {response.status_code}")
    except Exception as exc:  # a transport failure is a failed request, named by its class
        exception = exc
    return _Outcome(start_time, (time.perf_counter() - start) * MS_PER_S, length, answer, exception)


class OpenLoopUser(User):
    """Open loop, one user per load process: a scheduler that sends each request at its intended time, in its own
    greenlet, never waiting for earlier answers.

    The process's share of the rate (`rate / processes`) follows `SPEC.arrivals`; its share of the in-flight cap
    (`users / processes`) is also the size of its connection pool, so no request ever queues for a connection. An
    arrival that finds the cap reached is dropped (counted, not sent). Requests still in flight when the user stops
    get part of the stop timeout to finish; the rest are recorded as `UNFINISHED_ERROR` failures.
    """

    wait_time = constant(0)
    concurrency = inflight_cap_per_process(SPEC.users, CONFIG.processes)

    def on_start(self) -> None:
        """Set up the client and the schedule: this process's stream, seeded, on the clock of `time.time()`."""
        self._http = _client(self.host, pool=self.concurrency)
        self._inflight = Group()
        self._clock_offset_s = time.time() - time.perf_counter()  # epoch = perf_counter + offset
        stream = _stream_index(self.environment)
        rate = float(SPEC.rate or 0.0)
        self._schedule = ArrivalSchedule(
            process=SPEC.arrivals, rate=rate / CONFIG.processes, seed=f"{SPEC.seed}/{stream}"
        )
        now = time.time()
        self._origin = now
        if SPEC.arrivals == "constant":
            window = _state.recorder.window
            anchor = now if window is None else window.start
            self._origin = constant_origin(
                anchor=anchor, now=now, total_rate=rate, stream=stream, streams=CONFIG.processes
            )
        self._next_epoch = self._origin + next(self._schedule)

    @task
    def send_on_schedule(self) -> None:
        """Wait for the next intended time, issue that request, and move the schedule on by one arrival."""
        window = _state.recorder.window
        if window is not None and self._next_epoch >= window.end:
            gevent.sleep(IDLE_POLL_S)  # the schedule is past the window: send nothing more, wait to be stopped
            return
        due_perf = self._next_epoch - self._clock_offset_s
        while (remaining := due_perf - time.perf_counter()) > 0:
            gevent.sleep(remaining)
        self._issue(self._next_epoch, due_perf)
        self._next_epoch = self._origin + next(self._schedule)

    def _issue(self, intended_epoch: float, due_perf: float) -> None:
        dropped = len(self._inflight) >= self.concurrency
        _state.recorder.note_scheduled(intended_epoch, dropped=dropped)
        if not dropped:
            self._inflight.spawn(self._send, intended_epoch, due_perf)

    def _send(self, intended_epoch: float, due_perf: float) -> None:
        """One request; its timing reaches the recorder through `events.request`, with the meta in its context."""
        meta = _OpenLoopMeta(intended_time=intended_epoch, send_lag_ms=(time.perf_counter() - due_perf) * MS_PER_S)
        send_time, start = time.time(), time.perf_counter()
        try:
            outcome = _timed_post(self._http)
        except GreenletExit:
            # Killed while waiting for its answer (nothing was recorded yet): count it, from its intended time.
            elapsed_ms = (time.perf_counter() - start) * MS_PER_S
            _record_open(meta, send_time, elapsed_ms, server_timing=None, error=UNFINISHED_ERROR)
            raise
        outcome.fire(self, context={OPEN_LOOP_CONTEXT_KEY: meta})

    def on_stop(self) -> None:
        """Let the requests in flight finish (within part of the stop timeout), then kill and count the rest."""
        drain_s = float(self.environment.stop_timeout or 0) * DRAIN_SHARE_OF_STOP_TIMEOUT
        try:
            self._inflight.join(timeout=drain_s)
        finally:
            self._inflight.kill(block=True, timeout=KILL_WAIT_S)
            self._http.close()


@dataclass(frozen=True)
class _OpenLoopMeta:
    """What the recorder needs beyond Locust's own request timing: epoch seconds and milliseconds."""

    intended_time: float
    send_lag_ms: float


def _stream_index(environment: Environment) -> int:
    """This process's arrival stream: the worker index (0 .. processes-1), 0 for a single local process."""
    return int(getattr(environment.runner, "worker_index", 0)) % CONFIG.processes


if missing_users := set(USER_CLASS_BY_KIND.values()) - set(globals()):
    raise RuntimeError(f"USER_CLASS_BY_KIND names user classes this locustfile lacks: {sorted(missing_users)}")


# ---- recording (processes that run users) ----


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
    meta = (context or {}).get(OPEN_LOOP_CONTEXT_KEY)
    if isinstance(meta, _OpenLoopMeta):
        server_timing = _header(response, "Server-Timing")
        _record_open(meta, start_time, response_time, server_timing=server_timing, error=_error_kind(exception))
        return
    _state.recorder.record(
        start_time=start_time,
        response_time_ms=response_time,
        server_timing=_header(response, "Server-Timing"),
        error=_error_kind(exception),
    )


def _record_open(
    meta: _OpenLoopMeta, send_time: float, response_time_ms: float, *, server_timing: str | None, error: str | None
) -> None:
    _state.recorder.record_open(
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


def _seed_random(index: int) -> None:
    # Per-process streams that differ between processes but repeat from run to run.
    random.seed(f"{SPEC.seed}/{index}")


# ---- worker side ----


def _on_window_message(environment: Environment, msg: Any, **_: Any) -> None:
    _state.recorder.window = Window.from_json(msg.data)
    _seed_random(int(getattr(environment.runner, "worker_index", 0)) + 1)


def _on_stop_message(environment: Environment, msg: Any, **_: Any) -> None:
    _runner(environment).stop()  # waits up to --stop-timeout for in-flight requests; fires test_stop


def _on_worker_test_stop(environment: Environment, **_: Any) -> None:
    _runner(environment).send_message(MSG_FINAL_SAMPLES, _state.recorder.drain())


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data[REPORT_KEY] = _state.recorder.drain()


# ---- master side ----


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    delta: SampleDelta | None = data.get(REPORT_KEY)
    if delta is not None:
        _state.aggregator.add(client_id, delta)


def _on_final_samples(environment: Environment, msg: Any, **_: Any) -> None:
    _state.aggregator.add(msg.node_id, msg.data)
    _state.aggregator.mark_finished(msg.node_id)


# ---- the process that owns the test (master or local) ----


def _on_test_start(environment: Environment, **_: Any) -> None:
    if _state.window is not None:
        return
    now = time.time()
    window = Window(start=now + SPEC.warmup_s, end=now + SPEC.run_time_s)
    _state.window = window
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        _state.expected_workers = frozenset(runner.clients.keys())
        runner.send_message(MSG_WINDOW, window.to_json())
    else:
        _state.recorder.window = window
        _seed_random(0)
    gevent.spawn(_drive_window, environment, window)


def _drive_window(environment: Environment, window: Window) -> None:
    """Open and close the window on time, then stop, collect, write the result and quit."""
    _sleep_until(window.start)
    _emit_event("window_start", window)
    _sleep_until(window.end)
    _emit_event("window_end", window)
    runner = _runner(environment)
    if isinstance(runner, MasterRunner):
        runner.send_message(MSG_STOP)
        _wait_for_final_samples(float(environment.stop_timeout or 0) + CONFIG.final_report_timeout_s)
    else:
        runner.stop()
    _write_result(environment, window, complete=True)
    runner.quit()


def _sleep_until(epoch_s: float) -> None:
    while (remaining := epoch_s - time.time()) > 0:
        gevent.sleep(remaining)


def _wait_for_final_samples(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _state.expected_workers - _state.aggregator.finished and time.monotonic() < deadline:
        gevent.sleep(0.05)


def _emit_event(name: str, window: Window) -> None:
    """Append one JSON line to the events file: the harness's cue for its window callbacks."""
    line = json.dumps({"event": name, "time": time.time(), "window": window.to_json()})
    with CONFIG.events_path.open("a", encoding="utf-8") as events_file:
        events_file.write(line + "\n")
    logger.info("servingbench %s", line)


def _write_result(environment: Environment, window: Window, *, complete: bool) -> None:
    """Write the result file once (atomically). A local process first adds its own recorder's samples."""
    if _state.result_written:
        return
    _state.result_written = True
    if not isinstance(environment.runner, MasterRunner):
        _state.aggregator.add(LOCAL_WORKER_ID, _state.recorder.drain())
    missing = sorted(_state.expected_workers - _state.aggregator.finished)
    document = _state.aggregator.result_json(window=window, complete=complete and not missing, missing_workers=missing)
    tmp = CONFIG.result_path.with_name(CONFIG.result_path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
    os.replace(tmp, CONFIG.result_path)


def _on_quitting(environment: Environment, **_: Any) -> None:
    """Backstop (--run-time limit hit, SIGTERM): keep what was collected, marked incomplete."""
    if _state.window is not None and not _state.result_written:
        cut = Window(start=_state.window.start, end=max(_state.window.start, min(_state.window.end, time.time())))
        _write_result(environment, cut, complete=False)


# ---- wiring ----


def _runner(environment: Environment) -> Runner:
    runner = environment.runner
    if runner is None:
        raise RuntimeError("Locust environment has no runner")
    return runner


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # through Any: Locust's EventHook.add_listener is unannotated


def _on_init(environment: Environment, **_: Any) -> None:
    # Locust's import-time objects never die: keep them out of every later collection, whose pauses would otherwise
    # delay the open-loop scheduler by a few ms (measured: most late sends in a 2 s window fell at its start).
    gc.collect()
    gc.freeze()
    runner = _runner(environment)
    hooks = environment.events
    logger.info("servingbench %s loop, gevent loop backend: %s", SPEC.kind, gevent.get_hub().loop.backend)
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_FINAL_SAMPLES, _on_final_samples)
        _listen(hooks.worker_report, _on_worker_report)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(MSG_WINDOW, _on_window_message)
        runner.register_message(MSG_STOP, _on_stop_message, concurrent=True)
        _listen(hooks.report_to_master, _on_report_to_master)
        _listen(hooks.test_stop, _on_worker_test_stop)
    if not isinstance(runner, MasterRunner):
        _listen(hooks.request, _on_request)
    if not isinstance(runner, WorkerRunner):
        _listen(hooks.test_start, _on_test_start)
        _listen(hooks.quitting, _on_quitting)


_listen(events.init, _on_init)
