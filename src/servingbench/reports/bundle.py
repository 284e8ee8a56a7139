"""Load and validate a results bundle directory (format described in ``docs/results-format.md``).

The bundle is the only input of the report and of compare, so loading is strict about what the
report needs (format, version, run identity, validity) and lenient about optional fields, which
default to ``None`` or empty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_ARRIVALS",
    "DEFAULT_CAPACITY_SCENARIO",
    "FORMAT_NAME",
    "RESULTS_FILE",
    "SUPPORTED_VERSIONS",
    "Bundle",
    "BundleError",
    "CapacityResult",
    "CapacityStep",
    "ColumnInfo",
    "ConfigInfo",
    "ModelInfo",
    "Run",
    "SessionInfo",
    "load_bundle",
]

FORMAT_NAME = "servingbench-results"
SUPPORTED_VERSIONS = (1,)
RESULTS_FILE = "results.json"
# What a capacity entry written before these fields existed meant: the plan's one search, Poisson arrivals.
DEFAULT_CAPACITY_SCENARIO = "capacity"
DEFAULT_ARRIVALS = "poisson"
CURVE_METHOD = "curve"
SEARCH_METHOD = "search"  # what a capacity entry without "method" is: a search, before curves
CENSORED_SIDES = ("below", "above")


class BundleError(Exception):
    """A bundle directory is missing, unreadable or not in a format this version reads. One line, fit for a terminal."""


@dataclass(frozen=True)
class ConfigInfo:
    """One server config of the plan. ``inflight_per_worker`` is how many requests one worker serves at once."""

    name: str
    label: str
    framework: str | None = None
    server: str | None = None
    route: str | None = None
    workers: int | None = None
    threads: int | None = None
    inflight_per_worker: int | None = None
    keepalive: bool | None = None
    command: tuple[str, ...] = ()
    role: str | None = None
    """ "equal-work", "variant" or "floor" (see ``servers/registry.py``); ``None`` in older bundles."""
    interface: str | None = None
    baseline: str | None = None
    """The framework this config's framework is measured against: its floor, or a variant's counterpart."""


@dataclass(frozen=True)
class ColumnInfo:
    """One input column of a model with named columns: its ``kind`` (number, integer, boolean, category, string)
    and, for a category, how many categories the model knows."""

    name: str
    kind: str
    nullable: bool = False
    categories: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What one of the plan's models is, from its server's ``GET /model``: ``spec`` is what the plan asked for.

    ``columns`` is empty for a model that takes a list of numbers; ``output_kind`` ("value", "label",
    "probabilities") and ``sample_source`` ("model": rows drawn from what the model records; "file NAME": real
    rows) are set for imported models only.
    """

    name: str
    spec: str | None = None
    model_name: str | None = None
    version: str | None = None
    sha256: str | None = None
    n_features: int | None = None
    kind: str | None = None
    columns: tuple[ColumnInfo, ...] = ()
    output_kind: str | None = None
    output_method: str | None = None
    classes: int | None = None
    sample_source: str | None = None

    @property
    def imported(self) -> bool:
        """True for a model imported with ``servingbench import-model`` (it records its output and sample rows)."""
        return self.output_kind is not None

    @property
    def samples_from_model(self) -> bool:
        """True when the load's rows were drawn from what the model records, not from real samples."""
        return self.sample_source == "model"


@dataclass(frozen=True)
class SessionInfo:
    """One server start: which config and model, seconds until ready, or why it failed."""

    id: str
    config: str
    model: str
    start_s: float | None = None
    failed: str | None = None


