"""One long-lived Locust process of a load session: ``python -m servingbench.loadtests.locust_process ROLE``.

Locust is used as a library (``locust.env.Environment`` with a local, master or worker runner, its events, its
custom messages); the process serves one run after another until told to quit, so neither Locust's import nor a
process start is paid per run.

- ``local`` runs the users itself. ``master`` runs none: it waits for ``--expect-workers`` workers, hands each run
  to all of them and merges what they send back. Both *own* runs: they read commands on stdin and write events on
  stdout (`loadtests.protocol`); their log goes to stderr.
- ``worker`` joins the master at ``--master-host``:``--master-port`` (a local child of the harness, or
  ``servingbench load-worker`` on another machine) and serves every run of that session; it exits when the master
  quits.

A run, as the owner drives it: it clears Locust's statistics, fixes the window plan (`loadtests.window`) from the
moment it starts the users, and starts them (its own, or by a `MSG_RUN` to each worker with its share: users,
arrival stream, the plan). It reports `window_start` when the warm-up is over; then waits for the end (fixed, or,
for a closed loop sized by request count, decided from the requests counted in the window: its own, or the
`MSG_PROGRESS` counts the workers send every `END_POLL_S`; the end goes out to the workers as `MSG_END`), reports
`window_end`, stops the users (`MSG_STOP`: each worker drains, then sends its samples and Locust's statistics in one
`MSG_FINAL`), writes the per-run files (Locust's request and failure CSVs, its HTML report when asked) and answers
with the merged result. Users are spawned with ``Runner.spawn_users`` and leave on their own at the end of a run
rather than through ``Runner.start``/``stop``: Locust's distributed stop makes each worker sleep its stop timeout
and the master poll once a second, which would cost about a second per run.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, cast

import gevent
import locust
from gevent.fileobject import FileObjectPosix
from locust.env import Environment
from locust.html import get_html_report
from locust.log import setup_logging
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from servingbench.loadtests import users
from servingbench.loadtests.protocol import (
    EVENT_ERROR,
    EVENT_READY,
    EVENT_RESULT,
    EVENT_WINDOW_END,
    EVENT_WINDOW_START,
    LOCUST_FAILURES_CSV,
    LOCUST_HTML,
    LOCUST_STATS_CSV,
    OP_QUIT,
    OP_RUN,
    PLUGINS_ENV_VAR,
    PROTOCOL,
    RUN_DRAIN_S,
    WORKER_WAIT_S,
    decode_line,
    encode_line,
)
from servingbench.loadtests.recorder import ResultAggregator, SampleDelta, Window
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.loadtests.window import END_POLL_S, EndReason, WindowPlan

__all__ = ["main"]

logger = logging.getLogger("servingbench.load")

MSG_LISTENING = "servingbench_listening"
"""Worker -> master, once its handlers are registered: `{}`. Locust acknowledges a worker before the worker can
register its own message handlers, and a message arriving in between is dropped; so the master hands a run only to
workers that said they listen."""
MSG_RUN = "servingbench_run"
"""Master -> worker: `{"protocol", "setup": RunSetup.to_json()}`."""
MSG_PROGRESS = "servingbench_progress"
"""Worker -> master: `{"run", "started"}`, requests started in the window so far (dynamic windows only)."""
MSG_END = "servingbench_end"
"""Master -> worker: `{"run", "end"}`, the decided end of a dynamic window (epoch seconds)."""
MSG_STOP = "servingbench_stop"
"""Master -> worker: `{"run"}`, the window is over: stop the users and send the samples."""
MSG_FINAL = "servingbench_final"
"""Worker -> master: `{"run", "report"}` (a Locust stats report plus the last `SampleDelta`) or `{"run", "error"}`."""
REPORT_KEY = "servingbench_samples"
"""Key of `{"run", "delta"}` in every stats report a worker sends (periodic or final)."""
LOCAL_WORKER_ID = "local"
LOG_LEVEL = "INFO"
COLLECT_POLL_S = 0.01
"""How often the master checks for workers and final reports."""
EXIT_FAILED = 1
EXIT_TERMINATED = 143
MASTER_QUIT_S = 0.5
"""Locust's master sleeps this long in ``quit`` while its workers take the quit message."""


