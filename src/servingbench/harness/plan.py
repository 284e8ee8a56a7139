"""The run plan: which server configs, models and scenarios to measure, and for how long.

A plan is a TOML file (or the built-in ``default_plan.toml``) plus a preset (``quick``, ``default``,
``rigorous``) that shrinks or stretches its knobs. Every key and value is checked before anything
starts; a mistake is a :class:`PlanError` whose message is one line naming the key and what is allowed.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from servingbench.files import write_atomic
from servingbench.servers.launch import ServerConfig, default_server
from servingbench.servers.registry import FRAMEWORKS, SERVERS, framework, servers_for
from servingbench.shared_model.columns import OUTPUT_METHODS
from servingbench.shared_model.types import ModelError

__all__ = [
    "BUILTIN_PLAN_SOURCE",
    "ENDPOINTS",
    "FIRST_STEP_WARMUP_FACTOR",
    "PRESET_NAMES",
    "RUN_OVERHEAD_S",
    "SERVER_START_OVERHEAD_S",
    "ConfigPlan",
    "Measurement",
    "ModelPlan",
    "Plan",
    "PlanError",
    "ScenarioPlan",
    "estimate_seconds",
    "expected_runs",
    "load_plan",
    "measurement_cost_s",
    "parse_plan",
    "rate_scenario",
    "run_cost_s",
    "step_warmup_s",
    "write_model_plan",
]

PRESET_NAMES = ("quick", "default", "rigorous")
DEFAULT_PRESET = "default"
BUILTIN_PLAN_SOURCE = "built-in default plan"
DEFAULT_PLAN_RESOURCE = "default_plan.toml"

KINDS = ("closed", "open", "capacity")
ARRIVALS = ("poisson", "constant")
SINGLE_ENDPOINT = "/predict"
BATCH_ENDPOINT = "/predict/batch"
ENDPOINTS = (SINGLE_ENDPOINT, BATCH_ENDPOINT)
DEFAULT_MODEL_SPECS = ("fast", "heavy")
FIRST_STEP_WARMUP_FACTOR = 3.0
"""A curve's first step warms up this many times `capacity_warmup_s`: its server sat idle while the other configs'
curves (and the other models) ran, and in three default runs a first step failed twice as often as a later step at
the same share of the config's capacity (10 of 54 against 4 of 49, at 0.6 to 0.9 of it)."""
SYNTHETIC_SPEC = re.compile(r"synthetic:(cpu_us|sleep_ms)=\d+(\.\d+)?")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

MAX_WORKERS = 64
MAX_THREADS = 1024
MAX_BATCH_SIZE = 10_000
MAX_CONCURRENCY = 10_000
DEFAULT_OPEN_LOOP_USERS = 64
EXPECTED_CURVE_STEPS = 4
"""Steps a capacity curve usually takes per config and repetition (climb from half the peak to just past the knee;
3.0 to 3.7 in three default runs); only for the time estimate."""

# Estimated cost of one measured run beyond warm-up + window (handing the run to the load generator, stopping its
# users, the drain), and of one server start (import, model load, readiness), both measured on a 2-core VM; for the
# first time estimate only: the progress line learns the rest.
RUN_OVERHEAD_S = 0.3
SERVER_START_OVERHEAD_S = 4.5
DEFAULT_WINDOW_SHARE = 0.75
"""Until a run on this machine measured it: the share of its cap a window sized by request count lasts."""
RETIRED_KNOBS = {
    "capacity_tolerance": "the capacity search was replaced by a measured curve; see capacity_points",
    "capacity_max_steps": "the capacity search was replaced by a measured curve; see capacity_points",
    "start_rps": "a capacity curve climbs a grid shared by every config; give `rates` to fix the grid",
}


class PlanError(ValueError):
    """A plan is malformed. ``str(err)`` is one line: ``<source>: <key path>: <problem>``."""


@dataclass(frozen=True)
class _Knob:
    """A top-level scalar of the plan: its Python type and inclusive range."""

    kind: type[int] | type[float]
    minimum: float
    maximum: float = math.inf
    exclusive_minimum: bool = False