@dataclass(frozen=True)
class Run:
    """One measured run. Latencies are in milliseconds, rates in requests per second, memory in MB."""

    id: str
    config: str
    model: str
    scenario: str
    repetition: int
    valid: bool
    kind: str = "closed"
    order: int | None = None
    framework: str | None = None
    server: str | None = None
    route: str | None = None
    workers: int | None = None
    threads: int | None = None
    endpoint: str | None = None
    batch_size: int | None = None
    concurrency: int | None = None
    target_rps: float | None = None
    warmup_s: float | None = None
    duration_s: float | None = None
    requests: int = 0
    errors: int = 0
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    rps: float | None = None
    offered_rps: float | None = None
    achieved_rps: float | None = None
    late: int | None = None
    dropped: int | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    server_timing_ms: Mapping[str, float] = field(default_factory=dict)
    histograms: Mapping[str, str] = field(default_factory=dict)
    server_cpu_s: float | None = None
    server_cpu_us_per_request: float | None = None
    server_rss_mb: float | None = None
    server_rss_mb_per_worker: tuple[float, ...] = ()
    server_pss_mb_per_worker: tuple[float, ...] = ()
    generator_cpu_pct: float | None = None
    invalid_reason: str | None = None
    status: str = "ok"
    log_tail: str | None = None
    artifacts: Mapping[str, str] = field(default_factory=dict)
    search: str | None = None
    step_ok: bool | None = None
    step_reason: str | None = None
    session: str | None = None
    wall_s: float | None = None
    speed_probe_us: float | None = None
    memory_probe_us: float | None = None
    target_requests: int | None = None
    ended_by: str | None = None

    @property
    def counted(self) -> bool:
        """True when the run counts: valid and finished ``ok``."""
        return self.valid and self.status == "ok"

    @property
    def is_step(self) -> bool:
        """True for a step of a capacity search: its rate was chosen by the search, so it forms no scenario."""
        return self.search is not None


@dataclass(frozen=True)
class CapacityStep:
    """One offered rate (requests/s) tried by a capacity search, in the order measured.

    ``ok`` when p99 (ms) met the SLO under the stability rule; ``reason`` says why not. ``error_rate`` is a
    fraction (0.01 = 1 %). ``run`` is the id of the run record of the step, when it was recorded as one.
    """

    rate: float
    p99_ms: float | None
    error_rate: float | None
    ok: bool
    run: str | None
    achieved_rps: float | None = None
    late: int | None = None
    dropped: int | None = None
    requests: int | None = None
    reason: str | None = None
    generator_limited: bool = False
    """It failed only because the load generator fell behind: re-run, and not counted as the server's."""
    gross: bool = False
    drain_s: float | None = None
    """After a failed step: seconds until the server was drained (CPU quiet, nothing waiting at its socket, probe
    answered in time)."""
    drain_backlog: int | None = None
    """After a failed step: the most requests seen waiting at the server's socket while it drained."""

    def counted(self, runs: Mapping[str, Run]) -> bool:
        """The step counts as the server's: the load generator kept up and its run (if recorded in ``runs``, by id)
        is valid."""
        run = runs.get(self.run or "")
        return not self.generator_limited and (run is None or run.counted)