class RunFailedError(Exception):
    """A run could not be carried out (its result is marked incomplete with this reason)."""


def main(argv: list[str] | None = None) -> int:
    """Run one load process (see the module docstring); its exit status."""
    args = _parser().parse_args(argv)
    events_out = _claim_stdout() if args.role != "worker" else None
    cast(Any, setup_logging)(LOG_LEVEL, None)  # through Any: unannotated in Locust
    _load_plugins()
    environment = Environment(user_classes=[users.ClosedLoopUser, users.OpenLoopUser], events=locust.events)
    # Locust's import-time objects never die: keep them out of every later collection, whose pauses would otherwise
    # delay the open-loop scheduler by a few ms (measured: most late sends in a 2 s window fell at its start).
    gc.collect()
    gc.freeze()
    logger.info("servingbench %s load process, gevent loop backend: %s", args.role, gevent.get_hub().loop.backend)
    if args.role == "worker":
        return _serve_as_worker(environment, args.master_host, args.master_port)
    assert events_out is not None
    return _serve_as_owner(environment, args, _Events(events_out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m servingbench.loadtests.locust_process")
    parser.add_argument("role", choices=("local", "master", "worker"))
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=5557)
    parser.add_argument("--expect-workers", type=int, default=0)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    return parser


def _claim_stdout() -> IO[bytes]:
    """The event channel: the original stdout. File descriptor 1 then points at stderr, so nothing printed by a
    library can ever be mistaken for an event."""
    events_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(events_fd, "wb", buffering=0)


def _load_plugins() -> None:
    for index, path in enumerate(filter(None, os.environ.get(PLUGINS_ENV_VAR, "").split(os.pathsep))):
        spec = importlib.util.spec_from_file_location(f"servingbench_load_plugin_{index}", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"{PLUGINS_ENV_VAR}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        logger.info("servingbench load plugin %s", path)


class _Events:
    """Writes owner -> harness events, one JSON line each."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def send(self, event: str, **fields: Any) -> None:
        self._out.write(encode_line({"event": event, **fields}))


# ---- the owner: local or master ----


@dataclass
class _Collect:
    """What the owner gathers during one run."""

    run: int
    participants: tuple[str, ...]
    aggregator: ResultAggregator = field(default_factory=ResultAggregator)
    progress: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _serve_as_owner(environment: Environment, args: argparse.Namespace, events: _Events) -> int:
    if args.role == "master":
        runner: Runner = environment.create_master_runner(args.master_host, args.master_port)
    else:
        runner = environment.create_local_runner()
        users.install_recording(environment)
    owner = _Owner(environment, runner, events, expect_workers=args.expect_workers)
    _fire(environment.events.init, environment=environment, runner=runner, web_ui=None)
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(_quit, environment, EXIT_TERMINATED))
    try:
        workers = owner.wait_for_workers(args.connect_timeout)
        events.send(EVENT_READY, workers=list(workers))
        owner.serve(_commands())
    except Exception as exc:
        logger.exception("load process failed")
        events.send(EVENT_ERROR, message=f"{type(exc).__name__}: {exc}")
        _quit(environment, EXIT_FAILED)
    _quit(environment, 0)


def _commands() -> Iterator[dict[str, Any]]:
    """Commands from stdin, read without blocking the other greenlets; ends at EOF or "quit"."""
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    for line in stdin:
        if not line.strip():
            continue
        command = decode_line(line)
        if command.get("op") == OP_QUIT:
            return
        yield command


def _quit(environment: Environment, code: int) -> NoReturn:
    """Stop every user, tell the workers (a master) or the master (a worker) that this process goes, and exit."""
    try:
        # Locust's own listeners: a master sends its workers "quit" (and quits), a worker tells its master.
        _fire(environment.events.quitting, environment=environment, reverse=True)
        if environment.runner is not None and not isinstance(environment.runner, MasterRunner):
            environment.runner.quit()
    finally:
        logging.shutdown()
        os._exit(code)  # gevent's hub and Locust's greenlets need no orderly teardown


class _Owner:
    """Serves runs one at a time: `run` turns a "run" command into the "result" event's fields."""

    def __init__(self, environment: Environment, runner: Runner, events: _Events, *, expect_workers: int) -> None:
        self.environment = environment
        self.runner = runner
        self.events = events
        self.expect_workers = expect_workers
        self.current: _Collect | None = None
        self.listening: set[str] = set()
        if isinstance(runner, MasterRunner):
            runner.register_message(MSG_LISTENING, self._on_listening)
            runner.register_message(MSG_PROGRESS, self._on_progress)
            runner.register_message(MSG_FINAL, self._on_final)
            _listen(environment.events.worker_report, self._on_worker_report)

    @property
    def distributed(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    def wait_for_workers(self, timeout_s: float) -> tuple[str, ...]:
        """The workers' ids once all are connected (none for a local process); RunFailedError after `timeout_s`."""
        if not self.distributed:
            return ()
        return self._connected(timeout_s)

    def _connected(self, timeout_s: float) -> tuple[str, ...]:
        assert isinstance(self.runner, MasterRunner)
        deadline = time.monotonic() + timeout_s
        while True:
            clients = self.runner.clients
            joined = clients.ready + clients.spawning + clients.running
            ids = tuple(sorted(node.id for node in joined if node.id in self.listening))
            if len(ids) == self.expect_workers:
                return ids
            if time.monotonic() > deadline:
                raise RunFailedError(f"{len(ids)} of {self.expect_workers} load workers connected")
            gevent.sleep(COLLECT_POLL_S)

    def _on_listening(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.listening.add(str(msg.node_id))

    def serve(self, commands: Iterator[dict[str, Any]]) -> None:
        for command in commands:
            if command.get("op") != OP_RUN:
                raise ValueError(f"unknown command {command.get('op')!r}")
            self.events.send(EVENT_RESULT, **self.run(command))

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        """Carry out one run; the result event's fields. A run that cannot be carried out comes back incomplete."""
        run_id, spec = int(command["run"]), LoadSpec.from_json(command["spec"])
        self.environment.stats.clear_all()
        self.runner.exceptions = {}
        try:
            participants = (LOCAL_WORKER_ID,) if not self.distributed else self._connected(WORKER_WAIT_S)
        except RunFailedError as exc:
            return _failed(run_id, str(exc))
        collect = self.current = _Collect(run_id, participants)
        try:
            plan = WindowPlan.for_spec(spec, opened_at=time.time())
            self._start(spec, plan, collect)
            _sleep_until(plan.start)
            self.events.send(EVENT_WINDOW_START, run=run_id)
            end, reason = self._await_end(plan, collect)
            _sleep_until(end)
            self.events.send(EVENT_WINDOW_END, run=run_id)
            self._stop(collect)
        finally:
            self.current = None
            users.end_run()
        files = _write_files(self.environment, Path(command["out_dir"]), html=bool(command.get("locust_html")))
        return {"run": run_id, "result": _document(collect, Window(plan.start, end), reason), "files": files}

    def _start(self, spec: LoadSpec, plan: WindowPlan, collect: _Collect) -> None:
        shares = _user_shares(spec, len(collect.participants))
        setups = [
            users.RunSetup(collect.run, spec, plan, stream=i, streams=len(shares), users=share)
            for i, share in enumerate(shares)
        ]
        if not self.distributed:
            users.begin_run(setups[0])
            users.spawn_users(self.runner)
            return
        for worker, setup in zip(collect.participants, setups, strict=True):
            self.runner.send_message(MSG_RUN, {"protocol": PROTOCOL, "setup": setup.to_json()}, client_id=worker)

    def _await_end(self, plan: WindowPlan, collect: _Collect) -> tuple[float, EndReason]:
        """The window's end and why: fixed, or decided from the requests counted so far (then sent to workers)."""
        while (decision := plan.decide(now=time.time(), started=self._started(collect))) is None:
            gevent.sleep(max(0.0, min(END_POLL_S, plan.cap_end - time.time())))
        end, reason = decision
        if plan.dynamic:
            self._close(collect, end)
        return end, reason

    def _started(self, collect: _Collect) -> int:
        if self.distributed:
            return sum(collect.progress.values())
        run = users.active_run()
        return 0 if run is None else run.recorder.started

    def _close(self, collect: _Collect, end: float) -> None:
        if not self.distributed:
            run = users.active_run()
            if run is not None:
                run.recorder.close(end)
            return
        for worker in collect.participants:
            self.runner.send_message(MSG_END, {"run": collect.run, "end": end}, client_id=worker)

    def _stop(self, collect: _Collect) -> None:
        if not self.distributed:
            users.stop_run(self.runner)
            run = users.active_run()
            if run is not None:
                collect.aggregator.add(LOCAL_WORKER_ID, run.recorder.drain())
                collect.aggregator.mark_finished(LOCAL_WORKER_ID)
            return
        for worker in collect.participants:
            self.runner.send_message(MSG_STOP, {"run": collect.run}, client_id=worker)
        deadline = time.monotonic() + RUN_DRAIN_S - WORKER_WAIT_S
        while set(collect.participants) - collect.aggregator.finished and time.monotonic() < deadline:
            gevent.sleep(COLLECT_POLL_S)

    # -- master-side message handlers --

    def _on_progress(self, environment: Environment, msg: Any, **_: Any) -> None:
        collect = self.current
        if collect is not None and msg.data.get("run") == collect.run and msg.node_id in collect.participants:
            collect.progress[msg.node_id] = int(msg.data["started"])

    def _on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        collect = self.current
        if collect is None or msg.data.get("run") != collect.run or msg.node_id not in collect.participants:
            logger.warning("servingbench: final samples of another run from %s, ignored", msg.node_id)
            return
        if msg.data.get("error"):
            collect.problems.append(f"worker {msg.node_id}: {msg.data['error']}")
        else:
            # As if it were a periodic stats report: Locust merges its statistics, `_on_worker_report` the samples.
            _fire(environment.events.worker_report, client_id=msg.node_id, data=msg.data["report"])
        collect.aggregator.mark_finished(msg.node_id)

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        collect, entry = self.current, data.get(REPORT_KEY)
        if collect is not None and entry is not None and entry["run"] == collect.run:
            delta: SampleDelta = entry["delta"]
            collect.aggregator.add(client_id, delta)


def _user_shares(spec: LoadSpec, processes: int) -> list[int]:
    """Users per process: a closed loop's users split as evenly as they go; open loop one scheduler each."""
    if spec.kind == "open":
        return [1] * processes
    base, extra = divmod(spec.users, processes)
    return [base + (1 if index < extra else 0) for index in range(processes)]


def _sleep_until(epoch_s: float) -> None:
    while (remaining := epoch_s - time.time()) > 0:
        gevent.sleep(remaining)


def _document(collect: _Collect, window: Window, reason: EndReason) -> dict[str, Any]:
    missing = sorted(set(collect.participants) - collect.aggregator.finished)
    problems = [*collect.problems, *(["workers missing: " + ", ".join(missing)] if missing else [])]
    document = collect.aggregator.result_json(window=window, complete=not problems, missing_workers=missing)
    return {**document, "ended_by": reason, "problems": problems}


def _failed(run_id: int, problem: str) -> dict[str, Any]:
    return {"run": run_id, "result": {"complete": False, "problems": [problem]}, "files": {}}


def _write_files(environment: Environment, out_dir: Path, *, html: bool) -> dict[str, str]:
    """Locust's request and failure CSVs (and its HTML report if asked) of this run, in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
    files = {"locust_csv": LOCUST_STATS_CSV, "locust_failures_csv": LOCUST_FAILURES_CSV}
    _write_atomic(out_dir / LOCUST_STATS_CSV, lambda handle: stats.requests_csv(csv.writer(handle)))
    _write_atomic(out_dir / LOCUST_FAILURES_CSV, lambda handle: stats.failures_csv(csv.writer(handle)))
    if html:
        report = cast(Any, get_html_report)(environment, show_download_link=False)
        _write_atomic(out_dir / LOCUST_HTML, lambda handle: handle.write(report))
        files["locust_html"] = LOCUST_HTML
    return files


def _write_atomic(path: Path, write: Callable[[IO[str]], object]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        write(handle)
    os.replace(partial, path)


# ---- the worker ----


def _serve_as_worker(environment: Environment, master_host: str, master_port: int) -> int:
    runner = environment.create_worker_runner(master_host, master_port)  # returns once the master acknowledged
    users.install_recording(environment)
    _Worker(environment, runner)
    _fire(environment.events.init, environment=environment, runner=runner, web_ui=None)
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(_quit, environment, EXIT_TERMINATED))
    logger.info("servingbench load worker %s joined %s:%s", runner.client_id, master_host, master_port)
    runner.greenlet.join()  # until the master says quit
    _quit(environment, 0)


class _Worker:
    """A worker's side of the runs: start on `MSG_RUN`, close the window on `MSG_END`, stop and report on
    `MSG_STOP`; count progress for a dynamic window. A run it cannot serve is answered with an error, never lost."""

    def __init__(self, environment: Environment, runner: WorkerRunner) -> None:
        self.environment = environment
        self.runner = runner
        self.refused: dict[int, str] = {}
        runner.register_message(MSG_RUN, self._on_run)
        runner.register_message(MSG_END, self._on_end)
        runner.register_message(MSG_STOP, self._on_stop, concurrent=True)
        _listen(environment.events.report_to_master, self._on_report_to_master)
        runner.send_message(MSG_LISTENING, {})

    def _on_run(self, environment: Environment, msg: Any, **_: Any) -> None:
        run_id = int(msg.data["setup"]["run"])
        try:
            if msg.data.get("protocol") != PROTOCOL:
                raise RunFailedError(f"speaks {PROTOCOL}, the master {msg.data.get('protocol')}: same servingbench?")
            setup = users.RunSetup.from_json(msg.data["setup"])
            users.begin_run(setup)
            users.spawn_users(self.runner)
        except Exception as exc:
            logger.error("servingbench: cannot serve run %s\n%s", run_id, traceback.format_exc())
            self.refused[run_id] = f"{type(exc).__name__}: {exc}"
            return
        if setup.plan.dynamic:
            gevent.spawn(self._report_progress, run_id)

    def _report_progress(self, run_id: int) -> None:
        while (run := users.active_run()) is not None and run.setup.run == run_id and not run.closed:
            self.runner.send_message(MSG_PROGRESS, {"run": run_id, "started": run.recorder.started})
            gevent.sleep(END_POLL_S)

    def _on_end(self, environment: Environment, msg: Any, **_: Any) -> None:
        run = users.active_run()
        if run is not None and run.setup.run == msg.data["run"]:
            run.recorder.close(float(msg.data["end"]))
            run.closed = True

    def _on_stop(self, environment: Environment, msg: Any, **_: Any) -> None:
        run_id = int(msg.data["run"])
        run = users.active_run()
        if run is None or run.setup.run != run_id:
            error = self.refused.pop(run_id, f"no run {run_id} in progress on this worker")
            self.runner.send_message(MSG_FINAL, {"run": run_id, "error": error})
            return
        try:
            users.stop_run(self.runner)
            run.closed = True
            report: dict[str, Any] = {}
            _fire(environment.events.report_to_master, client_id=self.runner.client_id, data=report)
        except Exception as exc:
            logger.error("servingbench: run %s failed\n%s", run_id, traceback.format_exc())
            self.runner.send_message(MSG_FINAL, {"run": run_id, "error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            users.end_run()
        self.runner.send_message(MSG_FINAL, {"run": run_id, "report": report})

    def _on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        run = users.active_run()
        if run is not None:
            data[REPORT_KEY] = {"run": run.setup.run, "delta": run.recorder.drain()}


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # through Any: Locust's EventHook.add_listener is unannotated


def _fire(hook: Any, **kwargs: Any) -> None:
    hook.fire(**kwargs)  # through Any: Locust's EventHook.fire is unannotated


if __name__ == "__main__":
    sys.exit(main())