KNOBS: dict[str, _Knob] = {
    "seed": _Knob(int, 0, 2**63 - 1),
    "workers": _Knob(int, 1, MAX_WORKERS),
    "server_cpus": _Knob(int, 1, 1024),
    "blas_threads": _Knob(int, 1, 256),
    "warmup_s": _Knob(float, 0.0, 3600.0),
    "duration_s": _Knob(float, 0.0, 3600.0, exclusive_minimum=True),
    "window_requests": _Knob(int, 0),
    "min_duration_s": _Knob(float, 0.0, 3600.0),
    "repetitions": _Knob(int, 1, 1000),
    "error_rate_limit": _Knob(float, 0.0, 1.0),
    "min_requests": _Knob(int, 1),
    "startup_timeout_s": _Knob(float, 0.0, 3600.0, exclusive_minimum=True),
    "restart_every": _Knob(int, 0, 1000),
    "slo_p99_ms": _Knob(float, 0.0, 3_600_000.0, exclusive_minimum=True),
    "traffic_rps": _Knob(float, 0.0, 1e7),
    "capacity_points": _Knob(int, 2, 50),
    "capacity_resolution": _Knob(float, 0.0, 10.0),
    "capacity_repetitions": _Knob(int, 1, 1000),
    "capacity_extra_repetitions": _Knob(int, 0, 1000),
    "capacity_warmup_s": _Knob(float, 0.0, 3600.0),
    "capacity_step_requests": _Knob(int, 1),
    "capacity_max_step_s": _Knob(float, 0.0, 3600.0, exclusive_minimum=True),
    "memory_probe_steps": _Knob(int, 0, 50_000),  # 5,000 take about 2 % of the server's core; 50,000 about 20 %
}
SECTIONS = ("presets", "configs", "models", "scenarios")
# Optional top-level keys the report reads from the bundle's plan section (not preset knobs).
VERDICT_KEYS = ("equivalence_margin", "reference")
DEFAULT_EQUIVALENCE_MARGIN = 0.05  # "equivalent" when a ratio's whole interval lies within +/-5 %
PRESET_KEYS = (*KNOBS, "concurrency", "models")
CONFIG_KEYS = ("framework", "server", "route", "threads")
MODEL_KEYS = ("spec", "scenarios", "concurrency", "sha256", "output")
#: ``run --model PATH`` measures the model with the scenarios the built-in plan gives this model.
MODEL_TEMPLATE = "fast"
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
SCENARIO_KEYS = ("endpoint", "batch_size", "kind", "concurrency", "rates", "users", "arrivals")
KIND_KEYS = {
    "closed": ("concurrency",),
    "open": ("rates", "users", "arrivals"),
    "capacity": ("arrivals", "rates"),
}


@dataclass(frozen=True)
class ConfigPlan:
    """One named server config of the plan: what to launch (with the plan's worker count applied)."""

    name: str
    launch: ServerConfig

    @property
    def framework(self) -> str:
        return self.launch.framework

    @property
    def server(self) -> str:
        return self.launch.server

    @property
    def route(self) -> str:
        return self.launch.route_style

    @property
    def threads(self) -> int | None:
        return self.launch.threads


@dataclass(frozen=True)
class ModelPlan:
    """A model to serve: ``spec`` as the server takes it, the scenarios to run, an optional concurrency sweep.

    For a model file, ``spec`` carries the file's ``sha256`` (a pickle's opt-in) and the ``output`` override as
    options (``PATH?sha256=HEX&output=predict_proba``), so the server gets them with the spec; both are also kept
    here for the record.
    """

    name: str
    spec: str
    scenarios: tuple[str, ...]
    concurrency: tuple[int, ...] | None = None
    sha256: str | None = None
    output: str | None = None


Kind = Literal["closed", "open", "capacity"]
Arrivals = Literal["poisson", "constant"]


@dataclass(frozen=True)
class ScenarioPlan:
    """A load shape. Closed loop: ``concurrency`` users, each waiting for its answer. Open loop: ``rates`` req/s
    arriving as ``arrivals``. Capacity: p99 against offered open-loop rate on a grid shared by every config, and
    where it crosses the plan's SLO; ``rates`` fixes the grid (default: from the configs' closed-loop peaks)."""

    name: str
    endpoint: str
    batch_size: int = 1
    kind: Kind = "closed"
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    users: int | None = None
    arrivals: Arrivals = "poisson"


