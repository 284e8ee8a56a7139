"""Servers being measured: the one way the harness starts a server config, and the drain check between runs.

:class:`LocalStarter` starts a config from the registry's launch command, pinned to the server cores, and stops its
whole process group on exit; :class:`StartedServer` is what the measure path needs of a server (its URL, its process
for CPU and memory, whether it died). A running server given by URL (``--target``) is a :class:`StartedServer`
without a process. :func:`wait_until_idle` is the drain check run after a run that may have left a backlog.
"""

from __future__ import annotations

import contextlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from servingbench.harness.processes import (
    HEALTH_PATH,
    LOCALHOST,
    ServerProcess,
    free_port,
    running_server,
    wait_until_ready,
)
from servingbench.harness.resources import ServerMonitor, tree_cpu_seconds
from servingbench.servers.launch import ServerConfig, launch_command
from servingbench.units import MS_PER_S

__all__ = [
    "IDLE_TIMEOUT_S",
    "LocalStarter",
    "ServerStarter",
    "StartedServer",
    "TargetStarter",
    "wait_until_idle",
]

IDLE_LATENCY_MS = 50.0
"""A server counts as idle again once GET /healthz answers within this many milliseconds (after its CPU is quiet)."""
IDLE_CPU_SHARE = 0.1
"""A server the harness started counts as drained once its process tree uses less than this share of one core over
`IDLE_SAMPLES` intervals of `IDLE_INTERVAL_S` in a row: a server still working off a backlog burns CPU, and a run
started on it would measure the backlog."""
IDLE_INTERVAL_S = 0.1
IDLE_SAMPLES = 2
IDLE_TIMEOUT_S = 60.0
IDLE_POLL_S = 0.1
TARGET_READY_TIMEOUT_S = 10.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class StartedServer:
    """A server being measured: started by the harness (``process``) or already running (target mode)."""

    base_url: str
    session_id: str
    process: ServerProcess | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id when the harness started it (None in target mode)."""
        return self.process.pid if self.process else None

    def monitor(self) -> ServerMonitor | None:
        """A CPU and memory monitor over the server's process tree (None in target mode)."""
        return ServerMonitor(self.process.pid) if self.process else None

    def died(self) -> bool:
        return self.process is not None and self.process.exit_code() is not None

    def exit_code(self) -> int | None:
        return self.process.exit_code() if self.process else None

    def tail(self) -> str:
        return self.process.log_tail() if self.process else ""


class ServerStarter(Protocol):
    """Starts one server config serving one model; the context stops it, however it exits."""

    def start(
        self, config: ServerConfig | None, *, model_spec: str, session_id: str, log_path: Path
    ) -> contextlib.AbstractContextManager[StartedServer]: ...


@dataclass(frozen=True)
class LocalStarter:
    """Starts servers as local processes pinned to ``cpus``, with ``blas_threads`` BLAS/OpenMP threads each; a server
    not answering /healthz within ``startup_timeout_s`` is a ``ServerStartError`` with its log tail.

    ``python``: the interpreter that runs the server (default: this one), e.g. another virtual environment holding
    another version of the code; ``model_spec``: maps the plan's model spec to the one this starter serves (e.g. the
    same file in another checkout)."""

    cpus: Sequence[int]
    blas_threads: int = 1
    startup_timeout_s: float = 60.0
    python: str | None = None
    model_spec: Callable[[str], str] | None = None

    @contextlib.contextmanager
    def start(
        self, config: ServerConfig | None, *, model_spec: str, session_id: str, log_path: Path
    ) -> Iterator[StartedServer]:
        if config is None:
            raise ValueError("a local server needs a server config")
        port = free_port()
        model = self.model_spec(model_spec) if self.model_spec else model_spec
        command = launch_command(
            config, host=LOCALHOST, port=port, model=model, blas_threads=self.blas_threads, python=self.python
        )
        with running_server(
            command.argv,
            command.env,
            port=port,
            log_path=log_path,
            cpus=self.cpus,
            startup_timeout_s=self.startup_timeout_s,
        ) as process:
            yield StartedServer(process.base_url, session_id, process, log_path)


@dataclass(frozen=True)
class TargetStarter:
    """Target mode: the "server" is a running one at ``url``; starting it only checks that it answers /healthz."""

    url: str

    @contextlib.contextmanager
    def start(
        self, config: ServerConfig | None, *, model_spec: str, session_id: str, log_path: Path
    ) -> Iterator[StartedServer]:
        wait_until_ready(self.url + HEALTH_PATH, timeout_s=TARGET_READY_TIMEOUT_S)
        yield StartedServer(self.url, session_id)


def wait_until_idle(
    base_url: str,
    *,
    pid: int | None = None,
    threshold_ms: float = IDLE_LATENCY_MS,
    timeout_s: float = IDLE_TIMEOUT_S,
) -> bool:
    """Wait until a run's backlog is gone: the server tree rooted at ``pid`` (when given) uses under
    `IDLE_CPU_SHARE` of a core for `IDLE_SAMPLES` intervals in a row, and then GET /healthz answers within
    ``threshold_ms``. Both are needed: an async server's backlog shows in its CPU (it answers the probe between queued
    requests), a sync worker's or a sleeping model's in the probe (working off its queue burns little CPU). False if
    that did not happen within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    if pid is not None and not _wait_until_cpu_idle(pid, deadline):
        return False
    return _wait_until_answering(base_url, threshold_ms, deadline)


def _wait_until_answering(base_url: str, threshold_ms: float, deadline: float) -> bool:
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            with _OPENER.open(base_url + HEALTH_PATH, timeout=max(0.1, deadline - time.monotonic())) as response:
                response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            time.sleep(IDLE_POLL_S)
            continue
        if (time.perf_counter() - start) * MS_PER_S <= threshold_ms:
            return True
        time.sleep(IDLE_POLL_S)
    return False


def _wait_until_cpu_idle(pid: int, deadline: float) -> bool:
    quiet = 0
    try:
        used = tree_cpu_seconds(pid)
        while time.monotonic() < deadline:
            time.sleep(IDLE_INTERVAL_S)
            now = tree_cpu_seconds(pid)
            quiet = quiet + 1 if now - used < IDLE_CPU_SHARE * IDLE_INTERVAL_S else 0
            if quiet >= IDLE_SAMPLES:
                return True
            used = now
    except psutil.Error:
        return False  # the server is gone: the caller finds out whether it died
    return False