@dataclass(frozen=True)
class CapacityResult:
    """The capacity at the p99 SLO of one config, model and repetition (req/s).

    ``method`` "curve": every config climbed ``grid`` (rates shared by every config) and ``capacity_rps`` is where
    a monotone fit of p99 against the offered rate crosses ``slo_p99_ms``; ``censored`` "below" when no rate met the
    SLO (the capacity lies below ``bound_rps``, the lowest rate measured) or "above" when every rate measured met it
    (at least ``bound_rps``, the highest). ``method`` "search" (bundles before curves): ``capacity_rps`` is the
    highest rate that met the SLO, ``None`` when none did; it is only a lower bound when the search did not
    converge or ``limited_by`` names what failed first instead of the server (e.g. "load generator").
    :attr:`censoring`, :attr:`bound` and :attr:`measured_rps` read both the same way. ``theory_rps`` is what the
    queueing model ``theory`` (e.g. "M/D/1") predicts from the measured ``service_ms``.
    """

    config: str
    model: str
    repetition: int
    slo_p99_ms: float
    capacity_rps: float | None
    steps: tuple[CapacityStep, ...] = ()
    id: str | None = None
    scenario: str = DEFAULT_CAPACITY_SCENARIO
    arrivals: str = DEFAULT_ARRIVALS
    converged: bool = True
    stop_reason: str | None = None
    limited_by: str | None = None
    service_ms: float | None = None
    theory: str | None = None
    theory_rps: float | None = None
    method: str = SEARCH_METHOD
    grid: tuple[float, ...] = ()
    censored: str | None = None
    bound_rps: float | None = None
    fitted: tuple[tuple[float, float], ...] = ()

    @property
    def is_curve(self) -> bool:
        """True for a measured curve on a shared grid; False for a search (bundles before curves)."""
        return self.method == CURVE_METHOD

    @property
    def outcome(self) -> str:
        """What became of it, in words: "capacity", "lower bound" (at least a rate: a curve that met the SLO
        everywhere, or a search stopped early), "never met" (no rate measured met the SLO), "not measured" (no step
        ran: the server failed first) or, for a search, "unsettled" (a rate met the SLO, but not when re-measured)."""
        if self.is_curve:
            if self.capacity_rps is not None:
                return "capacity"
            return {"below": "never met", "above": "lower bound"}.get(self.censored or "", "not measured")
        if self.capacity_rps is not None:
            return "lower bound" if self.lower_bound else "capacity"
        if not self.steps:
            return "not measured"
        return "unsettled" if self.unsettled else "never met"

    @property
    def censoring(self) -> str | None:
        """ "below" (the capacity is under :attr:`bound`), "above" (at least :attr:`bound`), or ``None``."""
        return {"never met": "below", "lower bound": "above"}.get(self.outcome)

    @property
    def bound(self) -> float | None:
        """The rate a censored capacity is censored at: for a curve its ``bound_rps``; for a search, the lowest rate
        tried ("below") or the capacity that is only a lower bound ("above")."""
        side = self.censoring
        if side is None:
            return None
        if self.is_curve:
            return self.bound_rps
        if side == "above":
            return self.capacity_rps
        return min(step.rate for step in self.steps)

    @property
    def measured_rps(self) -> float | None:
        """The capacity when it is a value, not a bound (``None`` when censored or not measured)."""
        return self.capacity_rps if self.outcome == "capacity" else None

    @property
    def unsettled(self) -> bool:
        """A search only: no capacity although some rate met the SLO (it missed when re-measured, and the search ran
        out of steps before a lower rate passed consistently), so "never met" would be wrong."""
        return not self.is_curve and self.capacity_rps is None and any(step.ok for step in self.steps)

    @property
    def passed_above(self) -> bool:
        """A search only: some rate above ``capacity_rps`` met the SLO too but failed when re-measured (noise at the
        knee, or a disturbed step), so the confirmed capacity is a conservative figure. A curve's fit uses every
        step, so this never applies to it."""
        floor = self.capacity_rps
        return not self.is_curve and floor is not None and any(step.ok and step.rate > floor for step in self.steps)

    @property
    def lower_bound(self) -> bool:
        """True when ``capacity_rps`` is a rate that passed but the server may take more (a search that the generator
        limited, that did not converge, or where a higher rate passed once unconfirmed). A curve censored above has
        no ``capacity_rps``: see :attr:`censoring`."""
        return (
            not self.is_curve
            and self.capacity_rps is not None
            and (self.limited_by is not None or not self.converged or self.passed_above)
        )


@dataclass(frozen=True)
class Bundle:
    """A loaded results bundle. ``path`` is the bundle directory; artifact paths in runs are relative to it."""

    path: Path
    version: int
    complete: bool
    created: str | None
    finished: str | None
    preset: str | None
    seed: int | None
    environment: Mapping[str, Any]
    plan: Mapping[str, Any]
    fairness: tuple[str, ...]
    configs: Mapping[str, ConfigInfo]
    runs: tuple[Run, ...]
    capacity: tuple[CapacityResult, ...]
    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    sessions: tuple[SessionInfo, ...] = ()

    @property
    def traffic_rps(self) -> float | None:
        """The traffic the user expects (the plan's ``traffic_rps``, req/s), or ``None`` when not given (0)."""
        value = self.plan.get("traffic_rps")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and math.isfinite(value):
            return float(value)
        return None

    @property
    def fingerprint(self) -> str | None:
        """The environment fingerprint (sha256 hex), or ``None`` when the bundle has none."""
        value = self.environment.get("fingerprint")
        return value if isinstance(value, str) else None

    def label(self, config: str) -> str:
        """The human label of a config, falling back to its name."""
        info = self.configs.get(config)
        return info.label if info is not None else config

    @property
    def valid_runs(self) -> tuple[Run, ...]:
        """Runs that count: valid and finished ``ok``."""
        return tuple(run for run in self.runs if run.counted)

    @property
    def scenario_runs(self) -> tuple[Run, ...]:
        """Valid runs of the plan's scenarios: :attr:`valid_runs` less capacity-search steps.

        Steps run at rates the search picked, different per config and repetition, so they never form a verdict
        group, a summary row or a compared figure; the capacity entries summarise them.
        """
        return tuple(run for run in self.valid_runs if not run.is_step)

    @property
    def all_scenario_runs(self) -> tuple[Run, ...]:
        """Every run of the plan's scenarios, valid or not (no capacity-search steps)."""
        return tuple(run for run in self.runs if not run.is_step)

    @property
    def step_runs(self) -> tuple[Run, ...]:
        """Every capacity-search step run, valid or not, in bundle order."""
        return tuple(run for run in self.runs if run.is_step)

    @property
    def invalid_runs(self) -> tuple[Run, ...]:
        """Every run that does not count, whatever the reason."""
        return tuple(run for run in self.runs if not (run.valid and run.status == "ok"))


