"""Orchestration: run a plan over the server matrix, fairly, and write the results bundle as it goes.

Each repetition goes round every server config in a seeded shuffled order (never all of A, then all of B).
A config is started once per model, pinned to the server cores; its scenarios are measured by the load
generator on the other cores while psutil counts the server's CPU over exactly the measured window. Every
run passes the validity gates or is marked invalid with the reason. A config that fails to start or dies is
recorded with its log tail and the plan goes on; Ctrl-C stops everything and keeps what was measured.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from servingbench.harness.bundle import BundleWriter
from servingbench.harness.capacity import (
    GENERATOR_SATURATION_PCT,
    IDLE_TIMEOUT_S,
    PEAK_START_FRACTION,
    CapacityResult,
    CapacityStep,
    SearchInterrupted,
    SearchStopped,
    StepSettings,
    inflight_cap,
    judge_step,
    saturation_problems,
    search_capacity,
    settings_from_peak,
    step_spec,
    theory_rps,
    wait_until_idle,
)
from servingbench.harness.cpus import CpuAllocation, CpuAllocationError, detect_cpus
from servingbench.harness.environment import collect_environment, load_average
from servingbench.harness.loadgen import WORKER_CONNECT_TIMEOUT_S, LoadResult, run_load
from servingbench.harness.plan import (
    RUN_OVERHEAD_S,
    SERVER_START_OVERHEAD_S,
    Measurement,
    ModelPlan,
    Plan,
    PlanError,
    expected_runs,
    load_plan,
    rate_scenario,
)
from servingbench.harness.processes import (
    HEALTH_PATH,
    LOCALHOST,
    ServerProcess,
    ServerStartError,
    free_port,
    running_server,
    wait_until_ready,
)
from servingbench.harness.resources import ServerMonitor, WindowUsage
from servingbench.loadtests.scenarios import USER_CLASS_BY_KIND, LoadSpec, LoadSpecError
from servingbench.servers.launch import ServerConfig, launch_command

__all__ = [
    "GENERATOR_SATURATION_PCT",
    "BenchmarkInterrupted",
    "HarnessError",
    "Session",
    "Target",
    "build_payload",
    "capacity_summary_table",
    "plan_targets",
    "run_benchmark",
    "schedule",
    "summary_table",
    "url_targets",
    "validity_problems",
]

LOAD_TIMEOUT_MARGIN_S = 90.0  # on top of warm-up + window: Locust start, stop timeout, final report
MODEL_INFO_TIMEOUT_S = 5.0
TARGET_READY_TIMEOUT_S = 10.0
PAYLOAD_FEATURE_STEP = 0.1  # feature i of the payload row is 0.1 * i
COMMAND_PORT_PLACEHOLDER = 0  # configs[].command shows port 0: each start picks a free port
TARGET_MODEL_NAME = "target"
PLAIN_SUMMARY_WIDTH = 200
SUMMARY_TEXT_COLUMNS = ("model", "scenario", "config", "note")
NO_SERVER_FIGURES = "target mode: no server CPU or memory figures (the server was not started by the harness)"
CAPACITY_SUMMARY_TITLE = "servingbench: capacity at the p99 SLO (open loop), medians over repetitions"
CAPACITY_SUMMARY_COLUMNS = (
    "model",
    "scenario",
    "config",
    "arrivals",
    "SLO ms",
    "found",
    "capacity req/s",
    "theory req/s",
    "note",
)
MIN_SERVICE_PROBE_USERS = 2  # closed-loop runs with at least this many users keep a one-at-a-time server busy

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HarnessError(Exception):
    """The benchmark cannot start (bad plan, too few cores, bad target). ``str(err)`` is one line."""


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C: every process was stopped and what was measured is in ``bundle_dir`` (``complete: false``)."""

    def __init__(self, bundle_dir: Path) -> None:
        super().__init__(str(bundle_dir))
        self.bundle_dir = bundle_dir


@dataclass(frozen=True)
class Target:
    """A server to measure: a plan config the harness starts (``config``), or a running server (``url``)."""

    name: str
    label: str
    config: ServerConfig | None = None
    url: str | None = None
    route: str | None = None

    def describe(self) -> dict[str, Any]:
        """The fields every run record repeats about its server config."""
        config = self.config
        return {
            "config": self.name,
            "framework": config.framework if config else None,
            "server": config.server if config else None,
            "route": self.route,
            "workers": config.workers if config else None,
            "threads": config.effective_threads if config else None,
        }


@dataclass(frozen=True)
class Session:
    """One server start: a target serving one model, measured over ``measurements`` in order."""

    repetition: int
    target: Target
    model: ModelPlan
    measurements: tuple[Measurement, ...]


def plan_targets(plan: Plan) -> list[Target]:
    """The plan's server configs, each with the plan's worker count."""
    return [Target(config.name, "", config.launch, route=_route(config.launch)) for config in plan.configs]


def _route(config: ServerConfig) -> str | None:
    """The route style, where the framework offers a choice of them (recorded and labelled then)."""
    return config.route_style if config.has_route_choice else None


def url_targets(urls: Sequence[str]) -> list[Target]:
    """``--target`` URLs (``http://host:port``) as targets; a malformed URL is a :class:`HarnessError`."""
    targets: list[Target] = []
    for url in urls:
        base = url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise HarnessError(f"--target {url!r}: expected http://host:port with no path")
        name = "target-" + (parts.netloc.replace(":", "-").replace("[", "").replace("]", ""))
        targets.append(Target(name, base, url=base))
    if len({target.name for target in targets}) != len(targets):
        raise HarnessError("--target: the same server is given twice")
    return targets


