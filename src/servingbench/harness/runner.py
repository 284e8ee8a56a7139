"""Orchestration: run a plan over the server matrix, fairly, and write the results bundle as it goes.

Per model, every config's server is started (pinned to the server cores) and stays up; each repetition then measures
every measurement of the plan on every config, in an order shuffled per repetition and measurement from the plan's
seed, so the configs of one repetition are measured seconds apart and compare as pairs. Servers that are not being
measured sit idle on the server cores. A capacity measurement is a curve: each config climbs a grid of offered rates
shared by all configs (harness.curve). Every run goes through the one measure path (harness.measure); a config that
fails to start or dies is recorded with its log tail and the plan goes on; Ctrl-C stops everything and keeps what was
measured.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from servingbench.harness.bundle import BundleWriter
from servingbench.harness.costs import RunCosts, learned_costs
from servingbench.harness.cpus import CpuAllocation, CpuAllocationError, detect_cpus
from servingbench.harness.curve import (
    GENERATOR_LIMIT,
    CurveFit,
    CurvePoint,
    fit_capacity,
    inflight_cap,
    is_midpoint,
    judge_step,
    next_rate,
    rate_grid,
)
from servingbench.harness.environment import collect_environment, load_average
from servingbench.harness.fairness import fairness_rules
from servingbench.harness.loadgen import LoadgenError, LoadSession, generator_ceiling
from servingbench.harness.measure import (
    Gates,
    Load,
    RemoteLoad,
    RunInterrupted,
    measure,
    saturation_problems,
)
from servingbench.harness.plan import (
    Measurement,
    ModelPlan,
    Plan,
    PlanError,
    estimate_seconds,
    expected_runs,
    load_plan,
    measurement_cost_s,
    rate_scenario,
    run_cost_s,
    step_warmup_s,
)
from servingbench.harness.processes import LOCALHOST, ServerStartError
from servingbench.harness.progress import Reporter, reporter_for
from servingbench.harness.queueing import dd1_capacity_rps, md1_rate_for_quantile
from servingbench.harness.record import RunIdentity, RunRecord, StepVerdict
from servingbench.harness.servers import (
    IDLE_TIMEOUT_S,
    Drain,
    LocalStarter,
    ServerStarter,
    StartedServer,
    TargetStarter,
    wait_until_idle,
)
from servingbench.harness.speed import prepare_memory_probe
from servingbench.loadtests.scenarios import USER_CLASS_BY_KIND, LoadSpec
from servingbench.servers.launch import ServerConfig, launch_command
from servingbench.servers.registry import baseline_of
from servingbench.shared_model.samples import request_bodies
from servingbench.units import US_PER_MS

__all__ = [
    "BenchmarkInterrupted",
    "HarnessError",
    "Target",
    "build_payloads",
    "config_order",
    "plan_targets",
    "run_benchmark",
    "theory_rps",
    "url_targets",
]

MODEL_INFO_TIMEOUT_S = 5.0
COMMAND_PORT_PLACEHOLDER = 0  # configs[].command shows port 0: each start picks a free port
TARGET_MODEL_NAME = "target"
MIN_SERVICE_PROBE_USERS = 2  # closed-loop runs with at least this many users keep a one-at-a-time server busy
SEED_SPAN = 1_000_003
MAX_SERVERS_UP = 16
"""Up to this many servers (configs x models) stay up at once, so every repetition measures every model, interleaved;
a larger plan runs its models one after another (each model's configs still interleaved)."""
WINDOW_STRETCH = 3.0
"""A closed-loop window stretches to at most this many times ``duration_s`` to reach ``min_requests``."""
WINDOW_MARGIN = 1.5
"""...aiming at this many times ``min_requests`` from the previous repetition's rate (rates move between runs)."""
PILOT_USERS = 32
"""Closed-loop users of the pilot run that sets a curve's grid when the plan measures no closed-loop peak first."""
CEILING_FRAMEWORK, CEILING_SERVER, CEILING_MODEL, CEILING_FEATURES = "asgi", "uvicorn", "synthetic:cpu_us=0", 10
"""The server the load generator's ceiling is measured against: the bare ASGI floor on its event loop, a model
that does nothing; what it takes to answer is as little as this harness can serve."""
CEILING_RATES = (300.0, 600.0, 1200.0, 2400.0)
"""Offered rates (req/s) of the ceiling probe, taken in increasing order; the first missed ends it."""
GENERATOR_RETRIES = 1
"""A curve step whose load generator fell behind is run again this many times before the rate counts as beyond
what this generator can offer."""

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


def config_order(seed: int, model: str, repetition: int, measurement: int, names: Sequence[str]) -> list[str]:
    """The order in which the configs ``names`` run ``measurement`` (its index in the model's list) of ``model`` in
    ``repetition``: a shuffle seeded by all four, so the same plan and seed give the same order, and no config is
    always measured first or right after the same neighbour."""
    rng = random.Random(f"{seed}:{model}:{repetition}:{measurement}")
    return rng.sample(list(names), len(names))


def run_seed(plan_seed: int, model: str, repetition: int, scenario: str) -> int:
    """The seed of every config's run of ``scenario`` (a curve step: its rate's scenario) in ``repetition``: the same
    for all configs of the repetition, so each is offered the same arrival schedule and the same bodies in the same
    order; different across repetitions and scenarios."""
    return plan_seed + zlib.crc32(f"{model}:{repetition}:{scenario}".encode()) % SEED_SPAN


def build_payloads(measurement: Measurement, model_doc: Mapping[str, Any], seed: int) -> tuple[bytes, ...]:
    """The request bodies of ``measurement``: the model's sample rows (its ``GET /model`` document) in a seeded order,
    one row a body for /predict, ``batch_size`` rows for /predict/batch; a model without sample rows gets the one
    row 0.0, 0.1, ... (see ``shared_model.samples.request_bodies``)."""
    return request_bodies(model_doc, endpoint=measurement.endpoint, batch_size=measurement.batch_size, seed=seed)


def theory_rps(arrivals: str, service_s: float, slo_p99_ms: float) -> tuple[str, float]:
    """Queueing theory's capacity of one server with a fixed service time ``service_s`` (seconds): with Poisson
    arrivals the M/D/1 rate whose p99 time in system is ``slo_p99_ms``, with constant spacing 1 / service time
    (D/D/1). Returns (model name, requests/s)."""
    if arrivals == "constant":
        return "D/D/1", dd1_capacity_rps(service_s=service_s)
    return "M/D/1", md1_rate_for_quantile(target_s=slo_p99_ms / US_PER_MS, service_s=service_s)


def _fetch_model(base_url: str) -> dict[str, Any]:
    """The server's ``GET /model`` document (name, version, sha256, input schema, sample rows...)."""
    with _OPENER.open(base_url + "/model", timeout=MODEL_INFO_TIMEOUT_S) as response:
        info: dict[str, Any] = json.loads(response.read())
    n_features = info.get("n_features") if isinstance(info, dict) else None
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"GET /model gave no usable n_features: {n_features!r}")
    return info