def load_bundle(bundle_dir: Path | str) -> Bundle:
    """Read and validate ``bundle_dir/results.json``; raise :class:`BundleError` with a one-line reason."""
    path = Path(bundle_dir)
    if not path.is_dir():
        raise BundleError(f"not a results bundle: {path} is not a directory")
    doc = _read_document(path / RESULTS_FILE)
    _check_format(doc, path)
    where = str(path / RESULTS_FILE)
    return Bundle(
        path=path,
        version=int(doc["version"]),
        complete=_bool(doc.get("complete", False), "complete", where),
        created=_opt_str(doc.get("created"), "created", where),
        finished=_opt_str(doc.get("finished"), "finished", where),
        preset=_opt_str(doc.get("preset"), "preset", where),
        seed=_opt_int(doc.get("seed"), "seed", where),
        environment=_mapping(doc.get("environment", {}), "environment", where),
        plan=_mapping(doc.get("plan", {}), "plan", where),
        fairness=tuple(_str(rule, "fairness[]", where) for rule in _list(doc.get("fairness", []), "fairness", where)),
        configs=_parse_configs(doc.get("configs", {}), where),
        runs=_parse_runs(doc.get("runs"), where),
        capacity=_parse_capacities(doc.get("capacity"), where),
        models=_parse_models(doc.get("models"), where),
        sessions=_parse_sessions(doc.get("sessions"), where),
    )


def _read_document(results: Path) -> dict[str, Any]:
    if not results.is_file():
        raise BundleError(f"not a results bundle: missing {results}")
    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {results}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{results} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{results} must hold a JSON object, found {type(doc).__name__}")
    return doc


def _check_format(doc: Mapping[str, Any], path: Path) -> None:
    if doc.get("format") != FORMAT_NAME:
        raise BundleError(f"{path / RESULTS_FILE}: format is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise BundleError(
            f"{path / RESULTS_FILE}: unsupported results format version {version!r} "
            f"(this servingbench reads version {supported}); re-run the benchmark or upgrade servingbench"
        )


def _parse_configs(raw: object, where: str) -> dict[str, ConfigInfo]:
    configs: dict[str, ConfigInfo] = {}
    for name, value in _mapping(raw, "configs", where).items():
        item = _mapping(value, f"configs.{name}", where)
        configs[name] = ConfigInfo(
            name=name,
            label=_opt_str(item.get("label"), "label", where) or name,
            framework=_opt_str(item.get("framework"), "framework", where),
            server=_opt_str(item.get("server"), "server", where),
            route=_opt_str(item.get("route"), "route", where),
            workers=_opt_int(item.get("workers"), "workers", where),
            threads=_opt_int(item.get("threads"), "threads", where),
            inflight_per_worker=_opt_int(item.get("inflight_per_worker"), "inflight_per_worker", where),
            keepalive=None if item.get("keepalive") is None else _bool(item.get("keepalive"), "keepalive", where),
            command=tuple(str(part) for part in _list(item.get("command") or [], "command", where)),
            role=_opt_str(item.get("role"), "role", where),
            interface=_opt_str(item.get("interface"), "interface", where),
            baseline=_opt_str(item.get("baseline"), "baseline", where),
        )
    return configs


