"""How the harness talks to a load session's Locust processes, and how those are started. No Locust or gevent.

A session runs one *owner* process (`local`: runs the users itself; `master`: coordinates workers) and, with a
master, N `worker` processes (local children of the harness, or `servingbench load-worker` elsewhere). Start them
with `process_argv`. The harness writes commands to the owner's stdin and reads events from its stdout, one JSON
object per line (the owner's log goes to stderr):

- harness -> owner: `{"op": "run", "run": <int>, "spec": LoadSpec.to_json(), "out_dir": <abs path>,
  "locust_html": <bool>}` (one run at a time: the next only after its "result"), `{"op": "quit"}` (or EOF).
- owner -> harness: `{"event": "ready", "workers": [...]}` once (after every worker joined);
  per run `{"event": "window_start", "run": n}`, `{"event": "window_end", "run": n}` (as the measurement window
  opens and closes) and `{"event": "result", "run": n, "result": {...}, "files": {...}}` at its end;
  `{"event": "error", "message": "..."}` before the owner gives up and exits non-zero.

The result document is `ResultAggregator.result_json` plus `ended_by` (`window.EndReason`) and `problems` (why it
is incomplete); `files` maps artifact names to the per-run files the owner wrote into `out_dir`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from servingbench.loadtests.scenarios import LoadSpec

__all__ = [
    "DEFAULT_MASTER_PORT",
    "DRAIN_TIMEOUT_S",
    "EVENT_ERROR",
    "EVENT_READY",
    "EVENT_RESULT",
    "EVENT_WINDOW_END",
    "EVENT_WINDOW_START",
    "FINAL_REPORT_TIMEOUT_S",
    "KILL_WAIT_S",
    "LOCUST_FAILURES_CSV",
    "LOCUST_HTML",
    "LOCUST_STATS_CSV",
    "OP_QUIT",
    "OP_RUN",
    "PLUGINS_ENV_VAR",
    "PROCESS_MODULE",
    "PROTOCOL",
    "RUN_DRAIN_S",
    "WORKER_WAIT_S",
    "Role",
    "decode_line",
    "encode_line",
    "process_argv",
    "run_command",
]

Role = Literal["local", "master", "worker"]

PROTOCOL = "servingbench-load-2"
"""Sent with every run to the workers; a worker of another servingbench version refuses the run with one line."""
PROCESS_MODULE = "servingbench.loadtests.locust_process"
"""The module a load process runs (`python -m`); its name says "locust", so `ps | grep locust` finds them all."""

DEFAULT_MASTER_PORT = 5557
"""Locust's default master port; a session with remote workers listens on it unless told otherwise."""

PLUGINS_ENV_VAR = "SERVINGBENCH_LOAD_PLUGINS"
"""Python files (separated by ``os.pathsep``) every load process imports at start, before its runner exists, so
they can listen to Locust's events (``from locust import events``) the way extra locustfiles would."""

OP_RUN = "run"
OP_QUIT = "quit"
EVENT_READY = "ready"
EVENT_WINDOW_START = "window_start"
EVENT_WINDOW_END = "window_end"
EVENT_RESULT = "result"
EVENT_ERROR = "error"

DRAIN_TIMEOUT_S = 10.0
"""Seconds the requests still in flight when a window closes get to finish before they are killed."""
KILL_WAIT_S = 2.0
"""Seconds to wait for killed users or requests to die."""
FINAL_REPORT_TIMEOUT_S = 10.0
"""Seconds a master waits, beyond the drain and kill time, for each worker's last samples."""
WORKER_WAIT_S = 5.0
"""Seconds a run waits for the session's workers to be connected (one may be re-joining after a missed heartbeat)."""
RUN_DRAIN_S = DRAIN_TIMEOUT_S + 2 * KILL_WAIT_S + FINAL_REPORT_TIMEOUT_S + WORKER_WAIT_S
"""The longest a run can take beyond its warm-up and window when nothing fails: the harness's deadlines add it."""

LOCUST_STATS_CSV = "locust_stats.csv"
"""Per run: Locust's own request statistics (its 1 ms buckets; warm-up and window together)."""
LOCUST_FAILURES_CSV = "locust_failures.csv"
"""Per run: Locust's failures by kind."""
LOCUST_HTML = "locust.html"
"""Per run, only when asked for (`locust_html=True`): Locust's HTML report (about 1 MB)."""


def process_argv(
    role: Role,
    *,
    master_host: str | None = None,
    master_port: int | None = None,
    expect_workers: int = 0,
    connect_timeout_s: float | None = None,
) -> list[str]:
    """The command line of one load process. `master`: binds `master_host`:`master_port` and waits up to
    `connect_timeout_s` for `expect_workers`; `worker`: joins the master at `master_host`:`master_port`."""
    argv = [sys.executable, "-m", PROCESS_MODULE, role]
    if role == "local":
        return argv
    if master_host is None or master_port is None:
        raise ValueError(f"a {role} needs the master's host and port")
    argv += ["--master-host", master_host, "--master-port", str(master_port)]
    if role == "master":
        argv += ["--expect-workers", str(expect_workers)]
        if connect_timeout_s is not None:
            argv += ["--connect-timeout", f"{connect_timeout_s:g}"]
    return argv


def run_command(run_id: int, spec: LoadSpec, out_dir: Path, *, locust_html: bool) -> dict[str, Any]:
    """The "run" command of run `run_id`."""
    return {
        "op": OP_RUN,
        "run": run_id,
        "spec": spec.to_json(),
        "out_dir": str(out_dir.resolve()),
        "locust_html": locust_html,
    }


def encode_line(message: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """Inverse of `encode_line`; ValueError for a line that is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {line[:80]!r}")
    return message