@dataclass(frozen=True)
class Measurement:
    """One measured run against one started server: a scenario at one concurrency level (or one offered rate)."""

    model: str
    scenario: str  # expanded name, e.g. "single-c8" or "open-r200"; a capacity search keeps the plan's name
    base_scenario: str
    kind: Kind
    endpoint: str
    batch_size: int
    users: int
    concurrency: int | None
    target_rps: float | None
    arrivals: Arrivals = "poisson"
    grid: tuple[float, ...] = ()
    """A capacity measurement's fixed grid of offered rates (req/s); empty: derived from closed-loop peaks."""


@dataclass(frozen=True)
class Plan:
    """A checked plan with its preset applied. Times in seconds; ``error_rate_limit`` is a fraction (0.01 = 1%)."""

    source: str
    preset: str
    seed: int
    workers: int
    server_cpus: int
    blas_threads: int
    warmup_s: float
    duration_s: float
    window_requests: int
    min_duration_s: float
    repetitions: int
    error_rate_limit: float
    min_requests: int
    startup_timeout_s: float
    restart_every: int
    slo_p99_ms: float
    traffic_rps: float
    capacity_points: int
    capacity_resolution: float
    capacity_repetitions: int
    capacity_extra_repetitions: int
    capacity_warmup_s: float
    capacity_step_requests: int
    capacity_max_step_s: float
    configs: tuple[ConfigPlan, ...]
    models: tuple[ModelPlan, ...]
    scenarios: tuple[ScenarioPlan, ...]
    concurrency_override: tuple[int, ...] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    equivalence_margin: float = DEFAULT_EQUIVALENCE_MARGIN
    reference: str | None = None
    memory_probe_steps: int = 0
    """Steps of the memory probe's chase beside the speed probe (``harness.speed``; 0: no memory probe)."""

    def repetitions_of(self, measurement: Measurement) -> int:
        """How many repetitions run ``measurement``: `repetitions`, or for a capacity curve those of
        :meth:`curve_repetitions`."""
        if measurement.kind == "capacity":
            return len(self.curve_repetitions())
        return self.repetitions

    @property
    def total_repetitions(self) -> int:
        """The repetitions a run goes through: `repetitions`, then as many more as give `capacity_extra_repetitions`
        repetitions that measure the capacity curves only and do not follow a server start (none when no model has
        a capacity scenario)."""
        curves = any(item.kind == "capacity" for model in self.models for item in self.measurements(model))
        total = self.repetitions
        extra = self.capacity_extra_repetitions if curves else 0
        while extra:
            extra -= not self._starts_server(total)
            total += 1
        return total

    def _starts_server(self, rep: int) -> bool:
        """Whether repetition ``rep`` (0-based) is the first after a server start."""
        return rep % self.restart_every == 0 if self.restart_every else rep == 0

    def curve_repetitions(self) -> tuple[int, ...]:
        """The repetitions (0-based) that measure the capacity curves: `capacity_repetitions` of them, leaving out the
        first repetition after each server start while enough others remain. A server's first minute under load is
        not its steady state: in one default run every config's first curve met the SLO only at 0.4 to 0.8x the rate
        its later curves met (p99 of 110 to 730 ms where later repetitions measured 9 to 30 ms). The
        `capacity_extra_repetitions` after `repetitions` measure curves only, each one more curve a config."""
        wanted = min(self.repetitions, self.capacity_repetitions)
        warm = [rep for rep in range(self.repetitions) if not self._starts_server(rep)]
        chosen = tuple(warm[:wanted]) if len(warm) >= wanted else tuple(range(wanted))
        extra = range(self.repetitions, self.total_repetitions)
        return chosen + tuple(rep for rep in extra if not self._starts_server(rep))

    def measures_in(self, measurement: Measurement, rep: int) -> bool:
        """Whether repetition ``rep`` (0-based) runs ``measurement``."""
        if measurement.kind == "capacity":
            return rep in self.curve_repetitions()
        return rep < self.repetitions

    def scenario(self, name: str) -> ScenarioPlan:
        """The scenario called ``name`` (names were checked when the plan was parsed)."""
        return next(item for item in self.scenarios if item.name == name)

    def measurements(self, model: ModelPlan) -> tuple[Measurement, ...]:
        """The runs one started server for ``model`` goes through, in plan order."""
        runs: list[Measurement] = []
        for scenario_name in model.scenarios:
            runs.extend(_expand(self.scenario(scenario_name), model, self.concurrency_override))
        return tuple(runs)

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON object for the results bundle (``presets`` left out: the applied one is ``preset``)."""
        return {
            "source": self.source,
            "preset": self.preset,
            **{name: getattr(self, name) for name in KNOBS},
            "concurrency_override": _list_or_none(self.concurrency_override),
            "equivalence_margin": self.equivalence_margin,
            "reference": self.reference,
            "configs": {item.name: _config_json(item) for item in self.configs},
            "models": {item.name: _model_json(item) for item in self.models},
            "scenarios": {item.name: _scenario_json(item) for item in self.scenarios},
        }


def _list_or_none(values: tuple[int, ...] | None) -> list[int] | None:
    return None if values is None else list(values)


def _config_json(config: ConfigPlan) -> dict[str, Any]:
    return {"framework": config.framework, "server": config.server, "route": config.route, "threads": config.threads}


def _model_json(model: ModelPlan) -> dict[str, Any]:
    return {
        "spec": model.spec,
        "scenarios": list(model.scenarios),
        "concurrency": _list_or_none(model.concurrency),
        "sha256": model.sha256,
        "output": model.output,
    }


def _scenario_json(scenario: ScenarioPlan) -> dict[str, Any]:
    return {
        "endpoint": scenario.endpoint,
        "batch_size": scenario.batch_size,
        "kind": scenario.kind,
        "concurrency": list(scenario.concurrency),
        "rates": list(scenario.rates),
        "users": scenario.users,
        "arrivals": scenario.arrivals,
    }


def _expand(scenario: ScenarioPlan, model: ModelPlan, override: tuple[int, ...] | None) -> list[Measurement]:
    base = Measurement(
        model=model.name,
        scenario=scenario.name,
        base_scenario=scenario.name,
        kind=scenario.kind,
        endpoint=scenario.endpoint,
        batch_size=scenario.batch_size,
        users=scenario.users or DEFAULT_OPEN_LOOP_USERS,
        concurrency=None,
        target_rps=None,
        arrivals=scenario.arrivals,
        grid=scenario.rates if scenario.kind == "capacity" else (),
    )
    if scenario.kind == "capacity":
        return [base]
    if scenario.kind == "open":
        return [replace(base, scenario=rate_scenario(scenario.name, rate), target_rps=rate) for rate in scenario.rates]
    levels = override or model.concurrency or scenario.concurrency
    return [replace(base, scenario=f"{scenario.name}-c{level}", users=level, concurrency=level) for level in levels]


def rate_scenario(name: str, rate: float) -> str:
    """The run name of scenario ``name`` at an offered ``rate`` (req/s): a fixed open-loop rate or a search step."""
    return f"{name}-r{rate:g}"


def estimate_seconds(
    plan: Plan,
    *,
    configs: int | None = None,
    run_overhead_s: float = RUN_OVERHEAD_S,
    start_s: float = SERVER_START_OVERHEAD_S,
    window_share: float = DEFAULT_WINDOW_SHARE,
) -> float:
    """Estimated wall time of the whole plan in seconds: server starts (once per config and model, again at each
    restart), warm-ups, windows (``window_share`` of their cap: windows sized by request count end earlier), and
    ``run_overhead_s`` per run. A first guess: progress learns."""
    n_configs = len(plan.configs) if configs is None else configs
    total = plan.total_repetitions
    starts_per_model = 1 + (max(0, total - 1) // plan.restart_every if plan.restart_every else 0)
    seconds = n_configs * len(plan.models) * starts_per_model * start_s
    for model in plan.models:
        for measurement in plan.measurements(model):
            per_run_s = run_cost_s(plan, measurement.kind, window_share) + run_overhead_s
            seconds += n_configs * plan.repetitions_of(measurement) * measurement_cost_s(plan, measurement, per_run_s)
    return seconds


def measurement_cost_s(plan: Plan, measurement: Measurement, per_run_s: float) -> float:
    """Estimated seconds of ``measurement`` on one config in one repetition, ``per_run_s`` a run: its expected
    runs, and for a curve the longer warm-up of its first step."""
    seconds = expected_runs(plan, measurement) * per_run_s
    if measurement.kind == "capacity":
        seconds += step_warmup_s(plan, first=True) - step_warmup_s(plan, first=False)
    return seconds


def step_warmup_s(plan: Plan, *, first: bool) -> float:
    """A curve step's open-loop warm-up: `capacity_warmup_s`, times `FIRST_STEP_WARMUP_FACTOR` on a curve's first."""
    return plan.capacity_warmup_s * (FIRST_STEP_WARMUP_FACTOR if first else 1.0)


def run_cost_s(plan: Plan, kind: str, window_share: float) -> float:
    """Estimated seconds of one run of ``kind`` (a capacity step for "capacity"), overhead not included: what the
    plan's estimate counts and what progress charges when the run is done."""
    if kind == "capacity":
        return plan.capacity_warmup_s + plan.capacity_max_step_s / 2
    share = window_share if plan.window_requests and kind == "closed" else 1.0
    return plan.warmup_s + plan.duration_s * share


