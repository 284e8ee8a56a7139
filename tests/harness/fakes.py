"""The runner's seam in tests: real stand-in servers (``tiny_server.py``) and a scripted load generator.

:class:`TinyStarter` starts ``tiny_server.py`` as a real process for every config (some can be told to fail to
start); :class:`ScriptedLoad` plays the load generator: it answers every run with a made-up result, and can be told
to fail, interrupt, kill the server mid-run, or behave like a server with a known open-loop capacity.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from servingbench.harness.loadgen import LatencyHistograms, LoadResult
from servingbench.harness.processes import free_port, running_server
from servingbench.harness.servers import StartedServer
from servingbench.loadtests.openloop import OpenLoopCounts
from servingbench.loadtests.recorder import new_histogram
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.servers.launch import ServerConfig

TINY_SERVER = Path(__file__).with_name("tiny_server.py")
KILL_DEADLINE_S = 10.0
FAKE_REQUESTS = 200
FAKE_LATENCY_US = (700, 800, 900, 2500)
PASS_P99_US = 8_000
FAIL_P99_US = 400_000


def tiny_server_pids() -> list[int]:
    """The stand-in servers this test process started that are still around."""
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if str(TINY_SERVER) in child.cmdline():
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def wait_dead(pids: list[int]) -> None:
    """Wait until the killed servers are zombies, without reaping them (the harness's Popen must see the code)."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while time.monotonic() < deadline:
        if all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids):
            return
        time.sleep(0.01)
    pytest.fail(f"killed servers {pids} did not die")


@dataclass
class TinyStarter:
    """Starts ``tiny_server.py`` for any config; configs whose server kind is in ``failing`` exit before ready."""

    failing: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def start(
        self, config: ServerConfig | None, *, model_spec: str, session_id: str, log_path: Path
    ) -> Iterator[StartedServer]:
        port = free_port()
        flags = ["--exit-before-ready", "3"] if config is not None and config.server in self.failing else []
        self.started.append(session_id)
        argv = [sys.executable, str(TINY_SERVER), str(port), *flags]
        with running_server(argv, dict(os.environ), port=port, log_path=log_path, startup_timeout_s=30.0) as process:
            yield StartedServer(process.base_url, session_id, process, log_path)


def fake_result(spec: LoadSpec, out_dir: Path, *, requests: int = FAKE_REQUESTS, **changes: object) -> LoadResult:
    """A clean run of ``spec``: ``requests`` answers at 0.7 to 2.5 ms; ``changes`` override fields."""
    total = new_histogram()
    for index in range(requests):
        total.record_value(FAKE_LATENCY_US[index % len(FAKE_LATENCY_US)])
    (out_dir / "locust_stats.csv").write_text("Type,Name\n")
    values: dict[str, object] = {
        "requests": requests,
        "errors": 0,
        "errors_by_kind": {},
        "warmup_s": spec.warmup_s,
        "duration_s": spec.duration_s,
        "rps": requests / spec.duration_s,
        "histograms": LatencyHistograms(total=total, validate=new_histogram(), predict=new_histogram()),
        "generator_cpu_s": 0.1,
        "generator_cpu_pct": 40.0,
        "workers": {},
        "artifacts": {"locust_stats": out_dir / "locust_stats.csv"},
    }
    values.update(changes)
    return LoadResult(**values)  # type: ignore[arg-type]


def open_result(spec: LoadSpec, out_dir: Path, *, p99_us: int, lag_ms: float = 0.5, dropped: int = 0) -> LoadResult:
    """An open-loop run at ``spec.rate`` whose latencies sit at ``p99_us`` (corrected and from the actual send)."""
    requests = max(1, round((spec.rate or 1.0) * spec.duration_s))
    total, uncorrected = new_histogram(), new_histogram()
    for _ in range(requests):
        total.record_value(p99_us)
        uncorrected.record_value(p99_us)
    counts = OpenLoopCounts(
        scheduled=requests + dropped, dropped=dropped, late=0, sent_in_window=requests, send_lag_p99_ms=lag_ms
    )
    histograms = LatencyHistograms(
        total=total, validate=new_histogram(), predict=new_histogram(), total_uncorrected=uncorrected
    )
    return fake_result(spec, out_dir, requests=requests, histograms=histograms, open_loop=counts)


Behaviour = Callable[[LoadSpec, Path], LoadResult]


@dataclass
class ScriptedLoad:
    """The load generator of the tests. Call ``n`` (1-based) does ``actions[n]``: ``interrupt`` (Ctrl-C), ``fail``
    (the generator crashes), ``kill-server`` (the server dies mid-window), ``saturate``, ``errors``, ``few``; else
    a clean closed-loop result at ``closed_rps`` and, for open loop, a server meeting the SLO up to ``capacity``
    req/s (p99 8 ms) and far over it above (p99 400 ms, with drops), or what ``open_loop`` says."""

    actions: dict[int, str] = field(default_factory=dict)
    calls: list[LoadSpec] = field(default_factory=list)
    server_pids: list[list[int]] = field(default_factory=list)
    closed_rps: float = 1000.0
    capacity: float = 600.0
    open_loop: Behaviour | None = None
    late_above: float | None = None
    window_s: float = 0.0  # how long the measured window stays open (the speed probe samples only inside it)

    def run(
        self,
        spec: LoadSpec,
        *,
        out_dir: Path,
        on_window_start: Callable[[], None] | None,
        on_window_end: Callable[[], None] | None,
        timeout_s: float | None,
    ) -> LoadResult:
        self.calls.append(spec)
        pids = tiny_server_pids()
        self.server_pids.append(pids)
        action = self.actions.get(len(self.calls), "ok")
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "fail":
            raise RuntimeError("Locust wrote no result file.\n--- log ---")
        if on_window_start:
            on_window_start()
        if action == "kill-server":
            port = spec.base_url.rsplit(":", 1)[1]
            victims = [pid for pid in pids if port in " ".join(psutil.Process(pid).cmdline())]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            wait_dead(victims)
        time.sleep(self.window_s)
        if on_window_end:
            on_window_end()
        return self._result(spec, out_dir, action)

    def _result(self, spec: LoadSpec, out_dir: Path, action: str) -> LoadResult:
        if spec.kind == "open":
            if self.open_loop is not None:
                return self.open_loop(spec, out_dir)
            rate = spec.rate or 0.0
            lag = 12.0 if self.late_above is not None and rate > self.late_above else 0.5
            if rate > self.capacity:
                return open_result(spec, out_dir, p99_us=FAIL_P99_US, lag_ms=lag, dropped=3)
            return open_result(spec, out_dir, p99_us=PASS_P99_US, lag_ms=lag)
        requests = round(self.closed_rps * spec.duration_s)
        changes: dict[str, object] = {}
        if action == "saturate":
            changes = {"generator_cpu_pct": 97.0}
        elif action == "errors":
            changes = {"errors": requests // 4, "errors_by_kind": {"HTTP 503": requests // 4}}
        if action == "few":
            requests = 5
        return fake_result(spec, out_dir, requests=requests, **changes)