def _target_model(plan: Plan) -> ModelPlan:
    """A running target serves one model, whichever it is: every scenario of the plan runs against it."""
    return ModelPlan(TARGET_MODEL_NAME, "", tuple(scenario.name for scenario in plan.scenarios))


def schedule(plan: Plan, targets: Sequence[Target]) -> list[Session]:
    """Every server start of the plan in execution order.

    Each repetition visits every target once, in an order drawn from ``random.Random(plan.seed)``, so the same
    plan and seed give the same order; a target is started once per model and runs that model's measurements.
    """
    rng = random.Random(plan.seed)
    models = [_target_model(plan)] if targets and targets[0].url else list(plan.models)
    sessions: list[Session] = []
    for repetition in range(plan.repetitions):
        for target in rng.sample(list(targets), len(targets)):
            sessions.extend(Session(repetition, target, model, plan.measurements(model)) for model in models)
    return sessions


def build_payload(measurement: Measurement, n_features: int) -> bytes:
    """The JSON body for ``measurement``: one row of ``n_features`` floats (0.0, 0.1, ...), or a batch of them."""
    row = [round(PAYLOAD_FEATURE_STEP * index, 6) for index in range(n_features)]
    if measurement.endpoint == "/predict":
        return json.dumps({"features": row}).encode()
    return json.dumps({"instances": [row] * measurement.batch_size}).encode()


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


def _fetch_n_features(base_url: str) -> int:
    with _OPENER.open(base_url + "/model", timeout=MODEL_INFO_TIMEOUT_S) as response:
        info = json.loads(response.read())
    n_features = info.get("n_features") if isinstance(info, dict) else None
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"GET /model gave no usable n_features: {n_features!r}")
    return n_features


# --- progress -------------------------------------------------------------------------------------


