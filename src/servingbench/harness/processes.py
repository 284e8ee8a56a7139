"""Server process lifecycle: start pinned in its own session, wait for readiness, always reap the whole group.

:func:`running_server` is the one way the harness runs a server. The process starts in a new session (so a
Ctrl-C at the terminal reaches the harness, not the server, and the harness decides), pinned to the server
cores before it executes anything, with stdout and stderr in a log file. Readiness is ``GET /healthz`` polled
with a deadline; a process that exits first is a :class:`ServerStartError` carrying the log tail. Leaving the
context, by any path (error, ``KeyboardInterrupt``), stops the process group: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

__all__ = [
    "HEALTH_PATH",
    "LOCALHOST",
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "log_tail",
    "pinned_argv",
    "running_server",
    "stop_process_group",
    "wait_until_ready",
]

LOCALHOST = "127.0.0.1"
HEALTH_PATH = "/healthz"
HEALTH_POLL_INTERVAL_S = 0.05
HEALTH_REQUEST_TIMEOUT_S = 1.0
STOP_GRACE_S = 10.0  # longer than the servers' own graceful timeout (gunicorn: 5 s)
KILL_WAIT_S = 5.0
STOP_POLL_INTERVAL_S = 0.01
LOG_TAIL_LINES = 30
LOG_TAIL_MAX_BYTES = 16_384
HTTP_OK = 200

# Runs in a throwaway interpreter: pin, then exec the real command (same pid), so the server and every process it
# forks inherit the affinity from their first instruction. Avoids preexec_fn, which is unsafe in a threaded parent.
_PIN_AND_EXEC = (
    "import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
    "os.execvpe(sys.argv[2], sys.argv[2:], os.environ)"
)

# A direct opener: a proxy from the environment must never sit between the harness and a loopback server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(Exception):
    """A server did not become ready. ``reason`` is one line; ``log_tail`` the last lines of its log."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


@dataclass
class ServerProcess:
    """A started server: the leader process (its pid is the process group id), its URL and log."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log_path: Path
    cpus: tuple[int, ...] | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """The exit code if the leader has exited, else ``None``."""
        return self.process.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned_argv(argv: Sequence[str], cpus: Sequence[int]) -> list[str]:
    """``argv`` wrapped so that it runs pinned to ``cpus`` (the pid stays the same)."""
    cpu_list = ",".join(str(cpu) for cpu in sorted(cpus))
    return [sys.executable, "-I", "-S", "-c", _PIN_AND_EXEC, cpu_list, *argv]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (at most 16 KiB read), or ``""`` if it cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_MAX_BYTES))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _probe(url: str, timeout_s: float) -> bool:
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            return int(response.status) == HTTP_OK
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


def wait_until_ready(
    url: str,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> float:
    """Poll ``url`` until it answers 200; return the seconds it took.

    Raises :class:`ServerStartError` when ``process`` exits first or ``timeout_s`` passes, with the log tail.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        if process is not None and (code := process.poll()) is not None:
            raise ServerStartError(f"exited with code {code} before it was ready", _tail(log_path))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerStartError(f"not ready at {url} within {timeout_s:g} s", _tail(log_path))
        if _probe(url, min(HEALTH_REQUEST_TIMEOUT_S, remaining)):
            return time.monotonic() - start
        time.sleep(min(HEALTH_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))


def _tail(log_path: Path | None) -> str:
    return log_tail(log_path) if log_path is not None else ""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie has exited; reaping it is its new parent's job, not a reason to wait)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Poll until every process has exited or ``timeout_s`` passes; return those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [process for process in processes if _running(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(STOP_POLL_INTERVAL_S)
        alive = [process for process in alive if _running(process)]
    return alive


def _kill_stragglers(processes: list[psutil.Process], timeout_s: float) -> None:
    """Wait for ``processes`` (SIGTERM already sent) and SIGKILL whatever outlives ``timeout_s``."""
    alive = _wait_gone(processes, timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_gone(alive, KILL_WAIT_S)


def stop_process_group(process: subprocess.Popen[bytes], *, grace_s: float = STOP_GRACE_S) -> int | None:
    """Stop ``process`` (a session leader) and every process it started: SIGTERM, wait ``grace_s``, SIGKILL.

    Also reaps descendants that left the group. Returns the leader's exit code (``None`` if it never exited).
    A second Ctrl-C while waiting skips straight to SIGKILL, then propagates.
    """
    children = _descendants(process.pid)
    try:
        _signal_group(process.pid, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        _kill_stragglers(children, grace_s)
    except KeyboardInterrupt:
        _hard_kill(process, children)
        raise
    _hard_kill(process, children)
    return process.returncode


def _hard_kill(process: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    _signal_group(process.pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_WAIT_S)


def _open_log(log_path: Path) -> IO[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return log_path.open("wb")


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    port: int,
    log_path: Path,
    cpus: Sequence[int] | None = None,
    host: str = LOCALHOST,
    health_path: str = HEALTH_PATH,
    startup_timeout_s: float = 60.0,
) -> Iterator[ServerProcess]:
    """Start ``argv`` (which must listen on ``host:port``) and yield it once ``health_path`` answers 200.

    ``cpus`` pins the server and all its children; stdout and stderr go to ``log_path``. The process group is
    stopped when the context exits, however it exits. Raises :class:`ServerStartError` if it never gets ready.
    """
    command = pinned_argv(argv, cpus) if cpus else list(argv)
    with _open_log(log_path) as log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(process, f"http://{host}:{port}", port, log_path, tuple(cpus) if cpus else None)
    try:
        wait_until_ready(server.base_url + health_path, timeout_s=startup_timeout_s, process=process, log_path=log_path)
        yield server
    finally:
        stop_process_group(process)
