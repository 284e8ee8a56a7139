"""Servers being measured: the one way the harness starts a server config, and the drain check between runs.

:class:`LocalStarter` starts a config from the registry's launch command, pinned to the server cores, and stops its
whole process group on exit; :class:`StartedServer` is what the measure path needs of a server (its URL, its process
for CPU and memory, whether it died). A running server given by URL (``--target``) is a :class:`StartedServer`
without a process. :func:`wait_until_idle` is the drain check run after a run that may have left a backlog: the
server's CPU quiet, no request waiting at its socket (:func:`socket_backlog`), and its probe answered in time.
"""

from __future__ import annotations

import contextlib
import http.client
import time
import urllib.error
import urllib.parse
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
    "Drain",
    "LocalStarter",
    "ServerStarter",
    "StartedServer",
    "TargetStarter",
    "socket_backlog",
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
"""Samples in a row, `IDLE_INTERVAL_S` apart, in which the CPU must be quiet and no request wait at the socket."""
IDLE_TIMEOUT_S = 60.0
IDLE_POLL_S = 0.1
TARGET_READY_TIMEOUT_S = 10.0

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
"""Linux's TCP socket tables (format: the kernel's Documentation/networking/proc_net_tcp.rst)."""
_TCP_LISTEN = "0A"
_TCP_CLOSE_WAIT = "08"  # the client has closed its end; its FIN counts as one byte of rx_queue until it is read
_INODE = 9


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


@dataclass(frozen=True)
class Drain:
    """What the drain check after a run saw. ``idle``: the server was drained within the deadline; ``seconds`` it
    took; ``backlog``: the most requests seen waiting at the server's socket meanwhile (connections in its accept
    queue plus accepted ones whose request it had not read; None where the socket table was not readable, e.g. a
    server in another network namespace); ``waiting_for``: what was still not quiet when the deadline passed."""

    idle: bool
    seconds: float
    backlog: int | None = None
    waiting_for: str | None = None


def socket_backlog(port: int, tables: Sequence[Path] = PROC_NET_TCP) -> int | None:
    """Requests waiting at the local server listening on ``port``: connections in its accept queue (a listening
    socket's receive queue counts them) plus accepted connections with request bytes it has not read. None when no
    socket table is readable or nothing listens on ``port`` in this network namespace."""
    listening = False
    waiting = 0
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 5:
                continue
            address, _, local_port = fields[1].rpartition(":")
            if int(local_port, 16) != port or not _loopback_or_any(address):
                continue
            rx_queue = int(fields[4].split(":", 1)[1], 16)
            if fields[3] == _TCP_LISTEN:
                listening = True
                waiting += rx_queue  # a listening socket's rx_queue is its accept queue's length
                continue
            if fields[3] == _TCP_CLOSE_WAIT and rx_queue:
                rx_queue -= 1  # a closed client's FIN is no request (a request it sent before closing still is)
            if rx_queue and len(fields) > _INODE and fields[_INODE] != "0":
                # an accepted connection whose request the server has not read yet (one not accepted has no inode
                # yet: it is already counted in the accept queue)
                waiting += 1
    return waiting if listening else None


_ANY_V4, _ANY_V6 = "0" * 8, "0" * 32
_LOOPBACK_V6 = "0" * 24 + "01000000"  # ::1 as the kernel prints it (four host-order 32-bit words)
_MAPPED_V4_PREFIX = "0" * 16 + "FFFF0000"  # ::ffff:a.b.c.d


def _loopback_or_any(address: str) -> bool:
    """A local address (the kernel's hex form) a loopback server listens or is reached on: 127.0.0.0/8 (also as
    an IPv4-mapped IPv6 address), ::1, or the wildcard; not another interface's address."""
    if len(address) == len(_ANY_V4):
        return address == _ANY_V4 or address[-2:] == "7F"  # little-endian: the first octet prints last
    if address.upper().startswith(_MAPPED_V4_PREFIX):
        return address[-2:].upper() == "7F"
    return address in (_ANY_V6, _LOOPBACK_V6)


def _local_port(base_url: str) -> int | None:
    """The port of a server on this machine's loopback (whose sockets this machine's tables show), else None."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname or ""
    return port if host == "localhost" or host == "::1" or host.startswith("127.") else None


def wait_until_idle(
    base_url: str,
    *,
    pid: int | None = None,
    threshold_ms: float = IDLE_LATENCY_MS,
    timeout_s: float = IDLE_TIMEOUT_S,
) -> Drain:
    """Wait until a run's backlog is gone: for `IDLE_SAMPLES` samples in a row the server tree rooted at ``pid``
    (when given) uses under `IDLE_CPU_SHARE` of a core and no request waits at its socket (:func:`socket_backlog`,
    where readable), and then GET /healthz answers within ``threshold_ms``. Each is needed: an async server's backlog
    shows in its CPU (it answers the probe between queued requests), a sync worker's in its accept queue and in the
    probe (a sleeping model's queue burns little CPU), a request still being read in the socket."""
    started = time.monotonic()
    deadline = started + timeout_s
    port = _local_port(base_url)
    quiet = _Quiet(pid, port)
    if not quiet.wait(deadline):
        return Drain(False, time.monotonic() - started, quiet.backlog_max, quiet.busy)
    if not _wait_until_answering(base_url, threshold_ms, deadline):
        slow = f"GET {HEALTH_PATH} to answer within {threshold_ms:g} ms"
        return Drain(False, time.monotonic() - started, quiet.backlog_max, slow)
    return Drain(True, time.monotonic() - started, quiet.backlog_max)


class _Quiet:
    """The CPU and socket half of the drain check; remembers the largest backlog it saw and what kept it busy."""

    def __init__(self, pid: int | None, port: int | None) -> None:
        self.pid, self.port = pid, port
        self.backlog_max: int | None = None
        self.busy: str | None = None

    def _backlog(self) -> int | None:
        waiting = socket_backlog(self.port) if self.port is not None else None
        if waiting is not None:
            self.backlog_max = max(waiting, self.backlog_max or 0)
        return waiting

    @staticmethod
    def _reason(waiting: int | None, *, cpu_busy: bool) -> str | None:
        if waiting:
            return f"{waiting} request(s) waiting at its socket"
        return "its CPU" if cpu_busy else None

    def wait(self, deadline: float) -> bool:
        quiet = 0
        try:
            used = tree_cpu_seconds(self.pid) if self.pid is not None else 0.0
            waiting = self._backlog()
            if waiting is None and self.pid is None:
                return True  # nothing to watch here (a target on another host): the probe alone decides
            self.busy = self._reason(waiting, cpu_busy=False) or f"{IDLE_SAMPLES} quiet samples in a row"
            while time.monotonic() < deadline:
                time.sleep(IDLE_INTERVAL_S)
                now = tree_cpu_seconds(self.pid) if self.pid is not None else 0.0
                waiting = self._backlog()
                busy = self._reason(waiting, cpu_busy=now - used >= IDLE_CPU_SHARE * IDLE_INTERVAL_S)
                quiet = 0 if busy else quiet + 1
                if quiet >= IDLE_SAMPLES:
                    return True
                # what a timeout reports: the last thing that was busy (or that the quiet samples were too few)
                self.busy = busy or self.busy
                used = now
        except psutil.Error:
            self.busy = "the server process is gone"
            return False  # the caller finds out whether it died
        return False


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