def expected_runs(plan: Plan, measurement: Measurement) -> int:
    """Measured runs ``measurement`` is expected to take per config and repetition: 1, or a curve's usual steps (one
    more with a `capacity_resolution`: at the default grid's 1.28x one midpoint brackets the SLO within 15 %)."""
    if measurement.kind != "capacity":
        return 1
    return min(EXPECTED_CURVE_STEPS, plan.capacity_points) + (1 if plan.capacity_resolution > 0 else 0)


# --- loading --------------------------------------------------------------------------------------


def load_plan(path: Path | None = None, preset: str = "default") -> Plan:
    """Read ``path`` (or the built-in plan), take what it leaves out from the built-in one, apply ``preset``.

    Raises :class:`PlanError` for a missing or unreadable file, bad TOML, unknown keys and bad values.
    """
    builtin = _read_builtin()
    if path is None:
        return parse_plan(builtin, preset=preset, source=BUILTIN_PLAN_SOURCE)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{source}: cannot read plan: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}") from exc
    return parse_plan({**builtin, **data}, preset=preset, source=source, base_dir=path.parent)


def _read_builtin() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(DEFAULT_PLAN_RESOURCE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def parse_plan(
    data: Mapping[str, Any], *, preset: str = "default", source: str = "plan", base_dir: Path | None = None
) -> Plan:
    """Check a plan given as parsed TOML and apply ``preset``; raise :class:`PlanError` on the first problem."""
    where = _Where(source)
    _check_retired(data, "", where)
    where.check_keys(data, "", (*KNOBS, *VERDICT_KEYS, *SECTIONS))
    presets = _parse_presets(data.get("presets", {}), where)
    if preset not in presets and preset != DEFAULT_PRESET:
        raise PlanError(f"{source}: preset {preset!r} is not one of {_choices((DEFAULT_PRESET, *presets))}")
    preset_values = presets.get(preset, {})
    knobs: dict[str, Any] = {name: _knob(data, name, where) for name in KNOBS}
    knobs.update({name: value for name, value in preset_values.items() if name in KNOBS})
    scenarios = _parse_scenarios(where.table(data, "scenarios"), where)
    models = _parse_models(where.table(data, "models"), {item.name for item in scenarios}, where, base_dir)
    models = _preset_models(models, preset_values.get("models"))
    configs = _parse_configs(where.table(data, "configs"), int(knobs["workers"]), where)
    return Plan(
        source=source,
        preset=preset,
        configs=configs,
        models=models,
        scenarios=scenarios,
        concurrency_override=cast("tuple[int, ...] | None", preset_values.get("concurrency")),
        presets=presets,
        equivalence_margin=_margin(data.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN), where),
        reference=_reference(data.get("reference"), configs, where),
        **knobs,
    )


