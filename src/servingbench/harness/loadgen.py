"""Drive Locust from the harness: a `LoadSession` keeps the load processes up and runs one measurement at a time.

A session starts its Locust processes once (`loadtests.locust_process`), each in its own process group and pinned
to the load CPUs: one local process, or a master plus N local workers (Locust's distributed mode on loopback), plus
optional remote workers (`servingbench load-worker`, `harness.distributed`) that the master also waits for. Then
`session.run(spec, out_dir=...)` measures one `LoadSpec` and returns a `LoadResult`; consecutive runs may target
other servers, kinds, endpoints and bodies at no start-up cost. The harness sends each run as a JSON line on the
owner's stdin and follows its events on stdout (`loadtests.protocol`); on the window events it samples the
generator's CPU time (local processes only) and calls the caller's callbacks, in the calling thread.

    with LoadSession(bundle / "load", cpus=[1]) as session:
        for spec in specs:  # e.g. interleaved configs, each on its own server
            result = session.run(spec, out_dir=bundle / "runs" / run_id)

Files: one log per load process per session (`<session_dir>/locust-<role>.log`, appended to across restarts);
per run, in `out_dir`, Locust's request and failure CSVs (a few KB) and, only with `locust_html=True`, its HTML
report. The merged microsecond histograms travel in the result (`LoadResult.histograms`, `to_json`).

Failures: a load process that dies, a result that comes back incomplete, or a run past its deadline raises
`LoadgenError` (`LoadgenTimeout`) with the logs' tails; the session then stops every process at once (so no load
keeps hitting the server) and restarts them on the next `run` (`restarts` counts it). Whatever happens, including
KeyboardInterrupt, leaving the `with` block (or `close()`) stops every process it started: a polite "quit", then
SIGTERM, then SIGKILL, each process group reaped.

`run_load` is the one-shot form (a session of one run, its logs in `out_dir`); `generator_ceiling` measures the
highest open-loop rate this generator can offer on time.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil
from hdrh.histogram import HdrHistogram

from servingbench.harness.processes import free_port
from servingbench.loadtests.openloop import (
    DEFAULT_ARRIVALS,
    DEFAULT_CEILING_LAG_MS,
    GEVENT_BACKEND_ENV_VAR,
    OPEN_LOOP_GEVENT_BACKEND,
    ArrivalProcess,
    CeilingStep,
    GeneratorCeiling,
    OpenLoopCounts,
)
from servingbench.loadtests.protocol import (
    DEFAULT_MASTER_PORT,
    EVENT_ERROR,
    EVENT_READY,
    EVENT_RESULT,
    EVENT_WINDOW_END,
    EVENT_WINDOW_START,
    OP_QUIT,
    RUN_DRAIN_S,
    decode_line,
    encode_line,
    process_argv,
    run_command,
)
from servingbench.loadtests.recorder import (
    HISTOGRAM_NAMES,
    RESULT_FORMAT,
    RESULT_VERSION,
    SERVER_TIMING_METRICS,
    Window,
    WorkerCounts,
    decode_histogram,
    encode_histogram,
    histogram_mean,
    new_histogram,
)
from servingbench.loadtests.scenarios import LoadSpec, user_class_name

__all__ = [
    "WORKER_CONNECT_TIMEOUT_S",
    "LatencyHistograms",
    "LoadResult",
    "LoadSession",
    "LoadgenError",
    "LoadgenTimeout",
    "WindowCallback",
    "generator_ceiling",
    "run_load",
]

WindowCallback = Callable[[], None]

LOOPBACK = "127.0.0.1"
WORKER_CONNECT_TIMEOUT_S = 30.0
"""Seconds the master waits for its workers to connect when the session starts."""
STARTUP_ALLOWANCE_S = 60.0
"""Slack for the load processes to start (importing Locust takes about a second; more on a busy machine)."""
RUN_ALLOWANCE_S = 30.0
"""Slack on top of warm-up + window + the processes' own drain and report waits in a run's default deadline."""
QUIT_GRACE_S = 5.0
"""Seconds the processes get to exit after "quit" before they are signalled."""
KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when cleaning up."""
POLL_INTERVAL_S = 0.01
"""How often the processes are checked while waiting for an event; bounds how late a window callback runs."""
LOG_TAIL_LINES = 20
LATENCY_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
MS_DECIMALS = 3
US_PER_MS = 1000.0
CEILING_WARMUP_S = 0.5
CEILING_TARGET_REQUESTS = 2000
"""Requests per ceiling step: enough for a p99 send lag that rests on 20 requests."""
CEILING_MIN_DURATION_S = 1.0
CEILING_MAX_DURATION_S = 5.0
CEILING_INFLIGHT_S = 0.1
"""A ceiling step's in-flight cap: this many seconds of arrivals (the cheap server answers in well under that)."""
CEILING_MIN_INFLIGHT = 32