# --- one model block: its servers, up for all its repetitions ---------------------------------------------------


@dataclass
class _Slot:
    """One config's server for the model being measured: up (``server``), or why it is not (``down``)."""

    target: Target
    server: StartedServer | None = None
    model_doc: dict[str, Any] | None = None
    down: str | None = None
    log_tail: str | None = None

    def fail(self, reason: str, tail: str | None = None) -> None:
        self.server, self.down, self.log_tail = None, reason, tail or self.log_tail


@dataclass
class _Curves:
    """A model's capacity measurement: the grid (fixed at its first repetition) and each config's peak."""

    grid: tuple[float, ...] | None = None
    entries: int = 0


@dataclass
class _Bench:
    """State of one benchmark: the plan, the load generator, the bundle being written, the run counter."""

    plan: Plan
    load: Load
    writer: BundleWriter
    reporter: Reporter
    starters: Mapping[str, ServerStarter]
    target_mode: bool
    costs: RunCosts = field(default_factory=RunCosts)
    ceiling_starter: ServerStarter | None = None
    speed_cpus: tuple[int, ...] = ()
    order: int = 0
    sessions: int = 0
    curves: dict[tuple[str, str], _Curves] = field(default_factory=dict)
    _curve_budget_s: float = 0.0

    @property
    def gates(self) -> Gates:
        return Gates(self.plan.error_rate_limit, self.plan.min_requests, self.target_mode)

    def run_all(self, targets: Sequence[Target]) -> None:
        models = [_target_model(self.plan)] if self.target_mode else list(self.plan.models)
        runs = sum(
            len(targets) * self.plan.repetitions_of(item) * expected_runs(self.plan, item)
            for model in models
            for item in self.plan.measurements(model)
        )
        estimate = estimate_seconds(
            self.plan,
            configs=len(targets),
            run_overhead_s=self.costs.run_overhead_s,
            start_s=self.costs.start_s,
            window_share=self.costs.window_share,
        )
        self.reporter.start(runs, estimate)
        if self.ceiling_starter is not None and any(
            item.kind == "capacity" for model in models for item in self.plan.measurements(model)
        ):
            self._measure_ceiling(self.ceiling_starter)
        together = len(models) * len(targets) <= MAX_SERVERS_UP or len(targets) == 1
        for group in [models] if together else [[model] for model in models]:
            self._block(group, targets)

    def _measure_ceiling(self, starter: ServerStarter) -> None:
        """How fast this load generator can offer open-loop arrivals on time, measured against a bare ASGI server
        doing nothing, before any curve: recorded in the bundle's environment and printed."""
        if not isinstance(self.load, LoadSession):
            return
        self.reporter.begin("the load generator's own ceiling")
        config = ServerConfig(CEILING_FRAMEWORK, CEILING_SERVER, 1, None, "async")
        log_path = self.writer.dir / "servers" / "ceiling" / "server.log"
        body = json.dumps({"features": [0.0] * CEILING_FEATURES}).encode()
        try:
            with starter.start(config, model_spec=CEILING_MODEL, session_id="ceiling", log_path=log_path) as server:
                ceiling = generator_ceiling(
                    server.base_url,
                    rates=CEILING_RATES,
                    payloads=(body,),
                    out_dir=self.writer.dir / "ceiling",
                    session=self.load,
                )
        except (ServerStartError, LoadgenError) as exc:
            self.reporter.note(f"load generator ceiling: not measured ({str(exc).splitlines()[0]})")
            return
        entry = ceiling.to_json()
        self.writer.document["environment"]["load_generator_ceiling"] = entry
        self.writer.save()
        found = entry["ceiling_rps"]
        limit = f"up to {found:g} req/s" if found else "not even at the lowest rate tried"
        more = " (the highest rate tried)" if found and not entry["limited"] else ""
        self.reporter.note(
            f"load generator ceiling on this machine: it keeps its open-loop schedule (p99 send lag <= "
            f"{entry['max_send_lag_ms']:g} ms) {limit}{more}, against a bare ASGI server"
        )

    # --- servers -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _servers(self, model: ModelPlan, targets: Sequence[Target]) -> Iterator[dict[str, _Slot]]:
        """Start every config's server for ``model`` (in a shuffled order); stop them all on exit, however it exits."""
        slots = {target.name: _Slot(target) for target in targets}
        names = config_order(self.plan.seed, model.name, -1, -1, list(slots))
        with contextlib.ExitStack() as stack:
            for name in names:
                self._start(stack, model, slots[name])
            yield slots

    def _start(self, stack: contextlib.ExitStack, model: ModelPlan, slot: _Slot) -> None:
        self.sessions += 1
        session_id = f"s{self.sessions:03d}"
        target = slot.target
        self.reporter.begin(f"{target.name} · {model.name} · starting")
        started = time.monotonic()
        session = {"id": session_id, "config": target.name, "model": model.name, "start_s": None, "failed": None}
        try:
            server = stack.enter_context(
                self.starters[target.name].start(
                    target.config,
                    model_spec=model.spec,
                    session_id=session_id,
                    log_path=self._server_log(session_id),
                )
            )
        except ServerStartError as exc:
            slot.fail(f"server failed to start: {exc.reason}", exc.log_tail)
            self.writer.add_session({**session, "failed": slot.down})
            self.reporter.advance(self.costs.start_s)
            return
        self.writer.add_session({**session, "start_s": round(time.monotonic() - started, 3)})
        self.reporter.advance(self.costs.start_s)
        try:
            slot.model_doc = _fetch_model(server.base_url)
        except (OSError, ValueError) as exc:
            slot.fail(f"GET /model failed: {exc}", server.tail())
            return
        slot.server, slot.down = server, None
        if model.name not in self.writer.models:
            self.writer.add_model(model.name, _model_entry(model, slot.model_doc))

    def _server_log(self, session_id: str) -> Path:
        return self.writer.dir / "servers" / session_id / "server.log"

    def _log_artifact(self, server: StartedServer | None) -> dict[str, Path]:
        path = server.log_path if server is not None else None
        return {"server_log": path} if path is not None and path.exists() else {}

    # --- the block ------------------------------------------------------------------------------------------------

    def _block(self, models: Sequence[ModelPlan], targets: Sequence[Target]) -> None:
        """Every repetition of ``models`` with all their servers up at once: each repetition measures every model on
        every config (so two models on one stack compare as pairs too); servers restart every `restart_every`."""
        restart = self.plan.restart_every
        repetition = 0
        total = self.plan.total_repetitions  # the last `capacity_extra_repetitions` of them measure curves only
        while repetition < total:
            last = min(total, repetition + restart) if restart else total
            with contextlib.ExitStack() as stack:
                slots = {model.name: stack.enter_context(self._servers(model, targets)) for model in models}
                for rep in range(repetition, last):
                    for model in models:
                        for index, measurement in enumerate(self.plan.measurements(model)):
                            if self.plan.measures_in(measurement, rep):
                                self._measure_all(model, measurement, index, rep, slots[model.name])
            repetition = last

    def _measure_all(
        self, model: ModelPlan, measurement: Measurement, index: int, rep: int, slots: Mapping[str, _Slot]
    ) -> None:
        order = config_order(self.plan.seed, model.name, rep, index, list(slots))
        if measurement.kind == "capacity":
            grid = self._grid(model, measurement, rep, order, slots)
            for name in order:
                self._curve(model, measurement, rep, slots[name], grid)
            return
        for name in order:
            self._run(model, measurement, rep, slots[name])

    def _identity(
        self, model: ModelPlan, measurement: Measurement, rep: int, slot: _Slot, warmup_s: float
    ) -> RunIdentity:
        self.order += 1
        config, target = slot.target.config, slot.target
        return RunIdentity(
            id=f"r{self.order:04d}",
            order=self.order,
            config=target.name,
            framework=config.framework if config else None,
            server=config.server if config else None,
            route=target.route,
            workers=config.workers if config else None,
            threads=config.effective_threads if config else None,
            model=measurement.model,
            model_spec=model.spec or None,
            scenario=measurement.scenario,
            kind=measurement.kind,
            endpoint=measurement.endpoint,
            batch_size=measurement.batch_size,
            concurrency=measurement.concurrency,
            target_rps=measurement.target_rps,
            repetition=rep,
            session=slot.server.session_id if slot.server else "-",
            warmup_s=warmup_s,
        )

    def _run(self, model: ModelPlan, measurement: Measurement, rep: int, slot: _Slot) -> RunRecord:
        """Measure one closed- or open-loop run of ``slot``'s config and record it."""
        return self._record(self._measured(model, measurement, rep, slot, step=False, warmup_s=self.plan.warmup_s))

    def _measured(
        self, model: ModelPlan, shape: Measurement, rep: int, slot: _Slot, *, step: bool, warmup_s: float
    ) -> RunRecord:
        """Measure one run of ``slot``'s config (a curve step when ``step``), after ``warmup_s`` of load, without
        writing it."""
        identity = self._identity(model, shape, rep, slot, warmup_s)
        self.reporter.begin(f"{slot.target.name} · {model.name} · {shape.scenario} · rep {rep + 1}")
        server = slot.server
        if server is None or slot.model_doc is None:
            return RunRecord(identity).failed(slot.down or "server not running", log_tail=slot.log_tail)
        seed = run_seed(self.plan.seed, model.name, rep, shape.scenario)
        payloads = build_payloads(shape, slot.model_doc, seed)
        if step and shape.target_rps:
            window_s = self._step_window_s(shape.target_rps)
        else:
            window_s = self._window_cap_s(model, shape, slot.target.name, rep)
        by_count = not step and shape.kind == "closed" and self.plan.window_requests > 0

        def spec() -> LoadSpec:
            return LoadSpec(
                base_url=server.base_url,
                endpoint=shape.endpoint,
                payloads=payloads,
                kind="open" if shape.kind == "open" else "closed",
                users=shape.users,
                rate=shape.target_rps,
                arrivals=shape.arrivals,
                warmup_s=warmup_s,
                duration_s=window_s,
                target_requests=self.plan.window_requests if by_count else None,
                min_duration_s=min(self.plan.min_duration_s, window_s) if by_count else None,
                seed=seed,
                allow_remote=self.target_mode,
            )

        record = self._measure(identity, spec, server, step=step)
        if server.died():
            slot.fail(f"server died earlier in this model's runs ({identity.id})", server.tail())
        return record

    def _window_cap_s(self, model: ModelPlan, shape: Measurement, config: str, rep: int) -> float:
        """The longest this run's window may last: ``duration_s``, stretched (at most `WINDOW_STRETCH` times) when
        the same config and scenario ran too slowly in the previous repetition to reach ``min_requests`` within it,
        so a slower machine gets longer windows rather than invalid runs."""
        cap = self.plan.duration_s
        earlier = [
            float(run["rps"])
            for run in self.writer.runs
            if (run["model"], run["scenario"], run["config"]) == (model.name, shape.scenario, config)
            and run["repetition"] < rep
            and isinstance(run.get("rps"), int | float)
            and run["rps"] > 0
        ]
        if not earlier:
            return cap
        wanted = WINDOW_MARGIN * self.plan.min_requests / earlier[-1]
        return min(WINDOW_STRETCH * cap, max(cap, wanted))

    def _step_window_s(self, rate: float) -> float:
        """A step's window: about `capacity_step_requests` requests, within [min_duration_s, capacity_max_step_s].

        A count, not seconds: the p99 needs the requests, and a longer window near the knee only samples more of the
        machine's speed swings in the same step (a floor of ``duration_s`` made most steps twice as long as their
        request count needed, time that now buys more repetitions)."""
        wanted = self.plan.capacity_step_requests / rate
        return min(self.plan.capacity_max_step_s, max(self.plan.min_duration_s, wanted))

    def _measure(
        self, identity: RunIdentity, spec: Callable[[], LoadSpec], server: StartedServer, *, step: bool
    ) -> RunRecord:
        try:
            return measure(
                identity,
                spec,
                server,
                self.load,
                run_dir=self.writer.run_dir(identity.id),
                gates=self.gates,
                step=step,
                server_log=self._log_artifact(server),
                speed_cpus=self.speed_cpus,
                memory_steps=self.plan.memory_probe_steps,
            )
        except RunInterrupted as stop:
            self.writer.add_run(stop.record.to_json(relative_to=self.writer.dir))
            raise

    def _record(self, record: RunRecord, *, estimate_s: float | None = None) -> RunRecord:
        self.writer.add_run(record.to_json(relative_to=self.writer.dir))
        if estimate_s is None:
            # The cost the plan's estimate counted for this run: charging the window's cap instead made the time left
            # reach 0 with runs to go.
            kind = record.identity.kind
            estimate_s = run_cost_s(self.plan, kind, self.costs.window_share) + self.costs.run_overhead_s
        self.reporter.advance(estimate_s, _run_line(record))
        return record

    # --- capacity curves ------------------------------------------------------------------------------------------

    def _grid(
        self, model: ModelPlan, measurement: Measurement, rep: int, order: Sequence[str], slots: Mapping[str, _Slot]
    ) -> tuple[float, ...] | None:
        """The model's grid: fixed from the configs' closed-loop peaks the first time the curve is measured (with a
        pilot run per config when the plan measured no closed-loop run of the same shape before)."""
        state = self.curves.setdefault((model.name, measurement.scenario), _Curves())
        if state.grid is None and measurement.grid:
            extra = (self.plan.traffic_rps,) if self.plan.traffic_rps > 0 else ()
            state.grid = tuple(sorted({*measurement.grid, *extra}))
        if state.grid is not None:
            return state.grid
        peaks = {name: self._peak(name, model, measurement, rep) for name in order}
        missing = [name for name, peak in peaks.items() if peak is None and slots[name].server is not None]
        for name in missing:
            pilot = replace(
                measurement,
                scenario=f"{measurement.scenario}-pilot-c{PILOT_USERS}",
                kind="closed",
                users=PILOT_USERS,
                concurrency=PILOT_USERS,
            )
            record = self._run(model, pilot, rep, slots[name])
            peaks[name] = record.rps if record.valid else None
        known = [peak for peak in peaks.values() if peak is not None]
        if not known:
            return None
        extra = (self.plan.traffic_rps,) if self.plan.traffic_rps > 0 else ()
        state.grid = rate_grid(known, points=self.plan.capacity_points, extra=extra)
        self.reporter.note(
            f"{model.name} {measurement.scenario}: offered-rate grid {', '.join(f'{rate:g}' for rate in state.grid)} "
            "req/s, shared by every config"
        )
        return state.grid

    def _peak(
        self, config: str, model: ModelPlan, measurement: Measurement, rep: int, *, users: int = 1
    ) -> float | None:
        """The highest valid closed-loop throughput of ``config`` in repetition ``rep`` with ``measurement``'s shape and
        at least ``users`` users (pilot runs included); None when there is none."""
        rates = [
            float(run["rps"])
            for run in self.writer.runs
            if run["config"] == config
            and run["model"] == model.name
            and run["repetition"] == rep
            and run["kind"] == "closed"
            and run["valid"]
            and (run["endpoint"], run["batch_size"]) == (measurement.endpoint, measurement.batch_size)
            and (run.get("concurrency") or 0) >= users
            and isinstance(run.get("rps"), int | float)
        ]
        return max(rates, default=None)

    def _usual_peak(self, config: str, model: ModelPlan, measurement: Measurement) -> float | None:
        """The median over repetitions of ``config``'s closed-loop peak (:meth:`_peak`); None without one."""
        found = [
            peak
            for rep in sorted({int(run["repetition"]) for run in self.writer.runs if run["config"] == config})
            if (peak := self._peak(config, model, measurement, rep)) is not None
        ]
        return float(statistics.median(found)) if found else None

    def _curve(
        self, model: ModelPlan, measurement: Measurement, rep: int, slot: _Slot, grid: tuple[float, ...] | None
    ) -> None:
        """Climb the grid on one config in one repetition; every step is a run, the curve a capacity entry."""
        state = self.curves[(model.name, measurement.scenario)]
        state.entries += 1
        curve_id = f"k{len(self.writer.capacity) + 1:03d}"
        points: list[CurvePoint] = []
        stop = "the climb ended"
        peak = self._peak(slot.target.name, model, measurement, rep)
        if peak is None and rep >= self.plan.repetitions:  # it measures curves only: the config's usual peak
            peak = self._usual_peak(slot.target.name, model, measurement)
        must = (self.plan.traffic_rps,) if self.plan.traffic_rps > 0 else ()
        # The plan's estimate counted this curve as `measurement_cost_s`; its steps are charged against that, the rest
        # when it ends, so a short or long climb does not shift the time left of the runs still to come.
        per_step = run_cost_s(self.plan, "capacity", self.costs.window_share) + self.costs.run_overhead_s
        self._curve_budget_s = measurement_cost_s(self.plan, measurement, per_step)
        try:
            if grid is None or slot.server is None:
                stop = slot.down or "no closed-loop peak to place the grid"
            else:
                stop = self._climb(model, measurement, rep, slot, grid, points, curve_id, peak, must)
        except KeyboardInterrupt:
            self._add_curve(curve_id, model, measurement, rep, slot, grid, points, "interrupted (Ctrl-C)")
            raise
        self._add_curve(curve_id, model, measurement, rep, slot, grid, points, stop)
        self.reporter.advance(self._curve_budget_s)
        self._curve_budget_s = 0.0

    def _climb(
        self,
        model: ModelPlan,
        measurement: Measurement,
        rep: int,
        slot: _Slot,
        grid: tuple[float, ...],
        points: list[CurvePoint],
        curve_id: str,
        peak: float | None,
        must: Sequence[float],
    ) -> str:
        """Measure the config's steps until :func:`next_rate` says the curve is done; returns why it stopped."""
        resolution = self.plan.capacity_resolution
        while (rate := next_rate(grid, points, peak=peak, must=must, resolution=resolution)) is not None:
            # The long warm-up is for the curve's first step only; a generator-limited first step's re-run follows a
            # warm-up and a window of load already.
            midpoint = is_midpoint(grid, points, rate)
            point = self._step(model, measurement, rep, slot, rate, curve_id, first=not points)
            point = replace(point, midpoint=True) if midpoint else point
            points.append(point)
            state = self.curves[(model.name, measurement.scenario)]
            if state.grid is not None and not midpoint and rate not in state.grid:
                # Climbed past the grid: later curves share the rate. A midpoint stays this curve's own.
                state.grid = tuple(sorted({*state.grid, rate}))
            if slot.server is None:
                return slot.down or "the server stopped"
            if (
                point.generator_limited
                and sum(p.rate == rate and p.generator_limited for p in points) > GENERATOR_RETRIES
            ):
                return f"{GENERATOR_LIMIT} limit: it could not keep the schedule at {rate:g} req/s"
            if not point.ok:
                drain = self._drain(slot)
                points[-1] = replace(point, drain_s=round(drain.seconds, 3), drain_backlog=drain.backlog)
                if not drain.idle:
                    return (
                        f"the server did not drain within {IDLE_TIMEOUT_S:g} s after {point.run}: {drain.waiting_for}"
                    )
        return "the climb ended"

    def _drain(self, slot: _Slot) -> Drain:
        """After a failed step, wait until the server is drained; a server that does not drain is down."""
        server = slot.server
        if server is None:
            return Drain(False, 0.0, waiting_for="the server is down")
        drain = wait_until_idle(server.base_url, pid=server.pid)
        if not drain.idle and server.died():
            slot.fail(f"the server died while draining (exit code {server.exit_code()})", server.tail())
        elif not drain.idle:
            slot.fail(
                f"the server did not drain within {IDLE_TIMEOUT_S:g} s (still busy: {drain.waiting_for})", server.tail()
            )
        return drain

    def _step(
        self,
        model: ModelPlan,
        measurement: Measurement,
        rep: int,
        slot: _Slot,
        rate: float,
        curve_id: str,
        *,
        first: bool = False,
    ) -> CurvePoint:
        shape = replace(
            measurement,
            scenario=rate_scenario(measurement.scenario, rate),
            kind="open",
            target_rps=rate,
            users=inflight_cap(rate, self.plan.slo_p99_ms),
        )
        warmup_s = step_warmup_s(self.plan, first=first)
        record = self._measured(model, shape, rep, slot, step=True, warmup_s=warmup_s)
        result = record.result
        if result is None or record.status != "ok":
            verdict = StepVerdict(curve_id, False, record.invalid_reason, generator_limited=False)
            self._record(record.with_step(verdict), estimate_s=self._step_estimate(rate, warmup_s))
            return CurvePoint(rate, None, False, run=record.identity.id, reason=record.invalid_reason)
        judged = judge_step(
            rate,
            result,
            slo_p99_ms=self.plan.slo_p99_ms,
            max_error_rate=self.plan.error_rate_limit,
            min_requests=self.plan.min_requests,
            generator_problems=saturation_problems(result.generator_cpu_pct),
        )
        verdict = StepVerdict(curve_id, judged.ok, judged.reason, judged.generator_limited)
        self._record(record.with_step(verdict), estimate_s=self._step_estimate(rate, warmup_s))
        return CurvePoint(
            rate, judged.p99_ms, judged.ok, judged.generator_limited, judged.gross, record.identity.id, judged.reason
        )

    def _step_estimate(self, rate: float, warmup_s: float) -> float:
        """A step's share of its curve's planned cost: its own estimate, within what is left of the curve's."""
        charge = min(self._curve_budget_s, warmup_s + self._step_window_s(rate) + self.costs.run_overhead_s)
        self._curve_budget_s -= charge
        return charge

    def _add_curve(
        self,
        curve_id: str,
        model: ModelPlan,
        measurement: Measurement,
        rep: int,
        slot: _Slot,
        grid: tuple[float, ...] | None,
        points: Sequence[CurvePoint],
        stop: str,
    ) -> None:
        fit = fit_capacity(points, self.plan.slo_p99_ms)
        entry: dict[str, Any] = {
            "id": curve_id,
            "config": slot.target.name,
            "model": model.name,
            "scenario": measurement.scenario,
            "repetition": rep,
            "slo_p99_ms": self.plan.slo_p99_ms,
            "arrivals": measurement.arrivals,
            "method": "curve",
            "grid": _entry_grid(grid, points),
            **fit.to_json(),
            "converged": fit.capacity_rps is not None,
            "stop_reason": stop,
            "limited_by": GENERATOR_LIMIT if stop.startswith(GENERATOR_LIMIT) and fit.censored == "above" else None,
            "steps": [point.to_json() for point in points],
        }
        entry.update(self._theory(slot, model, measurement, rep))
        self.writer.add_capacity(entry)
        self.reporter.note(_curve_line(slot.target.name, model.name, measurement, rep, fit, stop))

    def _theory(self, slot: _Slot, model: ModelPlan, measurement: Measurement, rep: int) -> dict[str, Any]:
        """Queueing theory beside the measured capacity, where it applies: one server serving one request at a time,
        whose fixed service time is 1 / its closed-loop peak with enough users to keep it always busy."""
        none: dict[str, Any] = {"service_ms": None, "theory": None, "theory_rps": None}
        config = slot.target.config
        if config is None or config.workers * config.inflight_per_worker() != 1:
            return none
        peak = self._peak(slot.target.name, model, measurement, rep, users=MIN_SERVICE_PROBE_USERS)
        if peak is None:
            return none
        service_s = 1.0 / peak
        name, rate = theory_rps(measurement.arrivals, service_s, self.plan.slo_p99_ms)
        return {"service_ms": round(service_s * 1e3, 4), "theory": name, "theory_rps": round(rate, 3)}