def _check_retired(table: Mapping[str, Any], path: str, where: _Where) -> None:
    for key in table:
        if key in RETIRED_KNOBS:
            raise where.error(f"{path}{key}", f"no longer a knob: {RETIRED_KNOBS[key]}")


def _preset_models(models: tuple[ModelPlan, ...], names: tuple[str, ...] | None) -> tuple[ModelPlan, ...]:
    """A preset's ``models`` keeps only the plan's models it names; naming none of them keeps them all (a plan of
    your own with other model names still runs under the built-in presets)."""
    if names is None:
        return models
    kept = tuple(model for model in models if model.name in names)
    return kept or models


def _margin(value: object, where: _Where) -> float:
    """The equivalence margin: a fraction strictly between 0 and 1 (0.05 = +/-5 %)."""
    number = float(_number(value, "equivalence_margin", _Knob(float, 0.0, 1.0, exclusive_minimum=True), where))
    if number >= 1.0:
        raise where.error("equivalence_margin", f"{value!r} is out of range (allowed: > 0 and < 1, e.g. 0.05 for 5%)")
    return number


def _reference(value: object, configs: Sequence[ConfigPlan], where: _Where) -> str | None:
    """The config every other is compared with, or ``None`` (the report then compares with the best one)."""
    if value is None:
        return None
    names = [config.name for config in configs]
    if not isinstance(value, str) or value not in names:
        raise where.error("reference", f"{value!r} is not one of the plan's configs ({_choices(names)})")
    return value