class Reporter(Protocol):
    """What the runner tells the person at the terminal."""

    def start(self, total_runs: int, total_cost_s: float) -> None: ...
    def begin(self, description: str) -> None: ...
    def advance(self, cost_s: float, line: str | None = None) -> None: ...
    def note(self, line: str) -> None: ...
    def stop(self) -> None: ...


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(max(0, round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainReporter:
    """One plain line per run, with a count and the estimated time left: readable in CI logs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done_runs = 0
        self.total_runs = 0
        self.done_cost_s = 0.0
        self.total_cost_s = 0.0
        self.started = time.monotonic()

    def start(self, total_runs: int, total_cost_s: float) -> None:
        self.total_runs, self.total_cost_s, self.started = total_runs, total_cost_s, time.monotonic()
        self.console.print(f"{total_runs} runs planned, about {_format_seconds(total_cost_s)}", highlight=False)

    def begin(self, description: str) -> None:
        pass

    def _eta(self) -> str:
        elapsed = time.monotonic() - self.started
        if self.done_cost_s <= 0:
            return _format_seconds(self.total_cost_s)
        return _format_seconds(elapsed * (self.total_cost_s - self.done_cost_s) / self.done_cost_s)

    def advance(self, cost_s: float, line: str | None = None) -> None:
        self.done_cost_s += cost_s
        self.total_cost_s = max(self.total_cost_s, self.done_cost_s)  # a capacity search may take more steps
        if line is not None:
            self.done_runs += 1
            self.total_runs = max(self.total_runs, self.done_runs)
            prefix = f"[{self.done_runs}/{self.total_runs}, {self._eta()} left]"
            self.console.print(f"{prefix} {line}", highlight=False, markup=False, soft_wrap=True)

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        pass


class RichReporter:
    """A live progress bar (config, model, scenario, repetition, time left) with one line per finished run above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[runs]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.done_runs = 0
        self.total_runs = 0

    def start(self, total_runs: int, total_cost_s: float) -> None:
        self.total_runs = total_runs
        self.progress.start()
        self.task = self.progress.add_task("starting", total=max(total_cost_s, 1.0), runs=f"0/{total_runs}")

    def begin(self, description: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=description)

    def advance(self, cost_s: float, line: str | None = None) -> None:
        if line is not None:
            self.done_runs += 1
            self.total_runs = max(self.total_runs, self.done_runs)  # a capacity search may take more steps
            self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if self.task is not None:
            self.progress.update(self.task, advance=cost_s, runs=f"{self.done_runs}/{self.total_runs}")

    def note(self, line: str) -> None:
        self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        self.progress.stop()


def _reporter(console: Console) -> Reporter:
    return RichReporter(console) if console.is_terminal else PlainReporter(console)


# --- the run loop ---------------------------------------------------------------------------------


def _run_line(record: Mapping[str, Any]) -> str:
    where = f"{record['config']} {record['model']} {record['scenario']} rep {record['repetition'] + 1}"
    if record["status"] != "ok":
        return f"{where}: {record['status'].upper()}: {record['invalid_reason']}"
    latency = record.get("latency_ms") or {}
    figures = f"{record['rps']:.1f} req/s, p50 {_ms(latency.get('p50'))} ms, p99 {_ms(latency.get('p99'))} ms"
    verdict = "ok" if record["valid"] else f"INVALID: {record['invalid_reason']}"
    if record.get("search"):
        verdict += ", meets the SLO" if record.get("step_ok") else f", fails: {record.get('step_reason')}"
    return f"{where}: {figures}, {verdict}"


def _ms(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


@dataclass
class _Runner:
    """State of one benchmark: the plan, where load runs, the bundle being written, the run counter."""

    plan: Plan
    allocation: CpuAllocation
    load_workers: int
    writer: BundleWriter
    reporter: Reporter
    target_mode: bool
    remote_load_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int | None = None
    order: int = 0
    _current: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def run_cost_s(self) -> float:
        return self.plan.warmup_s + self.plan.duration_s + RUN_OVERHEAD_S

    def run_all(self, sessions: Sequence[Session]) -> None:
        runs = [sum(expected_runs(self.plan, item) for item in session.measurements) for session in sessions]
        self.reporter.start(sum(runs), sum(SERVER_START_OVERHEAD_S + count * self.run_cost_s for count in runs))
        for index, session in enumerate(sessions, start=1):
            self._run_session(session, f"s{index:03d}")

    def _base_record(self, session: Session, measurement: Measurement, session_id: str) -> dict[str, Any]:
        self.order += 1
        return {
            "id": f"r{self.order:04d}",
            **session.target.describe(),
            "model": measurement.model,
            "model_spec": session.model.spec or None,
            "scenario": measurement.scenario,
            "kind": measurement.kind,
            "endpoint": measurement.endpoint,
            "batch_size": measurement.batch_size,
            "concurrency": measurement.concurrency,
            "target_rps": measurement.target_rps,
            "repetition": session.repetition,
            "order": self.order,
            "session": session_id,
            "warmup_s": self.plan.warmup_s,
            "duration_s": None,
            "requests": 0,
            "errors": 0,
            "rps": None,
            "valid": False,
            "invalid_reason": None,
            "status": "ok",
            "log_tail": None,
            "artifacts": {},
        }

    def _describe(self, session: Session, measurement: Measurement) -> str:
        rep = f"rep {session.repetition + 1}/{self.plan.repetitions}"
        return f"{session.target.name} · {session.model.name} · {measurement.scenario} · {rep}"

    def _fail_rest(
        self, session: Session, session_id: str, rest: Sequence[Measurement], reason: str, tail: str
    ) -> None:
        for measurement in rest:
            record = self._base_record(session, measurement, session_id)
            record.update(status="failed", invalid_reason=reason, log_tail=tail or None)
            record["artifacts"] = self._server_log_artifact(session_id)
            self._mark_unmeasured_search(record, session, measurement, reason)
            self.writer.add_run(record)
            self.reporter.advance(expected_runs(self.plan, measurement) * self.run_cost_s, _run_line(record))

    def _mark_unmeasured_search(
        self, record: dict[str, Any], session: Session, measurement: Measurement, reason: str
    ) -> None:
        """A capacity search that never measured a step (its server failed first): its run is tagged as the search's,
        so it forms no scenario, and its entry says why it has no steps, so the repetition is not silently missing."""
        if measurement.kind != "capacity":
            return
        search_id = self._next_search_id()
        record.update(kind="open", search=search_id, step_ok=False, step_reason=reason)
        empty = CapacityResult(self.plan.slo_p99_ms, None, (), False, reason, measurement.arrivals)
        self._add_capacity(search_id, session, measurement, empty, ())

    def _server_log_path(self, session_id: str) -> Path:
        return self.writer.dir / "servers" / session_id / "server.log"

    def _server_log_artifact(self, session_id: str) -> dict[str, str]:
        path = self._server_log_path(session_id)
        return {"server_log": self.writer.relative(path)} if path.exists() else {}

    def _run_session(self, session: Session, session_id: str) -> None:
        first = session.measurements[0] if session.measurements else None
        if first is None:
            return
        self.reporter.begin(self._describe(session, first) + " · starting")
        try:
            with self._server(session, session_id) as server:
                self.reporter.advance(SERVER_START_OVERHEAD_S)
                self._measure_all(session, session_id, server)
        except ServerStartError as exc:
            self.reporter.advance(SERVER_START_OVERHEAD_S)
            self._fail_rest(
                session, session_id, session.measurements, f"server failed to start: {exc.reason}", exc.log_tail
            )
        except KeyboardInterrupt:
            self._record_interrupted(session, session_id, first)
            raise

    def _record_interrupted(self, session: Session, session_id: str, first: Measurement) -> None:
        """Mark the run in progress interrupted (during a server start: the session's first run)."""
        record = self._current
        if record is None and not any(run.get("session") == session_id for run in self.writer.runs):
            record = self._base_record(session, first, session_id)
            self._mark_unmeasured_search(record, session, first, "interrupted (Ctrl-C)")
        if record is not None:
            record.update(status="interrupted", valid=False, invalid_reason="interrupted (Ctrl-C)")
            self.writer.add_run(record)
        self._current = None

    @contextlib.contextmanager
    def _server(self, session: Session, session_id: str) -> Iterator[_StartedServer]:
        """Start the session's server (or check the target is up); the server is always stopped on exit."""
        target = session.target
        if target.url is not None:
            wait_until_ready(target.url + HEALTH_PATH, timeout_s=TARGET_READY_TIMEOUT_S)
            yield _StartedServer(target.url, session_id)
            return
        if target.config is None:
            raise HarnessError(f"{target.name}: neither a server config nor a URL")
        port = free_port()
        command = launch_command(
            target.config, host=LOCALHOST, port=port, model=session.model.spec, blas_threads=self.plan.blas_threads
        )
        with running_server(
            command.argv,
            command.env,
            port=port,
            log_path=self._server_log_path(session_id),
            cpus=self.allocation.server,
            startup_timeout_s=self.plan.startup_timeout_s,
        ) as process:
            yield _StartedServer(process.base_url, session_id, process)

    def _measure_all(self, session: Session, session_id: str, server: _StartedServer) -> None:
        try:
            n_features = _fetch_n_features(server.base_url)
        except (OSError, ValueError) as exc:
            self._fail_rest(session, session_id, session.measurements, f"GET /model failed: {exc}", server.tail())
            return
        earlier: list[dict[str, Any]] = []
        for index, measurement in enumerate(session.measurements):
            self.reporter.begin(self._describe(session, measurement))
            payload = build_payload(measurement, n_features)
            if measurement.kind == "capacity":
                self._search(session, session_id, server, measurement, payload, earlier)
                last = self.writer.runs[-1]["id"] if self.writer.runs else "?"
            else:
                record = self._base_record(session, measurement, session_id)
                self._measure(record, functools.partial(self._run_spec, record, measurement, server, payload), server)
                self._finish_run(record, self.run_cost_s)
                earlier.append(record)
                last = record["id"]
            if server.died():
                reason = f"server died earlier in this session ({last})"
                self._fail_rest(session, session_id, session.measurements[index + 1 :], reason, server.tail())
                return

    def _run_spec(
        self, record: Mapping[str, Any], measurement: Measurement, server: _StartedServer, payload: bytes
    ) -> LoadSpec:
        """The load of one plan run: the measurement's shape for the plan's warm-up and window."""
        if measurement.kind == "capacity":
            raise ValueError("a capacity search is measured step by step (_search), not as one run")
        return LoadSpec(
            base_url=server.base_url,
            endpoint=measurement.endpoint,
            payload=payload,
            kind=measurement.kind,
            users=measurement.users,
            rate=measurement.target_rps,
            arrivals=measurement.arrivals,
            warmup_s=self.plan.warmup_s,
            duration_s=self.plan.duration_s,
            seed=self.plan.seed + record["order"],
            allow_remote=self.target_mode,
        )

    def _finish_run(self, record: dict[str, Any], cost_s: float) -> None:
        self.writer.add_run(record)
        self.reporter.advance(cost_s, _run_line(record))

    def _measure(
        self, record: dict[str, Any], spec: Callable[[], LoadSpec], server: _StartedServer, *, step: bool = False
    ) -> LoadResult | None:
        """Measure one run into ``record`` (the run in progress until it returns); None when the load failed.

        ``spec`` makes the load inside the run's error handling, so a bad spec fails the run, not the benchmark.
        ``step``: the run is a capacity-search step, judged against the SLO by the search, so only a measurement
        problem (the generator lagging or saturated, too few requests, a dead server) makes it invalid.
        """
        run_dir = self.writer.run_dir(record["id"])
        monitor = server.monitor()
        self._current = record
        try:
            load = spec()
            result = run_load(
                load,
                out_dir=run_dir,
                cpus=list(self.allocation.load),
                workers=self.load_workers,
                timeout_s=self._load_timeout_s(load),
                on_window_start=monitor.window_start if monitor else None,
                on_window_end=monitor.window_end if monitor else None,
                **self._remote_options(),
            )
        except (LoadSpecError, NotImplementedError, OSError, RuntimeError, ValueError) as exc:
            self._current = None
            self._record_failure(record, server, f"load generator failed: {_first_line(exc)}", run_dir)
            return None
        self._current = None  # not on Ctrl-C: `_record_interrupted` marks the run in progress
        record.update(result.to_json(relative_to=self.writer.dir))
        record["artifacts"].update(self._server_log_artifact(server.session_id))
        self._apply_usage(record, monitor.usage if monitor else None, result.requests)
        # A step's drops, errors and late sends are judged by the search (`_judge_step`), not by the run's gates.
        self._apply_gates(record, server, [] if step else result.generator_problems(), step=step)
        return result

    # --- capacity search --------------------------------------------------------------------------

    def _search(
        self,
        session: Session,
        session_id: str,
        server: _StartedServer,
        measurement: Measurement,
        payload: bytes,
        earlier: Sequence[Mapping[str, Any]],
    ) -> None:
        """Search the capacity at the plan's SLO on this server; every step is a run, the result a capacity entry.

        The search starts from the peak of this session's closed-loop runs of the same shape when there are any.
        A server that dies ends the search (its result is a lower bound); Ctrl-C writes the partial result first.
        """
        plan, search_id = self.plan, self._next_search_id()
        peak = _closed_peak(earlier, measurement)
        settings = settings_from_peak(
            peak, start_rps=measurement.start_rps, tolerance=plan.capacity_tolerance, max_steps=plan.capacity_max_steps
        )

        def measure(rate: float) -> CapacityStep:
            step = self._step(session, session_id, server, measurement, payload, rate, search_id)
            if not server.died() and not wait_until_idle(server.base_url, pid=server.pid):
                raise SearchStopped(f"the server did not drain within {IDLE_TIMEOUT_S:g} s after {step.run}", step)
            if server.died():
                raise SearchStopped(f"server died during the search ({step.run})", step)
            return step

        try:
            result = search_capacity(measure, settings, slo_p99_ms=plan.slo_p99_ms, arrivals=measurement.arrivals)
        except SearchInterrupted as interrupted:
            self._add_capacity(search_id, session, measurement, interrupted.result, earlier)
            raise
        self._add_capacity(search_id, session, measurement, result, earlier)
        self.reporter.note(_capacity_line(session, measurement, result))

    def _next_search_id(self) -> str:
        return f"k{len(self.writer.capacity) + 1:03d}"

    def _step(
        self,
        session: Session,
        session_id: str,
        server: _StartedServer,
        measurement: Measurement,
        payload: bytes,
        rate: float,
        search_id: str,
    ) -> CapacityStep:
        """Measure and judge one rate of a search; the step is recorded as an open-loop run."""
        plan = self.plan
        shape = replace(
            measurement,
            scenario=rate_scenario(measurement.scenario, rate),
            kind="open",
            target_rps=rate,
            users=inflight_cap(rate, plan.slo_p99_ms),
        )
        record = self._base_record(session, shape, session_id)
        record["search"] = search_id
        step_settings = StepSettings(
            min_requests=max(plan.capacity_step_requests, plan.min_requests),
            min_duration_s=plan.duration_s,
            max_duration_s=max(plan.duration_s, plan.capacity_max_step_s),
            warmup_s=plan.warmup_s,
        )

        def spec() -> LoadSpec:
            return step_spec(
                base_url=server.base_url,
                endpoint=measurement.endpoint,
                payload=payload,
                rate=rate,
                arrivals=measurement.arrivals,
                seed=plan.seed + record["order"],
                slo_p99_ms=plan.slo_p99_ms,
                step=step_settings,
                allow_remote=self.target_mode,
            )

        result = self._measure(record, spec, server, step=True)
        step = self._judge(record, rate, result)
        record.update(step_ok=step.ok, step_reason=step.reason)
        if step.generator_limited and record["valid"]:  # the verdict measured the generator, not the server
            record.update(valid=False, invalid_reason=step.reason)
        self._finish_run(record, plan.warmup_s + step_settings.duration_s(rate) + RUN_OVERHEAD_S)
        return step

    def _judge(self, record: Mapping[str, Any], rate: float, result: LoadResult | None) -> CapacityStep:
        """The step's verdict. A run the load generator could not finish is the generator's failure; one whose server
        died, or that measured too few requests to judge, fails without blaming the generator."""
        if result is None or record["status"] != "ok":
            reason = str(record.get("invalid_reason") or "the load generator failed")
            limited = result is None and record["status"] == "failed" and not reason.startswith("server died")
            return CapacityStep(
                rate=rate,
                ok=False,
                p99_ms=None,
                error_rate=None,
                reason=reason,
                run=record["id"],
                generator_limited=limited,
            )
        step = judge_step(
            rate,
            result,
            slo_p99_ms=self.plan.slo_p99_ms,
            max_error_rate=self.plan.error_rate_limit,
            run=record["id"],
            invalid_reasons=saturation_problems(record.get("generator_cpu_pct")),
        )
        if record["requests"] < self.plan.min_requests:  # too slow to judge within the longest step: no verdict
            reason = f"too few requests to judge ({record['requests']} < {self.plan.min_requests})"
            return replace(step, ok=False, reason=reason, generator_limited=False)
        return step

    def _add_capacity(
        self,
        search_id: str,
        session: Session,
        measurement: Measurement,
        result: CapacityResult,
        earlier: Sequence[Mapping[str, Any]],
    ) -> None:
        entry = result.to_json(config=session.target.name, model=measurement.model, repetition=session.repetition)
        entry = {"id": search_id, **entry, "scenario": measurement.scenario}
        entry.update(self._theory(session.target, measurement, result, earlier))
        self.writer.add_capacity(entry)

    def _theory(
        self, target: Target, measurement: Measurement, result: CapacityResult, earlier: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Queueing theory beside the measured capacity, where it applies: one server serving one request at a time,
        whose fixed service time is 1 / its closed-loop peak with enough users to keep it always busy."""
        none: dict[str, Any] = {"service_ms": None, "theory": None, "theory_rps": None}
        config = target.config
        if config is None or config.workers * config.inflight_per_worker() != 1:
            return none
        peak = _closed_peak(earlier, measurement, min_users=MIN_SERVICE_PROBE_USERS)
        if peak is None:
            return none
        service_s = 1.0 / peak
        name, rate = theory_rps(result.arrivals, service_s, result.slo_p99_ms)
        return {"service_ms": round(service_s * 1e3, 4), "theory": name, "theory_rps": round(rate, 3)}

    def _remote_options(self) -> dict[str, Any]:
        """`run_load`'s remote-worker options, passed only when there are remote workers."""
        if not self.remote_load_workers:
            return {}
        return {
            "remote_workers": self.remote_load_workers,
            "master_bind": self.master_bind,
            "master_port": self.master_port,
        }

    def _load_timeout_s(self, spec: LoadSpec) -> float:
        connect = WORKER_CONNECT_TIMEOUT_S if self.remote_load_workers else 0.0
        return spec.warmup_s + spec.duration_s + LOAD_TIMEOUT_MARGIN_S + connect

    def _record_failure(self, record: dict[str, Any], server: _StartedServer, reason: str, run_dir: Path) -> None:
        if server.died():
            reason = f"server died during the run (exit code {server.exit_code()})"
        record.update(status="failed", invalid_reason=reason, log_tail=server.tail() or None)
        record["artifacts"] = {
            **{path.name: self.writer.relative(path) for path in sorted(run_dir.glob("*.log"))},
            **self._server_log_artifact(server.session_id),
        }

    def _apply_usage(self, record: dict[str, Any], usage: WindowUsage | None, requests: int) -> None:
        record.update(
            server_cpu_s=None,
            server_cpu_us_per_request=None,
            server_rss_mb=None,
            server_rss_mb_per_worker=None,
            server_pss_mb_per_worker=None,
        )
        if usage is None:
            return
        record["server_cpu_s"] = round(usage.cpu_s, 3)
        if requests > 0:
            record["server_cpu_us_per_request"] = round(usage.cpu_s * 1e6 / requests, 1)
        if usage.memory is not None:
            record["server_rss_mb"] = round(usage.memory.rss_mb_total, 1)
            record["server_rss_mb_per_worker"] = [round(value, 1) for value in usage.memory.rss_mb_per_worker]
            pss = usage.memory.pss_mb_per_worker
            record["server_pss_mb_per_worker"] = None if pss is None else [round(value, 1) for value in pss]

    def _apply_gates(
        self, record: dict[str, Any], server: _StartedServer, generator: list[str] | None = None, *, step: bool = False
    ) -> None:
        """Mark the run invalid, with every reason: gates, a server that died, an open-loop generator that lagged.

        A capacity step (``step``) is not held to the error-rate gate: errors at a rate past capacity are the finding.
        Its late sends are judged with its verdict: they void it only where they could have changed it.
        """
        problems = validity_problems(
            requests=record["requests"],
            errors=record["errors"],
            generator_cpu_pct=record.get("generator_cpu_pct"),
            error_rate_limit=1.0 if step else self.plan.error_rate_limit,
            min_requests=self.plan.min_requests,
        )
        problems += generator or []  # open loop: the schedule was not kept (drops at the cap, late sends)
        if server.died():
            problems.insert(0, f"server died during the run (exit code {server.exit_code()})")
            record.update(status="failed", log_tail=server.tail() or None)
        elif self.target_mode:
            record["notes"] = [NO_SERVER_FIGURES]
        record.update(valid=not problems, invalid_reason="; ".join(problems) or None)


def _closed_peak(records: Sequence[Mapping[str, Any]], measurement: Measurement, *, min_users: int = 1) -> float | None:
    """The highest throughput (req/s) of the valid closed-loop runs in ``records`` with ``measurement``'s endpoint and
    batch size and at least ``min_users`` users; None when there is none."""
    rates = [
        float(record["rps"])
        for record in records
        if record.get("kind") == "closed"
        and record.get("valid")
        and record.get("status") == "ok"
        and (record.get("endpoint"), record.get("batch_size")) == (measurement.endpoint, measurement.batch_size)
        and (record.get("concurrency") or 0) >= min_users
        and isinstance(record.get("rps"), int | float)
    ]
    return max(rates, default=None)


def _capacity_line(session: Session, measurement: Measurement, result: CapacityResult) -> str:
    where = f"{session.target.name} {measurement.model} {measurement.scenario} rep {session.repetition + 1}"
    found = "none" if result.capacity_rps is None else f"{result.capacity_rps:.1f} req/s"
    bound = f", lower bound ({result.limited_by} limit)" if result.limited_by else ""
    return f"{where}: capacity at p99 <= {result.slo_p99_ms:g} ms: {found}{bound} ({result.stop_reason})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass
class _StartedServer:
    """A server being measured: started by the harness (``process``) or already running (target mode)."""

    base_url: str
    session_id: str
    process: ServerProcess | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id when the harness started it (None in target mode)."""
        return self.process.pid if self.process else None

    def monitor(self) -> ServerMonitor | None:
        return ServerMonitor(self.process.pid) if self.process else None

    def died(self) -> bool:
        return self.process is not None and self.process.exit_code() is not None

    def exit_code(self) -> int | None:
        return self.process.exit_code() if self.process else None

    def tail(self) -> str:
        return self.process.log_tail() if self.process else ""


# --- the bundle's static parts --------------------------------------------------------------------


def _config_entries(plan: Plan, targets: Sequence[Target]) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for target in targets:
        config = target.config
        if config is None:
            entries[target.name] = {"label": target.label, "url": target.url, "command": []}
            continue
        model = plan.models[0].spec
        command = launch_command(config, host=LOCALHOST, port=COMMAND_PORT_PLACEHOLDER, model=model)
        entries[target.name] = {
            "framework": config.framework,
            "server": config.server,
            "route": target.route,
            "workers": config.workers,
            "threads": config.effective_threads,
            "inflight_per_worker": config.inflight_per_worker(),
            "keepalive": config.keepalive(),
            "command": command.argv,
            "label": config.label(),
        }
    return entries


def _fairness(plan: Plan, allocation: CpuAllocation, targets: Sequence[Target], target_mode: bool) -> list[str]:
    if target_mode:
        rules = [f"load generator pinned to CPUs {list(allocation.load)}"]
        rules.extend(rule for rule in allocation.fairness_rules() if allocation.shared)
        rules.append(
            "target mode: servers started outside the harness; no pinning, worker, thread or BLAS control, "
            "no server CPU or memory figures"
        )
    else:
        rules = list(allocation.fairness_rules())
        configs = [target.config for target in targets if target.config is not None]
        rules.append(f"equal worker processes: {plan.workers} for every config")
        rules.append(f"BLAS/OpenMP threads: {plan.blas_threads} in every worker")
        rules.append("FastAPI's default route is def (thread pool); async def runs as its own labelled config")
        inflight = ", ".join(f"{t.name} {t.config.inflight_per_worker()}" for t in targets if t.config)
        rules.append(f"in-flight requests per worker: {inflight}")
        closing = [t.name for t in targets if t.config and not t.config.keepalive()]
        rules.append(
            "connections kept alive, except on: " + (", ".join(closing) or "none") + " (a new connection per request)"
        )
        rules.append("production servers only: " + ", ".join(sorted({c.server for c in configs})))
    rules.append(f"warm-up of {plan.warmup_s:g} s before every measured window of {plan.duration_s:g} s, discarded")
    rules.append(
        f"configs interleaved: each of {plan.repetitions} repetition(s) visits every config once "
        f"in a shuffled order (seed {plan.seed})"
    )
    if any(scenario.kind == "capacity" for scenario in plan.scenarios):
        rules.append(_capacity_rule(plan))
    rules.append(
        f"a run is invalid when the load generator used more than {GENERATOR_SATURATION_PCT:g}% of its cores, "
        f"the error rate passed {plan.error_rate_limit:.1%}, fewer than {plan.min_requests} requests were measured, "
        "or the server died"
    )
    return rules


def _capacity_rule(plan: Plan) -> str:
    return (
        f"capacity at p99 <= {plan.slo_p99_ms:g} ms: open-loop arrivals on a seeded schedule, each request timed from "
        "its intended send time; a rate passes when p99 meets the SLO, the error rate is not over "
        f"{plan.error_rate_limit:.1%}, no arrival is dropped at the in-flight cap and the load generator keeps its "
        f"schedule (p99 send lag within a tenth of the SLO); the search starts at {PEAK_START_FRACTION:g} x the "
        "closed-loop peak measured before it on the same server start (or at the scenario's start_rps), brackets, "
        f"bisects to {plan.capacity_tolerance:.0%} and confirms (at most {plan.capacity_max_steps} steps); each step "
        "waits until the previous step's backlog has drained; a capacity limited by the load generator is reported "
        "as a lower bound"
    )


# --- the summary ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _group_key(run: Mapping[str, Any], model_order: Mapping[str, int]) -> tuple[Any, ...]:
    level = run.get("concurrency") or run.get("target_rps") or 0
    base = str(run["scenario"]).rsplit("-", 1)[0]
    return (model_order[run["model"]], base, level, run["config"])


def _valid_values(runs: Sequence[Mapping[str, Any]], pick: Callable[[Mapping[str, Any]], Any]) -> list[float]:
    values = (pick(run) for run in runs)
    return [float(value) for value in values if isinstance(value, int | float)]


def summary_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    """Medians over the valid repetitions of each model x scenario x config (a first look; the report has intervals)."""
    table = Table(title="servingbench: medians over valid repetitions", box=box.SIMPLE_HEAD)
    for column in ("model", "scenario", "config", "valid", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "note"):
        table.add_column(column, justify="left" if column in SUMMARY_TEXT_COLUMNS else "right", no_wrap=True)
    model_order: dict[str, int] = {}
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        if run.get("search"):  # capacity-search steps: summed up by `capacity_summary_table`
            continue
        model_order.setdefault(run["model"], len(model_order))
        groups.setdefault((run["model"], run["scenario"], run["config"]), []).append(run)
    for (model, scenario, config), items in sorted(groups.items(), key=lambda kv: _group_key(kv[1][0], model_order)):
        valid = [run for run in items if run["valid"] and run["status"] == "ok"]
        note = next((str(run["invalid_reason"]) for run in items if run not in valid), "")
        table.add_row(
            model,
            scenario,
            config,
            f"{len(valid)}/{len(items)}",
            _fmt(_median(_valid_values(valid, lambda run: run.get("rps"))), 1),
            _fmt(_median(_valid_values(valid, lambda run: (run.get("latency_ms") or {}).get("p50"))), 3),
            _fmt(_median(_valid_values(valid, lambda run: (run.get("latency_ms") or {}).get("p99"))), 3),
            _fmt(_median(_valid_values(valid, lambda run: run.get("server_cpu_us_per_request"))), 0),
            note,
        )
    return table


def capacity_summary_table(entries: Sequence[Mapping[str, Any]]) -> Table | None:
    """Median capacity at the SLO over repetitions per model x scenario x config, with theory where it applies;
    None when the plan ran no capacity search."""
    if not entries:
        return None
    table = Table(title=CAPACITY_SUMMARY_TITLE, box=box.SIMPLE_HEAD)
    for column in CAPACITY_SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column in (*SUMMARY_TEXT_COLUMNS, "arrivals") else "right")
    groups: dict[tuple[str, str, str, str, float], list[Mapping[str, Any]]] = {}
    for entry in entries:
        key = (entry["model"], entry["scenario"], entry["config"], entry["arrivals"], entry["slo_p99_ms"])
        groups.setdefault(key, []).append(entry)
    for (model, scenario, config, arrivals, slo), items in groups.items():
        found = _valid_values(items, lambda entry: entry.get("capacity_rps"))
        theory = _valid_values(items, lambda entry: entry.get("theory_rps"))
        notes = [f"{entry['limited_by']} limit: a lower bound" for entry in items if entry.get("limited_by")]
        notes += [f"not converged: {entry['stop_reason']}" for entry in items if not entry.get("converged")]
        notes += ["a higher rate passed once, not confirmed: a lower bound" for entry in items if _passed_above(entry)]
        name = next((str(entry["theory"]) for entry in items if entry.get("theory")), "")
        table.add_row(
            model,
            scenario,
            config,
            arrivals,
            f"{slo:g}",
            f"{len(found)}/{len(items)}",
            _fmt(_median(found), 1),
            f"{_fmt(_median(theory), 1)} ({name})" if theory else "-",
            "; ".join(dict.fromkeys(notes)),
        )
    return table


def _passed_above(entry: Mapping[str, Any]) -> bool:
    found = entry.get("capacity_rps")
    return isinstance(found, int | float) and any(step["ok"] and step["rate"] > found for step in entry["steps"])


def _print_summary(console: Console, table: Table) -> None:
    """Print the table; off a terminal (CI logs, 80 columns) on a wide plain console instead of folding every cell."""
    if console.is_terminal:
        console.print(table)
        return
    plain = Console(file=console.file, width=max(console.width, PLAIN_SUMMARY_WIDTH), no_color=True, highlight=False)
    plain.print(table)


def _fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


# --- entry point ----------------------------------------------------------------------------------


def _prepare(
    plan_path: Path | None, preset: str, targets: Sequence[str], allow_shared_cores: bool
) -> tuple[Plan, CpuAllocation, list[Target]]:
    """Everything that can be wrong before a process starts: the plan, the targets, the cores."""
    try:
        plan = load_plan(plan_path, preset)
    except PlanError as exc:
        raise HarnessError(str(exc)) from exc
    for scenario in plan.scenarios:
        if scenario.kind not in (*USER_CLASS_BY_KIND, "capacity"):
            raise HarnessError(f"scenarios.{scenario.name}.kind: {scenario.kind!r} load is not implemented yet")
    chosen = url_targets(targets) if targets else plan_targets(plan)
    # In target mode the servers run elsewhere (other containers, other machines): every usable core here is the load
    # generator's, so a runner confined to the load cores (compose pins it there) needs no core for a server.
    server_cpus = 0 if targets else plan.server_cpus
    try:
        allocation = detect_cpus(server_cpus=server_cpus, allow_shared=allow_shared_cores)
    except CpuAllocationError as exc:
        raise HarnessError(str(exc)) from exc
    return plan, allocation, chosen


def run_benchmark(
    *,
    plan_path: Path | None,
    preset: str,
    out_root: Path,
    targets: list[str],
    load_workers: int | None,
    console: Console,
    allow_shared_cores: bool = False,
    remote_load_workers: int = 0,
    master_bind: str = "127.0.0.1",
    master_port: int | None = None,
) -> Path:
    """Run the plan (or measure ``targets``), write the bundle under ``out_root``, print a summary; return its dir.

    ``load_workers``: Locust worker processes (default: one per load core; 1 runs Locust as one process).
    ``remote_load_workers``: Locust workers on other machines (``servingbench load-worker``) the master also waits
    for, listening on ``master_bind``:``master_port`` (default 127.0.0.1:5557); with any, ``load_workers`` may be 0.
    Raises :class:`HarnessError` before anything starts when the plan, the targets or the cores are unusable,
    and :class:`BenchmarkInterrupted` (a ``KeyboardInterrupt``) after Ctrl-C, once the partial bundle is written.
    """
    plan, allocation, chosen = _prepare(plan_path, preset, targets, allow_shared_cores)
    target_mode = bool(targets)
    if remote_load_workers < 0:
        raise HarnessError(f"--remote-load-workers must not be negative, got {remote_load_workers}")
    minimum = 0 if remote_load_workers else 1
    if load_workers is not None and load_workers < minimum:
        raise HarnessError(f"--load-workers must be at least {minimum}, got {load_workers}")
    if master_bind != "127.0.0.1" and not remote_load_workers:
        raise HarnessError("--master-bind beyond loopback needs --remote-load-workers")
    workers = load_workers if load_workers is not None else max(1, len(allocation.load))
    fairness = _fairness(plan, allocation, chosen, target_mode)
    if remote_load_workers:
        fairness.append(
            f"{remote_load_workers} remote load worker(s) on other machines: their CPU is not measured "
            "(generator CPU figures cover local Locust processes only)"
        )
    writer = BundleWriter(
        out_root,
        preset=plan.preset,
        seed=plan.seed,
        environment={
            **collect_environment(allocation, blas_threads=plan.blas_threads),
            "load_workers": workers,
            "remote_load_workers": remote_load_workers,
        },
        plan=plan.to_json(),
        fairness=fairness,
        configs=_config_entries(plan, chosen),
    )
    writer.save()
    console.print(f"servingbench: plan {plan.source} (preset {plan.preset}), results in {writer.dir}", highlight=False)
    runner = _Runner(
        plan,
        allocation,
        workers,
        writer,
        _reporter(console),
        target_mode,
        remote_load_workers=remote_load_workers,
        master_bind=master_bind,
        master_port=master_port,
    )
    try:
        runner.run_all(schedule(plan, chosen))
    except BaseException as exc:
        # Whatever stopped the plan, what was measured stays, marked incomplete.
        runner.reporter.stop()
        writer.finish(complete=False, environment={"load_avg_after": load_average()})
        if isinstance(exc, KeyboardInterrupt):
            console.print(f"interrupted: partial results (complete: false) in {writer.dir}", highlight=False)
            raise BenchmarkInterrupted(writer.dir) from None
        raise
    runner.reporter.stop()
    writer.finish(complete=True, environment={"load_avg_after": load_average()})
    _print_summary(console, summary_table(writer.runs))
    capacity = capacity_summary_table(writer.capacity)
    if capacity is not None:
        _print_summary(console, capacity)
    console.print(f"results: {writer.dir}", highlight=False)
    return writer.dir