class LoadgenError(RuntimeError):
    """The load generator failed or its result is unusable (the message carries the log tail)."""


class LoadgenTimeout(LoadgenError):
    """The load generator did not finish before the deadline."""


@dataclass(frozen=True)
class LatencyHistograms:
    """Merged HDR histograms in microseconds: end-to-end latency and the servers' Server-Timing parts.

    Open loop: `total` is counted from each request's intended send time (corrected), `total_uncorrected` from its
    actual send (service time), `send_lag` is actual minus intended send time; the last two are empty otherwise.
    """

    total: HdrHistogram
    validate: HdrHistogram
    predict: HdrHistogram
    total_uncorrected: HdrHistogram = field(default_factory=new_histogram)
    send_lag: HdrHistogram = field(default_factory=new_histogram)


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured, over its measurement window only.

    `requests` counts successful plus failed requests that started in the window; `duration_s` is the window's
    actual length in seconds; `rps` = requests / duration_s. `target_requests` is the spec's request-count target
    (None: a fixed window) and `ended_by` what ended the window: "duration" (no target), "target" (reached, and
    `min_duration_s` passed) or "cap" (the target not reached within `duration_s`). `generator_cpu_s` is the CPU
    time (user + system, seconds) of the local Locust processes between the window events, `generator_cpu_pct`
    that as % of the allotted cores' capacity. `workers` holds per-process counts (their `requests` add up to
    `requests`). `open_loop` (open loop only) holds what was scheduled, dropped and sent late; `offered_rps` and
    `achieved_rps` derive from it. `window` is the measurement window itself (epoch seconds, the load processes'
    clock).
    """

    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    warmup_s: float
    duration_s: float
    rps: float
    histograms: LatencyHistograms
    generator_cpu_s: float
    generator_cpu_pct: float
    workers: dict[str, WorkerCounts]
    artifacts: dict[str, Path] = field(default_factory=dict)
    open_loop: OpenLoopCounts | None = None
    target_requests: int | None = None
    ended_by: str = "duration"
    window: Window | None = None

    @property
    def offered_rps(self) -> float | None:
        """Open loop: arrivals the schedule placed in the window per second (the asked rate plus Poisson noise)."""
        if self.open_loop is None or self.duration_s <= 0:
            return None
        return self.open_loop.scheduled / self.duration_s

    @property
    def achieved_rps(self) -> float | None:
        """Open loop: requests actually sent during the window per second (falls short when the generator lags)."""
        if self.open_loop is None or self.duration_s <= 0:
            return None
        return self.open_loop.sent_in_window / self.duration_s

    def generator_problems(self) -> list[str]:
        """Why the load generator did not keep its schedule (open loop: dropped or late requests); empty if it did."""
        return [] if self.open_loop is None else self.open_loop.problems(self.requests)

    def to_json(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        """The load part of a results-bundle run entry; artifact paths relative to `relative_to` if given."""
        return {
            "warmup_s": float(self.warmup_s),
            "duration_s": round(self.duration_s, MS_DECIMALS),
            "target_requests": self.target_requests,
            "ended_by": self.ended_by,
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "rps": round(self.rps, MS_DECIMALS),
            "latency_ms": _latency_summary_ms(self.histograms.total),
            "server_timing_ms": _server_timing_summary_ms(self.histograms),
            "offered_rps": _round_opt(self.offered_rps),
            "achieved_rps": _round_opt(self.achieved_rps),
            "late": None if self.open_loop is None else self.open_loop.late,
            "dropped": None if self.open_loop is None else self.open_loop.dropped,
            "send_lag_p99_ms": None if self.open_loop is None else _round_opt(self.open_loop.send_lag_p99_ms),
            "histograms": {
                "total": encode_histogram(self.histograms.total),
                "total_uncorrected": None
                if self.open_loop is None
                else encode_histogram(self.histograms.total_uncorrected),
                "validate": encode_histogram(self.histograms.validate),
                "predict": encode_histogram(self.histograms.predict),
            },
            "generator_cpu_pct": round(self.generator_cpu_pct, 1),
            "artifacts": {name: _relative(path, relative_to) for name, path in self.artifacts.items()},
        }


# ---- the session ----


@dataclass
class _LoadProcess:
    """One started load process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