MODEL_ENTRY_KEYS = (
    "name",
    "version",
    "sha256",
    "n_features",
    "feature_names",
    "sklearn_version",
    "kind",
    "input",
    "output",
    "sample_source",
)
"""What the bundle keeps of a model's ``GET /model`` document (the sample rows themselves stay out)."""


def _entry_grid(grid: Sequence[float] | None, points: Sequence[CurvePoint]) -> list[float]:
    """The grid a curve entry records: the shared one and the rates it climbed to past either end; its midpoints stay
    out (they are this curve's own, not rates every config measured)."""
    return sorted({*(grid or ()), *(point.rate for point in points if not point.midpoint)})


def _model_entry(model: ModelPlan, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"spec": model.spec or None}
    entry.update({key: doc[key] for key in MODEL_ENTRY_KEYS if doc and key in doc})
    return entry


def _target_model(plan: Plan) -> ModelPlan:
    """A running target serves one model, whichever it is: every scenario of the plan runs against it."""
    return ModelPlan(TARGET_MODEL_NAME, "", tuple(scenario.name for scenario in plan.scenarios))


# --- lines for the terminal ----------------------------------------------------------------------------------------


def _ms(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _run_line(record: RunRecord) -> str:
    who = record.identity
    where = f"{who.config} {who.model} {who.scenario} rep {who.repetition + 1}"
    if record.status != "ok" or record.result is None:
        return f"{where}: {record.status.upper()}: {record.invalid_reason}"
    result = record.result
    p50 = result.histograms.total.get_value_at_percentile(50.0) / US_PER_MS
    p99 = result.histograms.total.get_value_at_percentile(99.0) / US_PER_MS
    figures = f"{result.rps:.1f} req/s, p50 {_ms(p50)} ms, p99 {_ms(p99)} ms"
    verdict = "ok" if record.valid else f"INVALID: {record.invalid_reason}"
    if record.step is not None:
        verdict += ", meets the SLO" if record.step.ok else f", fails: {record.step.reason}"
    return f"{where}: {figures}, {verdict}"


def _curve_line(config: str, model: str, measurement: Measurement, rep: int, fit: CurveFit, stop: str) -> str:
    where = f"{config} {model} {measurement.scenario} rep {rep + 1}"
    if fit.capacity_rps is not None:
        found = f"{fit.capacity_rps:.1f} req/s"
    elif fit.censored == "below":
        found = f"below {fit.bound_rps:g} req/s (no rate measured met the SLO)"
    elif fit.censored == "above":
        found = f"at least {fit.bound_rps:g} req/s (every rate measured met the SLO)"
    else:
        found = "not measured"
    return f"{where}: capacity at the SLO: {found} ({stop})"


# --- the bundle's static parts ---------------------------------------------------------------------------------


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
            "role": config.stack.role,
            "interface": config.stack.interface,
            "baseline": baseline_of(config.framework),
            "command": command.argv,
            "label": config.label(),
        }
    return entries


