"""The one measure path: a load spec against a started server, the server's usage over the window, the gates.

Closed-loop runs, open-loop runs, capacity-curve steps and the standalone capacity command all call :func:`measure`.
It never raises for a run that could not be measured (that is a ``failed`` record with its reason); Ctrl-C raises
:class:`RunInterrupted` carrying the record of the run in progress, so the caller can keep it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from servingbench.harness.loadgen import LoadResult, WindowCallback
from servingbench.harness.record import RunIdentity, RunRecord
from servingbench.harness.resources import ServerMonitor
from servingbench.harness.servers import StartedServer
from servingbench.harness.speed import SpeedSampler
from servingbench.loadtests.scenarios import LoadSpec, LoadSpecError

__all__ = [
    "GENERATOR_SATURATION_PCT",
    "NO_SERVER_FIGURES",
    "Gates",
    "Load",
    "RemoteLoad",
    "RunInterrupted",
    "measure",
    "saturation_problems",
    "validity_problems",
]

NO_SERVER_FIGURES = "target mode: no server CPU or memory figures (the server was not started by the harness)"
GENERATOR_SATURATION_PCT = 90.0
"""Load generator CPU (% of its cores) above which a run is invalid (a curve step: the generator's failure)."""


class Load(Protocol):
    """Runs one load spec and returns what it measured (the load generator, one session or one process per run)."""

    def run(
        self,
        spec: LoadSpec,
        *,
        out_dir: Path,
        on_window_start: WindowCallback | None,
        on_window_end: WindowCallback | None,
        timeout_s: float | None,
    ) -> LoadResult: ...


@dataclass(frozen=True)
class RemoteLoad:
    """Locust workers on other machines (``servingbench load-worker``) that join every load run, and where the
    master listens for them."""

    workers: int
    bind: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class Gates:
    """When a finished run counts: ``error_rate_limit`` (a fraction), ``min_requests``; ``target_mode`` when the
    server was not started by the harness (no server figures)."""

    error_rate_limit: float
    min_requests: int
    target_mode: bool = False


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``record`` is the run in progress, marked interrupted."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(record.identity.id)
        self.record = record


def saturation_problems(generator_cpu_pct: float | None) -> list[str]:
    """Why the load generator measured itself rather than the server: its CPU (% of its cores) over the limit."""
    if generator_cpu_pct is None or generator_cpu_pct <= GENERATOR_SATURATION_PCT:
        return []
    return [f"load generator saturated ({generator_cpu_pct:.0f}% CPU > {GENERATOR_SATURATION_PCT:.0f}% of its cores)"]


def validity_problems(
    *, requests: int, errors: int, generator_cpu_pct: float | None, error_rate_limit: float, min_requests: int
) -> list[str]:
    """Why a finished run does not count (empty if it does): generator saturated, too many errors, too few requests."""
    problems = saturation_problems(generator_cpu_pct)
    if requests > 0 and errors / requests > error_rate_limit:
        problems.append(f"error rate {errors / requests:.1%} over the limit {error_rate_limit:.1%}")
    if requests < min_requests:
        problems.append(f"too few requests ({requests} < {min_requests})")
    return problems


def measure(
    identity: RunIdentity,
    spec: Callable[[], LoadSpec],
    server: StartedServer,
    load: Load,
    *,
    run_dir: Path,
    gates: Gates,
    step: bool = False,
    server_log: dict[str, Path] | None = None,
    speed_cpus: Collection[int] = (),
    memory_steps: int = 0,
) -> RunRecord:
    """Measure one run: the load from ``spec()`` (made here, so a bad spec fails the run, not the benchmark) against
    ``server``, the server's CPU and memory over exactly the measured window, then the validity gates.

    ``step``: a capacity-curve step, judged against the SLO by the curve, so its errors, drops and late sends are not
    gates here (past capacity they are the finding); only a measurement problem (a saturated generator, too few
    requests, a dead server) makes it invalid. ``server_log``: the server log artefact to link from the record.
    ``speed_cpus``: the server's cores, where the machine-speed probe samples during the measured window
    (:mod:`servingbench.harness.speed`; none in target mode); ``memory_steps``: the memory probe's chase beside it
    (the plan's ``memory_probe_steps``; 0: none).
    """
    record = RunRecord(identity, artifacts=dict(server_log or {}))
    monitor = server.monitor()
    started = time.monotonic()
    sampler = SpeedSampler(speed_cpus, memory_steps=memory_steps)
    window_start, window_end = _window_callbacks(monitor, sampler)
    try:
        load_spec = spec()
        with sampler:
            result = load.run(
                load_spec,
                out_dir=run_dir,
                on_window_start=window_start,
                on_window_end=window_end,
                timeout_s=None,  # the load generator's own deadline: warm-up, window cap, drain and report
            )
    except KeyboardInterrupt:
        raise RunInterrupted(record.failed("interrupted (Ctrl-C)", status="interrupted")) from None
    except (LoadSpecError, NotImplementedError, OSError, RuntimeError, ValueError) as exc:
        return _load_failed(record, server, exc, run_dir, time.monotonic() - started)
    record = replace(
        record,
        result=result,
        usage=monitor.usage if monitor else None,
        wall_s=time.monotonic() - started,
        speed_probe_us=sampler.value(),
        memory_probe_us=sampler.value(memory=True),
    )
    return _apply_gates(record, server, gates, step=step)


def _window_callbacks(monitor: ServerMonitor | None, sampler: SpeedSampler) -> tuple[WindowCallback, WindowCallback]:
    """The measured window's start and end, told to the server's resource monitor (when there is one) and to the
    speed probe."""

    def start() -> None:
        if monitor is not None:
            monitor.window_start()
        sampler.window_start()

    def end() -> None:
        if monitor is not None:
            monitor.window_end()
        sampler.window_end()

    return start, end


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _load_failed(record: RunRecord, server: StartedServer, exc: Exception, run_dir: Path, wall_s: float) -> RunRecord:
    reason = f"load generator failed: {_first_line(exc)}"
    if server.died():
        reason = f"server died during the run (exit code {server.exit_code()})"
    logs = {path.name: path for path in sorted(run_dir.glob("*.log"))} if run_dir.is_dir() else {}
    artifacts = {**logs, **record.artifacts}
    failed = record.failed(reason, log_tail=server.tail() or None)
    return replace(failed, artifacts=artifacts, wall_s=wall_s)


def _apply_gates(record: RunRecord, server: StartedServer, gates: Gates, *, step: bool) -> RunRecord:
    """Every reason the run does not count: gates, a server that died, an open-loop generator that lagged."""
    result = record.result
    assert result is not None
    problems = validity_problems(
        requests=result.requests,
        errors=result.errors,
        generator_cpu_pct=result.generator_cpu_pct,
        error_rate_limit=1.0 if step else gates.error_rate_limit,
        min_requests=gates.min_requests,
    )
    if not step:
        problems += result.generator_problems()  # open loop: the schedule was not kept (drops at the cap, late)
    notes: tuple[str, ...] = ()
    status = record.status
    log_tail = record.log_tail
    if server.died():
        problems.insert(0, f"server died during the run (exit code {server.exit_code()})")
        status, log_tail = "failed", server.tail() or None
    elif gates.target_mode:
        notes = (NO_SERVER_FIGURES,)
    return replace(record, problems=tuple(problems), notes=notes, status=status, log_tail=log_tail)