class LoadSession:
    """Long-lived Locust processes that run one measurement at a time (see the module docstring).

    `session_dir`: where the processes' logs go (one per process). `cpus`: CPU ids every load process is pinned to
    (None: inherit this process's affinity). `workers`: 1 runs a single local process; N > 1 a master and N local
    workers. `remote_workers` (default 0): workers started elsewhere that the master also waits for; with any, the
    master listens on `master_bind`:`master_port` (default 127.0.0.1:5557) and `workers` may be 0. `locust_html`:
    also write Locust's HTML report for every run (about 1 MB each; off by default).
    Use as a context manager, or call `start()` and `close()`.
    """

    def __init__(
        self,
        session_dir: Path,
        *,
        cpus: Sequence[int] | None,
        workers: int = 1,
        remote_workers: int = 0,
        master_bind: str = LOOPBACK,
        master_port: int | None = None,
        locust_html: bool = False,
    ) -> None:
        if workers < 0 or remote_workers < 0 or workers + remote_workers < 1:
            raise ValueError(f"need at least one worker, got {workers} local and {remote_workers} remote")
        if master_bind != LOOPBACK and not remote_workers:
            raise ValueError(f"the master binds beyond loopback ({master_bind}) only for remote workers")
        if cpus is not None and not cpus:
            raise ValueError("cpus must not be empty")
        self.session_dir = session_dir
        self.cpus = None if cpus is None else tuple(cpus)
        self.workers = workers
        self.remote_workers = remote_workers
        self.master_bind = master_bind
        self.master_port = master_port
        self.locust_html = locust_html
        self.restarts = 0
        """How many times the session restarted its processes after a failed run."""
        self.worker_ids: tuple[str, ...] = ()
        """The Locust client ids of the master's workers (empty for a single local process)."""
        self._processes: list[_LoadProcess] = []
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._run_id = 0
        self._broken = False

    @property
    def distributed(self) -> bool:
        """Whether the session runs a master and workers rather than one local process."""
        return self.workers > 1 or self.remote_workers > 0

    @property
    def pids(self) -> list[int]:
        """Process ids of the local load processes (owner first) while the session is started."""
        return [load.process.pid for load in self._processes]

    def __enter__(self) -> LoadSession:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self, *, timeout_s: float | None = None) -> None:
        """Start the load processes and wait until they are ready (the master's workers all joined); no-op if
        started. `timeout_s` default: start-up slack, plus the workers' connect time for a distributed session."""
        if self._processes:
            return
        connect = WORKER_CONNECT_TIMEOUT_S if self.distributed else 0.0
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else STARTUP_ALLOWANCE_S + connect)
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self._events = queue.Queue()
        try:
            self._spawn_all(connect)
            ready = self._wait_for(deadline, run_id=None)
            self.worker_ids = tuple(str(worker) for worker in ready.get("workers", ()))
        except BaseException:
            self._stop_processes()
            raise

    def run(
        self,
        spec: LoadSpec,
        *,
        out_dir: Path,
        on_window_start: WindowCallback | None = None,
        on_window_end: WindowCallback | None = None,
        timeout_s: float | None = None,
    ) -> LoadResult:
        """Measure `spec` and return its result; Locust's per-run files go to `out_dir`.

        `on_window_start` / `on_window_end` run in the calling thread right after the load process reports that the
        measurement window opened / closed (within `POLL_INTERVAL_S`); `on_window_end` runs only if
        `on_window_start` did. `timeout_s`: deadline in seconds (default: warm-up + `duration_s` + drain and report
        slack). Raises `LoadgenError` if a load process fails or the result is incomplete, `LoadgenTimeout` past
        the deadline (the session then restarts on the next run), NotImplementedError for a kind without a user.
        """
        user_class_name(spec.kind)
        if self._broken:
            self._restart()
        elif not self._processes:
            self.start()
        self._run_id += 1
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else _run_timeout_s(spec))
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._send(run_command(self._run_id, spec, out_dir, locust_html=self.locust_html))
            return self._follow(spec, out_dir, deadline, on_window_start, on_window_end)
        except BaseException:
            self._broken = True
            self._stop_processes()  # at once: no load may keep hitting the server, and no process may linger
            raise

    def close(self) -> None:
        """Stop every load process: "quit", then SIGTERM, then SIGKILL; reaped. Safe to call twice."""
        if not self._processes:
            return
        try:
            self._send({"op": OP_QUIT})
            owner = self._processes[0].process
            if owner.stdin is not None:
                owner.stdin.close()
            deadline = time.monotonic() + QUIT_GRACE_S
            while any(load.process.poll() is None for load in self._processes) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL_S)
        except OSError:
            pass  # the owner is gone already: the signals below deal with the rest
        finally:
            self._stop_processes()

    # -- processes --

    def _restart(self) -> None:
        self.close()
        self._broken = False
        self.restarts += 1
        self.start()

    def _spawn_all(self, connect_s: float) -> None:
        env = _child_env()
        if not self.distributed:
            self._spawn("locust-local", process_argv("local"), env, owner=True)
            return
        port = self.master_port
        if port is None:
            port = DEFAULT_MASTER_PORT if self.remote_workers else free_port(LOOPBACK)
        master = process_argv(
            "master",
            master_host=self.master_bind,
            master_port=port,
            expect_workers=self.workers + self.remote_workers,
            connect_timeout_s=connect_s,
        )
        self._spawn("locust-master", master, env, owner=True)
        worker: list[str] = process_argv("worker", master_host=LOOPBACK, master_port=port)
        for index in range(self.workers):
            self._spawn(f"locust-worker-{index}", worker, env, owner=False)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], *, owner: bool) -> None:
        log_path = self.session_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if owner else subprocess.DEVNULL,
                stdout=subprocess.PIPE if owner else log,
                stderr=log,
                cwd=self.session_dir,  # keeps Locust from reading a stray locust.conf of the caller's directory
                env=env,
                start_new_session=True,  # its own process group, killed whole
                preexec_fn=None if self.cpus is None else _affinity_setter(frozenset(self.cpus)),
            )
        self._processes.append(_LoadProcess(name, process, log_path))
        if owner and process.stdout is not None:
            threading.Thread(
                target=_read_events, args=(process.stdout, self._events), name=f"{name}-events", daemon=True
            ).start()

    def _stop_processes(self) -> None:
        processes, self._processes = self._processes, []
        _terminate_all([load.process for load in processes])
        for load in processes:
            for stream in (load.process.stdin, load.process.stdout):
                if stream is not None:
                    stream.close()

    def _send(self, message: dict[str, Any]) -> None:
        owner = self._processes[0].process
        if owner.stdin is None:
            raise LoadgenError("the load session has no owner process")
        try:
            owner.stdin.write(encode_line(message))
            owner.stdin.flush()
        except BrokenPipeError as exc:
            raise LoadgenError(f"the load process is gone.\n{self._log_tails()}") from exc

    # -- events --

    def _follow(
        self,
        spec: LoadSpec,
        out_dir: Path,
        deadline: float,
        on_window_start: WindowCallback | None,
        on_window_end: WindowCallback | None,
    ) -> LoadResult:
        """Follow one run's events to its result, sampling the generator's CPU at the window's edges."""
        cpu: dict[str, float] = {}
        wall: dict[str, float] = {}
        while True:
            event = self._wait_for(deadline, run_id=self._run_id)
            kind = event.get("event")
            if kind == EVENT_RESULT:
                return self._result(spec, event, out_dir, cpu, wall)
            if kind not in (EVENT_WINDOW_START, EVENT_WINDOW_END) or (kind == EVENT_WINDOW_END and not cpu):
                continue
            cpu[kind], wall[kind] = _cpu_seconds(self.pids), time.monotonic()
            callback = on_window_start if kind == EVENT_WINDOW_START else on_window_end
            if callback is not None:
                callback()

    def _wait_for(self, deadline: float, *, run_id: int | None) -> dict[str, Any]:
        """The next event of run `run_id` (None: the "ready" event), checking the processes while waiting."""
        while True:
            try:
                event = self._events.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                self._check_alive(deadline)
                continue
            if event is None:
                raise LoadgenError(f"the load process closed its event stream.\n{self._log_tails()}")
            kind = event.get("event")
            if kind == EVENT_ERROR:
                raise LoadgenError(f"load process failed: {event.get('message')}\n{self._log_tails()}")
            if (run_id is None and kind == EVENT_READY) or (run_id is not None and event.get("run") == run_id):
                return event

    def _check_alive(self, deadline: float) -> None:
        for load in self._processes:
            code = load.process.poll()
            if code is not None:
                raise LoadgenError(f"load process {load.name} exited with code {code}.\n{self._log_tails()}")
        if time.monotonic() > deadline:
            raise LoadgenTimeout(f"load generator still running at the deadline.\n{self._log_tails()}")

    def _result(
        self, spec: LoadSpec, event: dict[str, Any], out_dir: Path, cpu: dict[str, float], wall: dict[str, float]
    ) -> LoadResult:
        document: dict[str, Any] = event["result"]
        if not document.get("complete"):
            problems = "; ".join(document.get("problems") or ["no reason given"])
            raise LoadgenError(f"incomplete load result ({problems}).\n{self._log_tails()}")
        if document.get("format") != RESULT_FORMAT or document.get("version") != RESULT_VERSION:
            raise LoadgenError("unexpected load result format")
        if len(cpu) < 2:
            raise LoadgenError("the load generator never reported both ends of its measurement window")
        cpu_s = cpu[EVENT_WINDOW_END] - cpu[EVENT_WINDOW_START]
        wall_s = wall[EVENT_WINDOW_END] - wall[EVENT_WINDOW_START]
        files = {str(name): out_dir / str(file) for name, file in event.get("files", {}).items()}
        logs = {f"{load.name.replace('-', '_')}_log": load.log for load in self._processes}
        cores = len(self.cpus) if self.cpus is not None else len(os.sched_getaffinity(0))
        return _load_result(spec, document, cpu_s, wall_s, cores, {**files, **logs})

    def _log_tails(self) -> str:
        tails = []
        for load in self._processes:
            text = load.log.read_text(encoding="utf-8", errors="replace") if load.log.exists() else ""
            lines = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
            tails.append(f"--- {load.log.name} (last {LOG_TAIL_LINES} lines) ---\n{lines}")
        return "\n".join(tails)


