"""Run Locust headless as pinned subprocesses and collect one `LoadResult`.

`run_load` starts one local Locust process, or a master plus N workers (Locust's own distributed mode, bound to
loopback), each in its own session and pinned to the load-generator CPUs. Closed loop runs `spec.users` users; open
loop runs one scheduler user per process, each offering `rate / processes` (see `loadtests.openloop`). The master
may also wait for remote workers (`harness.distributed`); only local processes' CPU is measured. The
locustfile signals the measurement window by appending `window_start` / `window_end` lines to an events file;
`run_load` turns them into the caller's callbacks and samples the generator's CPU time at the same moments. Whatever
happens, including KeyboardInterrupt, every process group it started is terminated (SIGTERM, then SIGKILL) before
it returns or raises.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from hdrh.histogram import HdrHistogram

from servingbench.harness.distributed import DEFAULT_MASTER_PORT, write_shim_locustfile
from servingbench.harness.processes import free_port
from servingbench.loadtests.openloop import GEVENT_BACKEND_ENV_VAR, OPEN_LOOP_GEVENT_BACKEND, OpenLoopCounts
from servingbench.loadtests.recorder import (
    HISTOGRAM_NAMES,
    RESULT_FORMAT,
    RESULT_VERSION,
    SERVER_TIMING_METRICS,
    WorkerCounts,
    decode_histogram,
    encode_histogram,
    new_histogram,
)
from servingbench.loadtests.scenarios import (
    CONFIG_ENV_VAR,
    LOCUSTFILE_PATH,
    LoadSpec,
    LocustRunConfig,
    user_class_name,
)

__all__ = ["LatencyHistograms", "LoadResult", "LoadgenError", "LoadgenTimeout", "WindowCallback", "run_load"]

WindowCallback = Callable[[], None]

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 10
"""Locust --stop-timeout: seconds in-flight requests get to finish once the window closes (whole seconds)."""
FINAL_REPORT_TIMEOUT_S = 10.0
"""Seconds the master waits, after the stop timeout, for each worker's last samples."""
WORKER_CONNECT_TIMEOUT_S = 30
"""Seconds the master waits for its workers to connect (--expect-workers-max-wait)."""
RUN_TIME_MARGIN_S = 5.0
"""Slack on top of window + stop + final report for Locust's own --run-time, a backstop only."""
STARTUP_ALLOWANCE_S = 60.0
"""Slack for process start-up and shutdown in the default deadline."""
WORKER_EXIT_GRACE_S = 5.0
"""Seconds workers get to exit on their own after the master has exited."""
KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when cleaning up."""
POLL_INTERVAL_S = 0.01
"""How often the events file and the processes are polled; bounds how late a window callback runs."""
LATENCY_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
MS_DECIMALS = 3
US_PER_MS = 1000.0


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

    `requests` counts successful plus failed requests that started in the window; `duration_s` is the window length
    in seconds; `rps` = requests / duration_s. `generator_cpu_s` is the CPU time (user + system, seconds) of all
    Locust processes between the window callbacks, `generator_cpu_pct` that as % of the allotted cores' capacity.
    `workers` holds per-process counts (their `requests` add up to `requests`). `open_loop` (open loop only) holds
    what was scheduled, dropped and sent late; `offered_rps` and `achieved_rps` derive from it.
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
) -> LoadResult:
    """Drive `spec` with Locust and return the measured result; Locust's CSV, HTML and logs go to `out_dir`.

    `cpus`: CPU ids every Locust process is pinned to (None: inherit this process's affinity). `workers`: 1 runs a
    single local process; N > 1 runs a master and N workers. `remote_workers` (default 0): workers started elsewhere
    (`servingbench load-worker`) that the master also waits for; with any, the master listens on
    `master_bind`:`master_port` (default 127.0.0.1:5557), serves them a shim locustfile carrying the run's config,
    and `workers` may be 0 (local workers always stay on loopback). `timeout_s`: overall deadline in seconds (default:
    warm-up + duration + stop and shutdown slack). `on_window_start` / `on_window_end` run in the calling thread
    right after the locustfile reports that the measurement window opened / closed (polled every
    `POLL_INTERVAL_S`); `on_window_end` runs only if `on_window_start` did. Raises `LoadgenError` if Locust fails or
    its result is incomplete, `LoadgenTimeout` past the deadline, NotImplementedError for a kind without a user.
    """
    user_class = user_class_name(spec.kind)
    if workers < 0 or remote_workers < 0 or workers + remote_workers < 1:
        raise ValueError(f"need at least one worker, got {workers} local and {remote_workers} remote")
    if master_bind != LOOPBACK and not remote_workers:
        raise ValueError(f"the master binds beyond loopback ({master_bind}) only for remote workers")
    paths = _RunPaths.create(out_dir)
    LocustRunConfig(
        spec=spec,
        result_path=paths.result,
        events_path=paths.events,
        final_report_timeout_s=FINAL_REPORT_TIMEOUT_S,
        processes=workers + remote_workers,
    ).write(paths.config)
    port = master_port if master_port is not None else (DEFAULT_MASTER_PORT if remote_workers else None)
    master = _Master(remote_workers, master_bind, port)
    commands = _commands(spec, user_class, paths, workers, master)
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else _default_timeout_s(spec, workers, master))
    watcher = _Watcher(paths.events, on_window_start, on_window_end)
    with ExitStack() as stack:
        processes: list[subprocess.Popen[bytes]] = []
        stack.callback(_terminate_all, processes)
        for name, command in commands:
            log = stack.enter_context(paths.log(name).open("wb"))
            processes.append(_spawn(command, log=log, cwd=out_dir, env=_child_env(paths.config, spec), cpus=cpus))
        _wait(processes, watcher, deadline)
    return _collect(spec, paths, watcher, cpus, [name for name, _ in commands])


# ---- paths and commands ----


@dataclass(frozen=True)
class _RunPaths:
    out_dir: Path

    @classmethod
    def create(cls, out_dir: Path) -> _RunPaths:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = cls(out_dir.resolve())
        for stale in (paths.result, paths.events):
            stale.unlink(missing_ok=True)
        return paths

    @property
    def config(self) -> Path:
        return self.out_dir / "loadgen_config.json"

    @property
    def result(self) -> Path:
        return self.out_dir / "loadgen_result.json"

    @property
    def events(self) -> Path:
        return self.out_dir / "loadgen_events.jsonl"

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def html(self) -> Path:
        return self.out_dir / "locust.html"

    def log(self, process_name: str) -> Path:
        return self.out_dir / f"{process_name}.log"

    def artifacts(self, process_names: Sequence[str]) -> dict[str, Path]:
        candidates = {
            "locust_html": self.html,
            "locust_csv": Path(f"{self.csv_prefix}_stats.csv"),
            "locust_stats_history_csv": Path(f"{self.csv_prefix}_stats_history.csv"),
            "locust_failures_csv": Path(f"{self.csv_prefix}_failures.csv"),
            "locust_exceptions_csv": Path(f"{self.csv_prefix}_exceptions.csv"),
            "loadgen_result": self.result,
            **{f"{name.replace('-', '_')}_log": self.log(name) for name in process_names},
        }
        return {name: path for name, path in candidates.items() if path.exists()}


@dataclass(frozen=True)
class _Master:
    """Where the master listens (port None: a free loopback port) and how many remote workers it also waits for."""

    remote_workers: int
    bind: str
    port: int | None


def _commands(
    spec: LoadSpec, user_class: str, paths: _RunPaths, workers: int, master: _Master
) -> list[tuple[str, list[str]]]:
    """(process name, argv) for the local process, or the master then its local workers."""
    processes = workers + master.remote_workers
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE_PATH), "--host", spec.base_url]
    common = ["--stop-timeout", str(STOP_TIMEOUT_S), "--loglevel", "INFO"]
    run_time_s = math.ceil(spec.run_time_s + STOP_TIMEOUT_S + FINAL_REPORT_TIMEOUT_S + RUN_TIME_MARGIN_S)
    # Open loop: one scheduler user per process (spec.users is then the in-flight cap, not a user count).
    users = processes if spec.kind == "open" else spec.users
    owner = [
        "--headless",
        "--only-summary",
        *("-u", str(users), "-r", str(users)),
        *("--run-time", f"{run_time_s}s"),
        *("--csv", str(paths.csv_prefix), "--html", str(paths.html)),
    ]
    if workers == 1 and not master.remote_workers:
        return [("locust-local", [*locust, *owner, *common, user_class])]
    port = master.port if master.port is not None else free_port(LOOPBACK)
    # Remote workers download the master's locustfile (-f -): the shim carries the run's config to them.
    master_file = write_shim_locustfile(paths.config, paths.out_dir) if master.remote_workers else LOCUSTFILE_PATH
    master_args = [
        *("-f", str(master_file), "--host", spec.base_url),
        *("--master", "--master-bind-host", master.bind, "--master-bind-port", str(port)),
        *("--expect-workers", str(processes), "--expect-workers-max-wait", str(WORKER_CONNECT_TIMEOUT_S)),
    ]
    worker = ["--worker", "--master-host", LOOPBACK, "--master-port", str(port)]
    return [
        ("locust-master", [*locust[:3], *master_args, *owner, *common, user_class]),
        *((f"locust-worker-{i}", [*locust, *worker, *common, user_class]) for i in range(workers)),
    ]


def _default_timeout_s(spec: LoadSpec, workers: int, master: _Master) -> float:
    connect = WORKER_CONNECT_TIMEOUT_S if workers > 1 or master.remote_workers else 0
    return spec.run_time_s + STOP_TIMEOUT_S + FINAL_REPORT_TIMEOUT_S + connect + STARTUP_ALLOWANCE_S


def _child_env(config_path: Path, spec: LoadSpec) -> dict[str, str]:
    # LOCUST_* variables would silently change the run; the command line is the whole configuration.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    env[CONFIG_ENV_VAR] = str(config_path)
    if spec.kind == "open":  # send on time: microsecond timer waits instead of epoll's milliseconds
        env[GEVENT_BACKEND_ENV_VAR] = OPEN_LOOP_GEVENT_BACKEND
    return env


# ---- process lifecycle ----


def _spawn(
    command: list[str], *, log: IO[bytes], cwd: Path, env: dict[str, str], cpus: Sequence[int] | None
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (so its process group can be killed whole), pinned to `cpus`."""
    pin = None if cpus is None else _affinity_setter(frozenset(cpus))
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,  # keeps Locust from reading a stray locust.conf or pyproject.toml of the caller's directory
        env=env,
        start_new_session=True,
        preexec_fn=pin,
    )