def _choices(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in dict.fromkeys(values))


class _Where:
    """Builds one-line errors that name the source and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str) -> PlanError:
        return PlanError(f"{self.source}: {path}: {problem}" if path else f"{self.source}: {problem}")

    def check_keys(self, table: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(path, f"unknown key {key!r} (allowed: {', '.join(allowed)})")

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict) or not value:
            raise self.error(key, "must be a non-empty table of named entries, e.g. [" + key + ".name]")
        for name, entry in value.items():
            if not NAME_PATTERN.fullmatch(name):
                raise self.error(f"{key}.{name}", "names use letters, digits, '.', '_' and '-' only")
            if not isinstance(entry, dict):
                raise self.error(f"{key}.{name}", f"must be a table, found {_type_name(entry)}")
        return value


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), type(value).__name__
    )


def _number(value: object, path: str, knob: _Knob, where: _Where) -> int | float:
    if knob.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise where.error(path, f"must be an integer, found {_type_name(value)} {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise where.error(path, f"must be a number, found {_type_name(value)} {value!r}")
    too_low = value <= knob.minimum if knob.exclusive_minimum else value < knob.minimum
    if too_low or value > knob.maximum:
        low = f"> {knob.minimum:g}" if knob.exclusive_minimum else f">= {knob.minimum:g}"
        high = "" if math.isinf(knob.maximum) else f" and <= {knob.maximum:g}"
        raise where.error(path, f"{value!r} is out of range (allowed: {low}{high})")
    return knob.kind(value)


def _knob(data: Mapping[str, Any], name: str, where: _Where) -> int | float:
    if name not in data:
        raise where.error(name, "missing (every top-level knob needs a value)")
    return _number(data[name], name, KNOBS[name], where)


def _int_list(value: object, path: str, maximum: float, where: _Where) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(path, f"must be a non-empty list of integers, found {_type_name(value)} {value!r}")
    items = tuple(int(_number(item, path, _Knob(int, 1, maximum), where)) for item in value)
    if len(set(items)) != len(items):
        raise where.error(path, f"has repeated values {list(items)}")
    return items


def _name_list(value: object, path: str, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise where.error(path, f"must be a non-empty list of model names, found {_type_name(value)} {value!r}")
    return tuple(value)


def _rate_list(value: object, path: str, where: _Where) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(path, f"must be a non-empty list of rates (req/s), found {_type_name(value)} {value!r}")
    return tuple(float(_number(item, path, _Knob(float, 0.0, exclusive_minimum=True), where)) for item in value)


def _choice(value: object, path: str, allowed: Sequence[str], where: _Where) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise where.error(path, f"{value!r} is not one of {_choices(allowed)}")
    return value


def _parse_presets(raw: object, where: _Where) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise where.error("presets", f"must be a table, found {_type_name(raw)}")
    presets: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        path = f"presets.{name}"
        if not isinstance(table, dict):
            raise where.error(path, f"must be a table, found {_type_name(table)}")
        _check_retired(table, f"{path}.", where)
        where.check_keys(table, path, PRESET_KEYS)
        values: dict[str, Any] = {
            key: _number(table[key], f"{path}.{key}", KNOBS[key], where) for key in KNOBS & table.keys()
        }
        if "concurrency" in table:
            values["concurrency"] = _int_list(table["concurrency"], f"{path}.concurrency", MAX_CONCURRENCY, where)
        if "models" in table:
            values["models"] = _name_list(table["models"], f"{path}.models", where)
        presets[name] = values
    return presets


def _parse_configs(raw: dict[str, Any], workers: int, where: _Where) -> tuple[ConfigPlan, ...]:
    return tuple(_parse_config(name, table, workers, where) for name, table in raw.items())


def _parse_config(name: str, table: dict[str, Any], workers: int, where: _Where) -> ConfigPlan:
    path = f"configs.{name}"
    where.check_keys(table, path, CONFIG_KEYS)
    name_of_framework = _choice(table.get("framework"), f"{path}.framework", tuple(FRAMEWORKS), where)
    stack = framework(name_of_framework)
    server = _choice(
        table.get("server", default_server(name_of_framework)), f"{path}.server", servers_for(name_of_framework), where
    )
    if "route" in table and len(stack.routes) == 1:
        choosers = [item.name for item in FRAMEWORKS.values() if len(item.routes) > 1]
        raise where.error(f"{path}.route", f"applies to framework {_choices(choosers)} only")
    route = _choice(table.get("route", stack.default_route), f"{path}.route", stack.route_styles, where)
    threads: int | None = None
    if "threads" in table:
        if not SERVERS[server].threads:
            takers = [item.name for item in SERVERS.values() if item.threads]
            raise where.error(f"{path}.threads", f"applies to server {_choices(takers)} only")
        threads = int(_number(table["threads"], f"{path}.threads", _Knob(int, 1, MAX_THREADS), where))
    try:
        launch = ServerConfig(name_of_framework, server, workers, threads, route)
    except ValueError as exc:
        raise where.error(path, str(exc)) from exc
    return ConfigPlan(name=name, launch=launch)


def _parse_models(
    raw: dict[str, Any], scenario_names: set[str], where: _Where, base_dir: Path | None
) -> tuple[ModelPlan, ...]:
    models = []
    for name, table in raw.items():
        path = f"models.{name}"
        where.check_keys(table, path, MODEL_KEYS)
        sha256, output = _model_options(table, path, where)
        spec = _model_spec(table.get("spec"), f"{path}.spec", where, base_dir, sha256=sha256, output=output)
        scenarios = table.get("scenarios")
        if not isinstance(scenarios, list) or not scenarios:
            raise where.error(f"{path}.scenarios", f"must be a non-empty list of scenario names, found {scenarios!r}")
        for scenario in scenarios:
            _choice(scenario, f"{path}.scenarios", sorted(scenario_names), where)
        concurrency = None
        if "concurrency" in table:
            concurrency = _int_list(table["concurrency"], f"{path}.concurrency", MAX_CONCURRENCY, where)
        models.append(
            ModelPlan(
                name=name,
                spec=spec,
                scenarios=tuple(scenarios),
                concurrency=concurrency,
                sha256=sha256,
                output=output,
            )
        )
    return tuple(models)


def _model_options(table: Mapping[str, Any], path: str, where: _Where) -> tuple[str | None, str | None]:
    sha256 = table.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256_PATTERN.fullmatch(sha256)):
        raise where.error(f"{path}.sha256", f"must be the model file's sha256 (64 hex digits), found {sha256!r}")
    output = table.get("output")
    if output is not None:
        output = _choice(output, f"{path}.output", OUTPUT_METHODS, where)
    return (sha256.lower() if sha256 else None), output


def _model_spec(
    value: object,
    path: str,
    where: _Where,
    base_dir: Path | None,
    *,
    sha256: str | None = None,
    output: str | None = None,
) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(
            path,
            f"must be 'fast', 'heavy', 'synthetic:cpu_us=N', 'synthetic:sleep_ms=N' or a model file, found {value!r}",
        )
    spec = value.strip()
    if spec in DEFAULT_MODEL_SPECS or spec.startswith("synthetic:"):
        if sha256 or output:
            raise where.error(path, "sha256 and output apply to a model file only")
    if spec in DEFAULT_MODEL_SPECS:
        return spec
    if spec.startswith("synthetic:"):
        if not SYNTHETIC_SPEC.fullmatch(spec):
            raise where.error(path, f"{spec!r} is not 'synthetic:cpu_us=N' or 'synthetic:sleep_ms=N' (N a number >= 0)")
        return spec
    model_path = Path(spec).expanduser()
    if not model_path.is_absolute() and base_dir is not None:
        model_path = base_dir / model_path
    if not model_path.is_file():
        raise where.error(path, f"{spec!r} is not 'fast', 'heavy', a synthetic spec, or an existing model file")
    return _verified_file_spec(model_path.resolve(), path, where, sha256=sha256, output=output)


def _verified_file_spec(model_path: Path, path: str, where: _Where, *, sha256: str | None, output: str | None) -> str:
    """Check the model file now, so a bad file stops the run before any server starts; return the server's spec."""
    from servingbench.shared_model.artifacts import verify_model_file
    from servingbench.shared_model.models import model_spec

    try:
        verify_model_file(model_path, sha256=sha256)
    except ModelError as err:
        raise where.error(path, str(err)) from None
    return model_spec(model_path, sha256=sha256, output=cast("Any", output))


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string (same quotes and escapes)