def _parse_models(raw: object, where: str) -> dict[str, ModelInfo]:
    models: dict[str, ModelInfo] = {}
    for name, value in _mapping(raw or {}, "models", where).items():
        item = _mapping(value, f"models.{name}", where)
        at = f"{where}: models.{name}"
        schema = _mapping(item.get("input") or {}, "input", at)
        output = _mapping(item.get("output") or {}, "output", at)
        classes = output.get("classes")
        models[name] = ModelInfo(
            name=name,
            spec=_opt_str(item.get("spec"), "spec", at),
            model_name=_opt_str(item.get("name"), "name", at),
            version=_opt_str(item.get("version"), "version", at),
            sha256=_opt_str(item.get("sha256"), "sha256", at),
            n_features=_opt_int(item.get("n_features"), "n_features", at),
            kind=_opt_str(item.get("kind"), "kind", at),
            columns=tuple(_parse_column(column, at) for column in _list(schema.get("columns") or [], "columns", at)),
            output_kind=_opt_str(output.get("kind"), "output.kind", at),
            output_method=_opt_str(output.get("method"), "output.method", at),
            classes=len(_list(classes, "output.classes", at)) if classes is not None else None,
            sample_source=_opt_str(item.get("sample_source"), "sample_source", at),
        )
    return models


def _parse_column(raw: object, where: str) -> ColumnInfo:
    column = _mapping(raw, "input.columns[]", where)
    categories = column.get("categories")
    return ColumnInfo(
        name=_str(column.get("name"), "input.columns[].name", where),
        kind=_str(column.get("kind"), "input.columns[].kind", where),
        nullable=bool(column.get("nullable", False)),
        categories=len(_list(categories, "categories", where)) if categories is not None else None,
    )


def _parse_sessions(raw: object, where: str) -> tuple[SessionInfo, ...]:
    sessions: list[SessionInfo] = []
    for index, value in enumerate(_list(raw or [], "sessions", where)):
        item = _mapping(value, f"sessions[{index}]", where)
        at = f"{where}: sessions[{index}]"
        sessions.append(
            SessionInfo(
                id=_str(item.get("id"), "id", at),
                config=_str(item.get("config"), "config", at),
                model=_str(item.get("model"), "model", at),
                start_s=_opt_float(item.get("start_s"), "start_s", at),
                failed=_opt_str(item.get("failed"), "failed", at),
            )
        )
    return tuple(sessions)


def _parse_runs(raw: object, where: str) -> tuple[Run, ...]:
    if raw is None:
        raise BundleError(f"{where}: missing 'runs'")
    runs = tuple(_parse_run(item, f"{where}: runs[{index}]") for index, item in enumerate(_list(raw, "runs", where)))
    seen: set[str] = set()
    for run in runs:
        if run.id in seen:
            raise BundleError(f"{where}: duplicate run id {run.id!r}")
        seen.add(run.id)
    return runs