def _affinity_setter(cpus: frozenset[int]) -> Callable[[], None]:
    if not cpus:
        raise ValueError("cpus must not be empty")

    def pin() -> None:  # runs in the child between fork and exec: one syscall, no locks
        os.sched_setaffinity(0, cpus)

    return pin


def _wait(processes: list[subprocess.Popen[bytes]], watcher: _Watcher, deadline: float) -> None:
    """Poll until every process has exited, firing window events on the way; workers get a grace period once the
    master (the first process) is gone."""
    master_gone_at: float | None = None
    while any(p.poll() is None for p in processes):
        watcher.poll(processes)
        now = time.monotonic()
        if now > deadline:
            raise LoadgenTimeout("load generator still running at the deadline")
        if master_gone_at is None and processes[0].poll() is not None:
            master_gone_at = now
        if master_gone_at is not None and now - master_gone_at > WORKER_EXIT_GRACE_S:
            break
        time.sleep(POLL_INTERVAL_S)
    watcher.poll(processes)


def _terminate_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every still-running process group, SIGKILL what is left after `KILL_GRACE_S`, reap all."""
    _signal_groups(processes, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
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


# ---- window events and generator CPU ----


class _Watcher:
    """Follows the events file; on each window event samples the processes' CPU time and runs the callback."""

    def __init__(self, events_path: Path, on_start: WindowCallback | None, on_end: WindowCallback | None) -> None:
        self._path = events_path
        self._offset = 0
        self._callbacks = {"window_start": on_start, "window_end": on_end}
        self.cpu_s: dict[str, float] = {}
        self.monotonic: dict[str, float] = {}

    def poll(self, processes: Sequence[subprocess.Popen[bytes]]) -> None:
        for event in self._new_events():
            if event in self.monotonic or (event == "window_end" and "window_start" not in self.monotonic):
                continue
            self.cpu_s[event] = _cpu_seconds(processes)
            self.monotonic[event] = time.monotonic()
            callback = self._callbacks.get(event)
            if callback is not None:
                callback()

    def _new_events(self) -> list[str]:
        try:
            with self._path.open("rb") as events_file:
                events_file.seek(self._offset)
                chunk = events_file.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete)
        return [str(json.loads(line)["event"]) for line in complete.splitlines() if line.strip()]

    def window_cpu(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) between the two window events."""
        if len(self.monotonic) < 2:
            raise LoadgenError("the load generator never reported both ends of its measurement window")
        cpu = self.cpu_s["window_end"] - self.cpu_s["window_start"]
        return cpu, self.monotonic["window_end"] - self.monotonic["window_start"]


def _cpu_seconds(processes: Sequence[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds of the processes and their descendants (gone processes count 0)."""
    total = 0.0
    for process in processes:
        try:
            root = psutil.Process(process.pid)
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