# --- entry point ----------------------------------------------------------------------------------------------


def _prepare(
    plan: Plan | Path | None, preset: str, targets: Sequence[str], allow_shared_cores: bool
) -> tuple[Plan, CpuAllocation, list[Target]]:
    """Everything that can be wrong before a process starts: the plan, the targets, the cores."""
    if not isinstance(plan, Plan):
        try:
            plan = load_plan(plan, preset)
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


def _starters(plan: Plan, allocation: CpuAllocation, targets: Sequence[Target]) -> dict[str, ServerStarter]:
    local = LocalStarter(allocation.server, plan.blas_threads, plan.startup_timeout_s)
    starters: dict[str, ServerStarter] = {}
    for target in targets:
        starters[target.name] = TargetStarter(target.url) if target.url is not None else local
    return starters


def run_benchmark(
    *,
    plan_path: Path | Plan | None,
    preset: str,
    out_root: Path,
    targets: list[str],
    load_workers: int | None,
    console: Console,
    allow_shared_cores: bool = False,
    remote: RemoteLoad | None = None,
    load: Load | None = None,
    starters: Mapping[str, ServerStarter] | None = None,
    locust_html: bool = False,
) -> Path:
    """Run the plan (a file, the built-in plan for None, or a :class:`Plan` already made), or measure ``targets``,
    write the bundle under ``out_root``; return its directory.

    ``load_workers``: Locust worker processes (default: one per load core; 1 runs Locust as one process).
    ``remote``: Locust workers on other machines (``servingbench load-worker``) that join every run; with any,
    ``load_workers`` may be 0. ``locust_html``: keep Locust's own HTML report of every run (about 1 MB each).
    ``load`` and ``starters`` replace the real load generator (one Locust session for the whole benchmark, its
    processes' logs in ``load/``) and server starters (tests).
    Raises :class:`HarnessError` before anything starts when the plan, the targets or the cores are unusable,
    and :class:`BenchmarkInterrupted` (a ``KeyboardInterrupt``) after Ctrl-C, once the partial bundle is written.
    """
    plan, allocation, chosen = _prepare(plan_path, preset, targets, allow_shared_cores)
    target_mode = bool(targets)
    remote_workers = remote.workers if remote else 0
    if remote_workers < 0:
        raise HarnessError(f"--remote-load-workers must not be negative, got {remote_workers}")
    minimum = 0 if remote_workers else 1
    if load_workers is not None and load_workers < minimum:
        raise HarnessError(f"--load-workers must be at least {minimum}, got {load_workers}")
    if remote is not None and remote.bind != "127.0.0.1" and not remote_workers:
        raise HarnessError("--master-bind beyond loopback needs --remote-load-workers")
    workers = load_workers if load_workers is not None else max(1, len(allocation.load))
    environment = collect_environment(
        allocation, blas_threads=plan.blas_threads, memory_probe_steps=plan.memory_probe_steps
    )
    if plan.memory_probe_steps > 0:
        prepare_memory_probe()
    costs = learned_costs(out_root, environment)
    fairness = fairness_rules(plan, allocation, chosen, target_mode)
    if remote_workers:
        fairness.append(
            f"{remote_workers} remote load worker(s) on other machines: their CPU is not measured "
            "(generator CPU figures cover local Locust processes only)"
        )
    writer = BundleWriter(
        out_root,
        preset=plan.preset,
        seed=plan.seed,
        environment={
            **environment,
            "load_workers": workers,
            "remote_load_workers": remote_workers,
        },
        plan=plan.to_json(),
        fairness=fairness,
        configs=_config_entries(plan, chosen),
    )
    writer.save()
    console.print(f"servingbench: plan {plan.source} (preset {plan.preset}), results in {writer.dir}", highlight=False)
    reporter = reporter_for(console)
    try:
        with contextlib.ExitStack() as stack:
            if load is None:
                load = stack.enter_context(
                    LoadSession(
                        writer.dir / "load",
                        cpus=allocation.load,
                        workers=workers,
                        remote_workers=remote_workers,
                        master_bind=remote.bind if remote else "127.0.0.1",
                        master_port=remote.port if remote else None,
                        locust_html=locust_html,
                    )
                )
            local = LocalStarter(allocation.server, plan.blas_threads, plan.startup_timeout_s)
            bench = _Bench(
                plan,
                load,
                writer,
                reporter,
                starters or _starters(plan, allocation, chosen),
                target_mode,
                costs,
                ceiling_starter=None if target_mode else local,
                speed_cpus=() if target_mode else allocation.server,
            )
            bench.run_all(chosen)
    except BaseException as exc:
        # Whatever stopped the plan, what was measured stays, marked incomplete.
        reporter.stop()
        writer.finish(complete=False, environment={"load_avg_after": load_average()})
        if isinstance(exc, KeyboardInterrupt):
            console.print(f"interrupted: partial results (complete: false) in {writer.dir}", highlight=False)
            raise BenchmarkInterrupted(writer.dir) from None
        raise
    reporter.stop()
    writer.finish(complete=True, environment={"load_avg_after": load_average()})
    console.print(f"results: {writer.dir}", highlight=False)
    return writer.dir