def write_model_plan(
    model: Path, out_dir: Path, *, sha256: str | None = None, output: str | None = None, name: str | None = None
) -> Path:
    """Write a plan that runs the built-in matrix on one model file, with the scenarios the built-in plan gives the
    fast model, to ``out_dir/<name>.toml``; return its path (``servingbench run --model PATH`` runs it).

    The file holds only ``[models]`` and ``[scenarios]`` (every knob, preset and config comes from the built-in
    plan), so it can be edited and re-run with ``--plan``. Raises PlanError when the model file fails verification.
    """
    builtin = _read_builtin()
    template = builtin["models"][MODEL_TEMPLATE]
    model_name = name or re.sub(r"[^A-Za-z0-9._-]", "-", model.stem).lstrip("._-") or "model"
    lines = [
        f"# Written by `servingbench run --model {model}`: the built-in plan's configs and knobs, on this model.",
        f"[models.{model_name}]",
        f"spec = {_toml_string(str(model.expanduser().resolve()))}",
        f"scenarios = {json.dumps(template['scenarios'])}",
    ]
    lines += [f"sha256 = {_toml_string(sha256)}"] if sha256 else []
    lines += [f"output = {_toml_string(output)}"] if output else []
    for scenario in template["scenarios"]:
        lines += ["", f"[scenarios.{scenario}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in builtin["scenarios"][scenario].items()]
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / f"{model_name}.toml"
    text = "\n".join(lines) + "\n"
    load_plan_text(text, source=str(plan_path))  # refuse a bad model before anything is written
    write_atomic(plan_path, text)
    return plan_path


def load_plan_text(text: str, *, source: str, preset: str = DEFAULT_PRESET) -> Plan:
    """Check a plan given as TOML text (merged over the built-in plan, as :func:`load_plan` does)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}") from exc
    return parse_plan({**_read_builtin(), **data}, preset=preset, source=source)


def _parse_scenarios(raw: dict[str, Any], where: _Where) -> tuple[ScenarioPlan, ...]:
    return tuple(_parse_scenario(name, table, where) for name, table in raw.items())


def _parse_scenario(name: str, table: dict[str, Any], where: _Where) -> ScenarioPlan:
    path = f"scenarios.{name}"
    _check_retired(table, f"{path}.", where)
    where.check_keys(table, path, SCENARIO_KEYS)
    endpoint = _choice(table.get("endpoint"), f"{path}.endpoint", ENDPOINTS, where)
    batch_size = int(_number(table.get("batch_size", 1), f"{path}.batch_size", _Knob(int, 1, MAX_BATCH_SIZE), where))
    if endpoint == SINGLE_ENDPOINT and batch_size != 1:
        raise where.error(f"{path}.batch_size", f"must be 1 for endpoint {SINGLE_ENDPOINT!r} (use {BATCH_ENDPOINT!r})")
    kind = cast("Kind", _choice(table.get("kind", "closed"), f"{path}.kind", KINDS, where))
    for key in table:
        owner = next((owner for owner, keys in KIND_KEYS.items() if key in keys), None)
        if owner is not None and key not in KIND_KEYS[kind]:
            kinds = " and ".join(repr(item) for item, keys in KIND_KEYS.items() if key in keys)
            raise where.error(f"{path}.{key}", f"applies to kind {kinds} only, not {kind!r}")
    scenario = ScenarioPlan(
        name=name,
        endpoint=endpoint,
        batch_size=batch_size,
        kind=kind,
        arrivals=cast("Arrivals", _choice(table.get("arrivals", "poisson"), f"{path}.arrivals", ARRIVALS, where)),
    )
    if kind == "closed":
        return replace(
            scenario, concurrency=_int_list(table.get("concurrency"), f"{path}.concurrency", MAX_CONCURRENCY, where)
        )
    if kind == "capacity":
        rates = _rate_list(table["rates"], f"{path}.rates", where) if "rates" in table else ()
        return replace(scenario, rates=tuple(sorted(set(rates))))
    users = None
    if "users" in table:
        users = int(_number(table["users"], f"{path}.users", _Knob(int, 1, MAX_CONCURRENCY), where))
    return replace(scenario, rates=_rate_list(table.get("rates"), f"{path}.rates", where), users=users)
