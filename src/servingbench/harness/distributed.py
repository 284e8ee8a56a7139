"""Distributed load: Locust workers that join a servingbench load session from another machine or container.

A remote worker needs nothing but the installed package and the master's address: it runs the same load process
as the harness's own workers (`loadtests.locust_process`, role ``worker``), and every run's scenario (the
``LoadSpec``, bodies included) comes from the master with the run. A worker of another servingbench version
refuses the runs (the protocol names differ), so the session fails with one line instead of measuring something else.

A load session has one master for all its runs, which tells its workers to quit when the session ends;
``servingbench load-worker`` therefore starts fresh workers for the next session, and the next, until it is stopped
(or after one session with ``--once``). Nothing here imports Locust or gevent: the workers are child processes,
each in its own session, and every one is stopped (process group: SIGTERM, then SIGKILL) however ``load-worker``
exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from servingbench.harness.processes import stop_process_group
from servingbench.loadtests.openloop import GEVENT_BACKEND_ENV_VAR, OPEN_LOOP_GEVENT_BACKEND
from servingbench.loadtests.protocol import DEFAULT_MASTER_PORT, process_argv

__all__ = [
    "DEFAULT_MASTER_PORT",
    "HELP",
    "WorkerOptions",
    "add_arguments",
    "main",
    "run_from_args",
    "run_load_worker",
    "worker_argv",
]

HELP = "run Locust worker processes that join a servingbench load session's master, session after session"
REJOIN_DELAY_S = 2.0
"""Seconds between the workers' exit and the next ones' start. The finished session's master keeps answering for
0.5 s after its quit message; a worker started sooner could join it instead of the next session's master."""
POLL_INTERVAL_S = 0.1
"""How often load-worker checks its workers and the stop signals."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_PORT = 65_535
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class WorkerOptions:
    """Where the master is and how to join it. ``processes``: worker processes per session (each one counts as
    a worker for the master). ``once``: stop after the first session instead of rejoining."""

    master_host: str
    master_port: int = DEFAULT_MASTER_PORT
    processes: int = 1
    once: bool = False

    def __post_init__(self) -> None:
        if not self.master_host.strip():
            raise ValueError("--master must name the Locust master's host")
        if not 1 <= self.master_port <= MAX_PORT:
            raise ValueError(f"--master-port must be 1..{MAX_PORT}, got {self.master_port}")
        if self.processes < 1:
            raise ValueError(f"--processes must be at least 1, got {self.processes}")


def worker_argv(options: WorkerOptions) -> list[str]:
    """The command line of one worker process (``processes`` of them are started per session)."""
    return process_argv("worker", master_host=options.master_host, master_port=options.master_port)


def _worker_env() -> dict[str, str]:
    # LOCUST_* variables would silently change the worker; the master's run messages are the whole configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env[GEVENT_BACKEND_ENV_VAR] = OPEN_LOOP_GEVENT_BACKEND  # as the harness's own workers: send on time
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _StopSignal:
    """Notes SIGINT / SIGTERM instead of raising: the loop polls it, so a signal that lands while a worker is being
    started (inside ``Popen``) cannot orphan that worker, as an exception raised there would."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a signal arrives."""
        deadline = time.monotonic() + seconds
        while self.received is None and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_INTERVAL_S, remaining))


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopSignal]:
    stop = _StopSignal()
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_one(options: WorkerOptions, stop: _StopSignal) -> int | None:
    """Run one session's workers (each in its own session) until all have exited (the highest exit code) or a stop
    signal (``None``). Their process groups are stopped either way."""
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="servingbench-worker-") as tmp:
        try:
            for _ in range(options.processes):
                processes.append(
                    subprocess.Popen(
                        worker_argv(options),
                        stdin=subprocess.DEVNULL,
                        cwd=tmp,  # keeps Locust from reading a stray locust.conf of the caller's directory
                        env=_worker_env(),
                        start_new_session=True,
                    )
                )
            while any(process.poll() is None for process in processes) and stop.received is None:
                stop.sleep(POLL_INTERVAL_S)
        finally:
            for process in processes:
                stop_process_group(process)
    if stop.received is not None:
        return None
    return max(process.returncode or 0 for process in processes)


def _say(message: str) -> None:
    print(f"servingbench: {message}", file=sys.stderr, flush=True)


def run_load_worker(options: WorkerOptions) -> int:
    """Join the master at ``options.master_host:master_port`` session after session, until SIGINT or SIGTERM (then
    130), or after one session with ``once`` (then the workers' exit code). Their log goes to this process's stderr."""
    with _stop_signals() as stop:
        while stop.received is None:
            _say(f"load-worker joining the Locust master at {options.master_host}:{options.master_port}")
            code = _run_one(options, stop)
            if code is not None and options.once:
                return code
            if code is not None:
                _say(f"Locust workers exited ({code}); rejoining")
                stop.sleep(REJOIN_DELAY_S)
    _say("load-worker stopped")
    return EXIT_INTERRUPTED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``load-worker`` options, shared by ``servingbench load-worker`` and ``python -m`` of this module."""
    parser.add_argument("--master", required=True, help="host name or address of the run's Locust master")
    parser.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT, help=f"default {DEFAULT_MASTER_PORT}")
    parser.add_argument(
        "--processes", type=int, default=1, help="Locust worker processes per session, e.g. one per core (default 1)"
    )
    parser.add_argument("--once", action="store_true", help="exit after one session instead of joining the next")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``load-worker`` with parsed :func:`add_arguments` options; a bad option is exit status 2."""
    try:
        options = WorkerOptions(args.master, args.master_port, args.processes, args.once)
    except ValueError as err:
        print(f"servingbench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return run_load_worker(options)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m servingbench.harness.distributed``: the same as ``servingbench load-worker``."""
    parser = argparse.ArgumentParser(prog="servingbench load-worker", description=HELP)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