def _parse_run(raw: object, where: str) -> Run:
    item = _mapping(raw, "run", where)
    for key in ("id", "config", "model", "scenario", "repetition", "valid"):
        if key not in item:
            raise BundleError(f"{where}: missing required key {key!r}")
    return Run(
        id=_str(item["id"], "id", where),
        config=_str(item["config"], "config", where),
        model=_str(item["model"], "model", where),
        scenario=_str(item["scenario"], "scenario", where),
        repetition=_int(item["repetition"], "repetition", where),
        valid=_bool(item["valid"], "valid", where),
        kind=_opt_str(item.get("kind"), "kind", where) or "closed",
        order=_opt_int(item.get("order"), "order", where),
        framework=_opt_str(item.get("framework"), "framework", where),
        server=_opt_str(item.get("server"), "server", where),
        route=_opt_str(item.get("route"), "route", where),
        workers=_opt_int(item.get("workers"), "workers", where),
        threads=_opt_int(item.get("threads"), "threads", where),
        endpoint=_opt_str(item.get("endpoint"), "endpoint", where),
        batch_size=_opt_int(item.get("batch_size"), "batch_size", where),
        concurrency=_opt_int(item.get("concurrency"), "concurrency", where),
        target_rps=_opt_float(item.get("target_rps"), "target_rps", where),
        warmup_s=_opt_float(item.get("warmup_s"), "warmup_s", where),
        duration_s=_opt_float(item.get("duration_s"), "duration_s", where),
        requests=_opt_int(item.get("requests"), "requests", where) or 0,
        errors=_opt_int(item.get("errors"), "errors", where) or 0,
        errors_by_kind=_int_map(item.get("errors_by_kind"), "errors_by_kind", where),
        rps=_opt_float(item.get("rps"), "rps", where),
        offered_rps=_opt_float(item.get("offered_rps"), "offered_rps", where),
        achieved_rps=_opt_float(item.get("achieved_rps"), "achieved_rps", where),
        late=_opt_int(item.get("late"), "late", where),
        dropped=_opt_int(item.get("dropped"), "dropped", where),
        latency_ms=_float_map(item.get("latency_ms"), "latency_ms", where),
        server_timing_ms=_float_map(item.get("server_timing_ms"), "server_timing_ms", where),
        histograms=_str_map(item.get("histograms"), "histograms", where),
        server_cpu_s=_opt_float(item.get("server_cpu_s"), "server_cpu_s", where),
        server_cpu_us_per_request=_opt_float(item.get("server_cpu_us_per_request"), "server_cpu_us_per_request", where),
        server_rss_mb=_opt_float(item.get("server_rss_mb"), "server_rss_mb", where),
        server_rss_mb_per_worker=_float_tuple(item.get("server_rss_mb_per_worker"), "server_rss_mb_per_worker", where),
        server_pss_mb_per_worker=_float_tuple(item.get("server_pss_mb_per_worker"), "server_pss_mb_per_worker", where),
        generator_cpu_pct=_opt_float(item.get("generator_cpu_pct"), "generator_cpu_pct", where),
        invalid_reason=_opt_str(item.get("invalid_reason"), "invalid_reason", where),
        status=_opt_str(item.get("status"), "status", where) or "ok",
        log_tail=_opt_str(item.get("log_tail"), "log_tail", where),
        artifacts=_str_map(item.get("artifacts"), "artifacts", where),
        search=_opt_str(item.get("search"), "search", where),
        step_ok=None if item.get("step_ok") is None else _bool(item.get("step_ok"), "step_ok", where),
        step_reason=_opt_str(item.get("step_reason"), "step_reason", where),
        session=_opt_str(item.get("session"), "session", where),
        wall_s=_opt_float(item.get("wall_s"), "wall_s", where),
        speed_probe_us=_opt_float(item.get("speed_probe_us"), "speed_probe_us", where),
        memory_probe_us=_opt_float(item.get("memory_probe_us"), "memory_probe_us", where),
        target_requests=_opt_int(item.get("target_requests"), "target_requests", where),
        ended_by=_opt_str(item.get("ended_by"), "ended_by", where),
    )


def _parse_capacities(raw: object, where: str) -> tuple[CapacityResult, ...]:
    items = _list(raw or [], "capacity", where)
    results = tuple(_parse_capacity(item, f"{where}: capacity[{index}]") for index, item in enumerate(items))
    ids = [result.id for result in results if result.id is not None]
    if len(ids) != len(set(ids)):
        duplicate = next(name for name in ids if ids.count(name) > 1)
        raise BundleError(f"{where}: duplicate capacity id {duplicate!r}")
    return results