# ---- result ----


def _collect(
    spec: LoadSpec, paths: _RunPaths, watcher: _Watcher, cpus: Sequence[int] | None, names: Sequence[str]
) -> LoadResult:
    document = _read_result(paths, names)
    cpu_s, wall_s = watcher.window_cpu()
    cores = len(cpus) if cpus is not None else len(os.sched_getaffinity(0))
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
        artifacts=paths.artifacts(names),
        open_loop=_open_loop_counts(document, histograms["send_lag"]) if spec.kind == "open" else None,
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


def _read_result(paths: _RunPaths, names: Sequence[str]) -> dict[str, Any]:
    if not paths.result.exists():
        raise LoadgenError(f"Locust wrote no result file.\n{_log_tails(paths, names)}")
    document: dict[str, Any] = json.loads(paths.result.read_text(encoding="utf-8"))
    if document.get("format") != RESULT_FORMAT or document.get("version") != RESULT_VERSION:
        raise LoadgenError(f"unexpected result format in {paths.result}")
    if not document["complete"]:
        missing = ", ".join(document["missing_workers"]) or "none"
        raise LoadgenError(f"incomplete load result (workers missing: {missing}).\n{_log_tails(paths, names)}")
    return document


def _log_tails(paths: _RunPaths, names: Sequence[str], lines: int = 20) -> str:
    tails = []
    for name in names:
        log = paths.log(name)
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        tails.append(f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(tails)


def _latency_summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    keys = ("min", "mean", *LATENCY_PERCENTILES, "max")
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys, None)
    values_us = {
        "min": histogram.get_min_value(),
        "mean": histogram.get_mean_value(),
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
        summary[f"{metric}_mean"] = None if empty else _us_to_ms(histogram.get_mean_value())
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