def _read_events(stream: IO[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
    """Reader thread: owner events into `events`; None once the stream ends (or carries something unreadable)."""
    try:
        for line in stream:
            if line.strip():
                events.put(decode_line(line))
    except (OSError, ValueError):
        pass
    finally:
        events.put(None)


def _run_timeout_s(spec: LoadSpec) -> float:
    return spec.run_time_s + RUN_DRAIN_S + RUN_ALLOWANCE_S


def _child_env() -> dict[str, str]:
    # LOCUST_* variables would silently change the run; the session's messages are the whole configuration.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    # Send on time: microsecond timer waits instead of epoll's milliseconds (one backend serves every kind of run).
    env[GEVENT_BACKEND_ENV_VAR] = OPEN_LOOP_GEVENT_BACKEND
    return env


def _affinity_setter(cpus: frozenset[int]) -> Callable[[], None]:
    def pin() -> None:  # runs in the child between fork and exec: one syscall, no locks
        os.sched_setaffinity(0, cpus)

    return pin


def _terminate_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every still-running process group, SIGKILL what is left after `KILL_GRACE_S`, reap all; a Ctrl-C
    while waiting goes straight to SIGKILL, then propagates."""
    try:
        _signal_groups(processes, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
    finally:
        _signal_groups(processes, signal.SIGKILL)
        for process in processes:
            process.wait()


def _signal_groups(processes: Sequence[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    for process in processes:
        if process.poll() is None:  # only while the leader is unreaped is its group id surely still ours
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the processes and their descendants (gone processes count 0)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


# ---- one-shot ----


def run_load(
    spec: LoadSpec,
    *,
    out_dir: Path,
    cpus: Sequence[int] | None,
    workers: int = 1,
    remote_workers: int = 0,
    master_bind: str = LOOPBACK,
    master_port: int | None = None,
    timeout_s: float | None = None,
    on_window_start: WindowCallback | None = None,
    on_window_end: WindowCallback | None = None,
    locust_html: bool = False,
) -> LoadResult:
    """Drive `spec` in a session of one run: start the load processes, measure, stop them. Locust's per-run files
    and the processes' logs go to `out_dir`. `timeout_s`: overall deadline in seconds, start-up included (default:
    start-up slack + warm-up + duration + drain slack). Everything else as `LoadSession` and `LoadSession.run`."""
    user_class_name(spec.kind)
    session = LoadSession(
        out_dir,
        cpus=cpus,
        workers=workers,
        remote_workers=remote_workers,
        master_bind=master_bind,
        master_port=master_port,
        locust_html=locust_html,
    )
    connect = WORKER_CONNECT_TIMEOUT_S if session.distributed else 0.0
    total_s = timeout_s if timeout_s is not None else STARTUP_ALLOWANCE_S + connect + _run_timeout_s(spec)
    deadline = time.monotonic() + total_s
    try:
        session.start(timeout_s=total_s)
        return session.run(
            spec,
            out_dir=out_dir,
            on_window_start=on_window_start,
            on_window_end=on_window_end,
            timeout_s=max(0.0, deadline - time.monotonic()),
        )
    finally:
        session.close()


# ---- the generator's ceiling ----


def generator_ceiling(
    base_url: str,
    *,
    rates: Sequence[float],
    payloads: Sequence[bytes],
    out_dir: Path,
    session: LoadSession | None = None,
    cpus: Sequence[int] | None = None,
    workers: int = 1,
    endpoint: str = "/predict",
    max_send_lag_ms: float = DEFAULT_CEILING_LAG_MS,
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS,
    target_requests: int = CEILING_TARGET_REQUESTS,
    min_duration_s: float = CEILING_MIN_DURATION_S,
    max_duration_s: float = CEILING_MAX_DURATION_S,
    warmup_s: float = CEILING_WARMUP_S,
    seed: int = 0,
    stop_at_first_miss: bool = True,
    allow_remote: bool = False,
) -> GeneratorCeiling:
    """Offer open-loop load at each of `rates` (requests/s, taken in increasing order) to a cheap server at
    `base_url` and judge how far this generator keeps its schedule: per rate, offered vs achieved rate and p99 send
    lag; the ceiling is the highest rate whose p99 send lag stays within `max_send_lag_ms` (`ceiling_rps`).

    Runs in `session` (its CPUs and workers), or in a session of its own on `cpus` with `workers` (its logs in
    `out_dir/session`); each step's files in `out_dir/rate-<rate>`. Steps are sized by request count
    (`target_requests` within `min_duration_s` .. `max_duration_s`). `stop_at_first_miss`: skip the rates above the
    first that missed. A step whose generator failed raises `LoadgenError`.
    """
    with ExitStack() as stack:
        if session is None:
            session = stack.enter_context(LoadSession(out_dir / "session", cpus=cpus, workers=workers))
        steps: list[CeilingStep] = []
        for rate in sorted(rates):
            spec = LoadSpec(
                base_url=base_url,
                endpoint=endpoint,
                payloads=tuple(payloads),
                kind="open",
                users=max(CEILING_MIN_INFLIGHT, round(rate * CEILING_INFLIGHT_S)),
                rate=rate,
                arrivals=arrivals,
                warmup_s=warmup_s,
                duration_s=max_duration_s,
                target_requests=target_requests,
                min_duration_s=min(min_duration_s, max_duration_s),
                seed=seed,
                allow_remote=allow_remote,
            )
            step = _ceiling_step(rate, session.run(spec, out_dir=out_dir / f"rate-{rate:g}"))
            steps.append(step)
            if stop_at_first_miss and not step.within(max_send_lag_ms):
                break
    return GeneratorCeiling(max_send_lag_ms, tuple(steps))


def _ceiling_step(rate: float, result: LoadResult) -> CeilingStep:
    counts = result.open_loop
    return CeilingStep(
        rate=rate,
        offered_rps=_round_opt(result.offered_rps),
        achieved_rps=_round_opt(result.achieved_rps),
        send_lag_p99_ms=None if counts is None else counts.send_lag_p99_ms,
        requests=result.requests,
        late=0 if counts is None else counts.late,
        dropped=0 if counts is None else counts.dropped,
    )


# ---- result ----


def _load_result(
    spec: LoadSpec, document: dict[str, Any], cpu_s: float, wall_s: float, cores: int, artifacts: dict[str, Path]
) -> LoadResult:
    histograms = {name: decode_histogram(document["histograms"][name]) for name in HISTOGRAM_NAMES}
    duration_s = float(document["window"]["duration_s"])
    requests = int(document["requests"])
    return LoadResult(
        requests=requests,
        errors=int(document["errors"]),
        errors_by_kind={str(k): int(v) for k, v in document["errors_by_kind"].items()},
        warmup_s=float(spec.warmup_s),
        duration_s=duration_s,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        histograms=LatencyHistograms(**histograms),
        generator_cpu_s=cpu_s,
        generator_cpu_pct=100.0 * cpu_s / (wall_s * cores) if wall_s > 0 else 0.0,
        workers={str(k): _worker_counts(v) for k, v in document["workers"].items()},
        artifacts={name: path for name, path in artifacts.items() if path.exists()},
        open_loop=_open_loop_counts(document, histograms["send_lag"]) if spec.kind == "open" else None,
        target_requests=spec.target_requests,
        ended_by=str(document.get("ended_by", "duration")),
        window=Window.from_json(document["window"]),
    )


def _open_loop_counts(document: dict[str, Any], send_lag: HdrHistogram) -> OpenLoopCounts:
    lag_p99 = _us_to_ms(send_lag.get_value_at_percentile(99.0)) if send_lag.get_total_count() else None
    return OpenLoopCounts(
        scheduled=int(document["scheduled"]),
        dropped=int(document["dropped"]),
        late=int(document["late"]),
        sent_in_window=int(document["sent_in_window"]),
        send_lag_p99_ms=lag_p99,
    )


def _worker_counts(data: dict[str, Any]) -> WorkerCounts:
    return WorkerCounts(requests=int(data["requests"]), errors=int(data["errors"]), recorded=int(data["recorded"]))


def _latency_summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    keys = ("min", "mean", *LATENCY_PERCENTILES, "max")
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys, None)
    values_us = {
        "min": histogram.get_min_value(),
        "mean": histogram_mean(histogram),
        **{key: histogram.get_value_at_percentile(pct) for key, pct in LATENCY_PERCENTILES.items()},
        "max": histogram.get_max_value(),
    }
    return {key: _us_to_ms(values_us[key]) for key in keys}


def _server_timing_summary_ms(histograms: LatencyHistograms) -> dict[str, float | None]:
    summary: dict[str, float | None] = {}
    for metric in SERVER_TIMING_METRICS:
        histogram: HdrHistogram = getattr(histograms, metric)
        empty = histogram.get_total_count() == 0
        summary[f"{metric}_p50"] = None if empty else _us_to_ms(histogram.get_value_at_percentile(50.0))
        summary[f"{metric}_mean"] = None if empty else _us_to_ms(histogram_mean(histogram))
    return summary


def _us_to_ms(value_us: float) -> float:
    return round(value_us / US_PER_MS, MS_DECIMALS)


def _round_opt(value: float | None) -> float | None:
    return None if value is None else round(value, MS_DECIMALS)


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