def _parse_capacity(raw: object, where: str) -> CapacityResult:
    item = _mapping(raw, "capacity", where)
    for key in ("config", "model", "slo_p99_ms"):
        if key not in item:
            raise BundleError(f"{where}: missing required key {key!r}")
    steps = tuple(_parse_step(step, where) for step in _list(item.get("steps") or [], "steps", where))
    converged = item.get("converged")
    censored = _opt_str(item.get("censored"), "censored", where)
    if censored is not None and censored not in CENSORED_SIDES:
        raise _fail("censored", '"below", "above" or null', censored, where)
    return CapacityResult(
        config=_str(item["config"], "config", where),
        model=_str(item["model"], "model", where),
        repetition=_opt_int(item.get("repetition"), "repetition", where) or 0,
        slo_p99_ms=_float(item["slo_p99_ms"], "slo_p99_ms", where),
        capacity_rps=_opt_float(item.get("capacity_rps"), "capacity_rps", where),
        steps=steps,
        id=_opt_str(item.get("id"), "id", where),
        scenario=_opt_str(item.get("scenario"), "scenario", where) or DEFAULT_CAPACITY_SCENARIO,
        arrivals=_opt_str(item.get("arrivals"), "arrivals", where) or DEFAULT_ARRIVALS,
        converged=True if converged is None else _bool(converged, "converged", where),
        stop_reason=_opt_str(item.get("stop_reason"), "stop_reason", where),
        limited_by=_opt_str(item.get("limited_by"), "limited_by", where),
        service_ms=_opt_float(item.get("service_ms"), "service_ms", where),
        theory=_opt_str(item.get("theory"), "theory", where),
        theory_rps=_opt_float(item.get("theory_rps"), "theory_rps", where),
        method=_opt_str(item.get("method"), "method", where) or SEARCH_METHOD,
        grid=tuple(sorted(_float(rate, "grid[]", where) for rate in _list(item.get("grid") or [], "grid", where))),
        censored=censored,
        bound_rps=_opt_float(item.get("bound_rps"), "bound_rps", where),
        fitted=tuple(_parse_fitted(pair, where) for pair in _list(item.get("fitted") or [], "fitted", where)),
    )


def _parse_fitted(raw: object, where: str) -> tuple[float, float]:
    pair = _list(raw, "fitted[]", where)
    if len(pair) != 2:
        raise _fail("fitted[]", "a [rate, p99 ms] pair", raw, where)
    return _float(pair[0], "fitted[][0]", where), _float(pair[1], "fitted[][1]", where)


def _parse_step(raw: object, where: str) -> CapacityStep:
    step = _mapping(raw, "steps[]", where)
    return CapacityStep(
        rate=_float(step.get("rate"), "rate", where),
        p99_ms=_opt_float(step.get("p99_ms"), "p99_ms", where),
        error_rate=_opt_float(step.get("error_rate"), "error_rate", where),
        ok=_bool(step.get("ok", False), "ok", where),
        run=_opt_str(step.get("run"), "run", where),
        achieved_rps=_opt_float(step.get("achieved_rps"), "achieved_rps", where),
        late=_opt_int(step.get("late"), "late", where),
        dropped=_opt_int(step.get("dropped"), "dropped", where),
        requests=_opt_int(step.get("requests"), "requests", where),
        reason=_opt_str(step.get("reason"), "reason", where),
        generator_limited=_bool(step.get("generator_limited", False), "generator_limited", where),
        gross=_bool(step.get("gross", False), "gross", where),
        drain_s=_opt_float(step.get("drain_s"), "drain_s", where),
        drain_backlog=_opt_int(step.get("drain_backlog"), "drain_backlog", where),
    )


def _fail(key: str, expected: str, value: object, where: str) -> BundleError:
    return BundleError(f"{where}: {key!r} must be {expected}, found {value!r}")


def _mapping(value: object, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, "an object", value, where)
    return value


def _list(value: object, key: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(key, "a list", value, where)
    return value


def _str(value: object, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value, where)
    return value


def _opt_str(value: object, key: str, where: str) -> str | None:
    return None if value is None else _str(value, key, where)


def _bool(value: object, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value, where)
    return value


def _int(value: object, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, "an integer", value, where)
    return value


def _opt_int(value: object, key: str, where: str) -> int | None:
    return None if value is None else _int(value, key, where)


def _float(value: object, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, "a finite number", value, where)
    return float(value)


def _opt_float(value: object, key: str, where: str) -> float | None:
    return None if value is None else _float(value, key, where)


def _float_map(value: object, key: str, where: str) -> dict[str, float]:
    items = _mapping(value or {}, key, where).items()
    return {name: _float(number, f"{key}.{name}", where) for name, number in items if number is not None}


def _int_map(value: object, key: str, where: str) -> dict[str, int]:
    return {name: _int(number, f"{key}.{name}", where) for name, number in _mapping(value or {}, key, where).items()}


def _str_map(value: object, key: str, where: str) -> dict[str, str]:
    items = _mapping(value or {}, key, where).items()
    return {name: _str(text, f"{key}.{name}", where) for name, text in items if text is not None}


def _float_tuple(value: object, key: str, where: str) -> tuple[float, ...]:
    return tuple(_float(number, f"{key}[]", where) for number in _list(value or [], key, where))
