"""The run plan: which server configs, models and scenarios to measure, and for how long.

A plan is a TOML file (or the built-in ``default_plan.toml``) plus a preset (``quick``, ``default``,
``rigorous``) that shrinks or stretches its knobs. Every key and value is checked before anything
starts; a mistake is a :class:`PlanError` whose message is one line naming the key and what is allowed.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from servingbench.servers.launch import ServerConfig, default_server
from servingbench.servers.registry import FRAMEWORKS, SERVERS, framework, servers_for

__all__ = [
    "BUILTIN_PLAN_SOURCE",
    "ENDPOINTS",
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
    "load_plan",
    "parse_plan",
    "rate_scenario",
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
SYNTHETIC_SPEC = re.compile(r"synthetic:(cpu_us|sleep_ms)=\d+(\.\d+)?")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

MAX_WORKERS = 64
MAX_THREADS = 1024
MAX_BATCH_SIZE = 10_000
MAX_CONCURRENCY = 10_000
MAX_CAPACITY_TOLERANCE = 0.5  # a search that stops within 50% of its answer has said nothing
DEFAULT_OPEN_LOOP_USERS = 64
EXPECTED_CAPACITY_STEPS = 6
"""Steps a capacity search usually takes when it starts from the session's closed-loop peak (bracket 2, bisect 3,
confirm 1 at 5% tolerance); only for the time estimate, the search itself stops at `capacity_max_steps`."""

# Estimated cost of one measured run beyond warm-up + window (load generator start and stop), and of one
# server start (import, model load, readiness); used for the progress bar and the preset budgets.
RUN_OVERHEAD_S = 1.5
SERVER_START_OVERHEAD_S = 2.0


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
    "repetitions": _Knob(int, 1, 1000),
    "error_rate_limit": _Knob(float, 0.0, 1.0),
    "min_requests": _Knob(int, 1),
    "startup_timeout_s": _Knob(float, 0.0, 3600.0, exclusive_minimum=True),
    "slo_p99_ms": _Knob(float, 0.0, 3_600_000.0, exclusive_minimum=True),
    "capacity_tolerance": _Knob(float, 0.0, MAX_CAPACITY_TOLERANCE, exclusive_minimum=True),
    "capacity_max_steps": _Knob(int, 2, 100),
    "capacity_step_requests": _Knob(int, 1),
    "capacity_max_step_s": _Knob(float, 0.0, 3600.0, exclusive_minimum=True),
}
SECTIONS = ("presets", "configs", "models", "scenarios")
# Optional top-level keys the report reads from the bundle's plan section (not preset knobs).
VERDICT_KEYS = ("equivalence_margin", "reference")
DEFAULT_EQUIVALENCE_MARGIN = 0.05  # "equivalent" when a ratio's whole interval lies within +/-5 %
PRESET_KEYS = (*KNOBS, "concurrency")
CONFIG_KEYS = ("framework", "server", "route", "threads")
MODEL_KEYS = ("spec", "scenarios", "concurrency")
SCENARIO_KEYS = ("endpoint", "batch_size", "kind", "concurrency", "rates", "users", "arrivals", "start_rps")
KIND_KEYS = {
    "closed": ("concurrency",),
    "open": ("rates", "users", "arrivals"),
    "capacity": ("arrivals", "start_rps"),
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
    """A model to serve: ``spec`` as the server takes it, the scenarios to run, an optional concurrency sweep."""

    name: str
    spec: str
    scenarios: tuple[str, ...]
    concurrency: tuple[int, ...] | None = None


Kind = Literal["closed", "open", "capacity"]
Arrivals = Literal["poisson", "constant"]


@dataclass(frozen=True)
class ScenarioPlan:
    """A load shape. Closed loop: ``concurrency`` users, each waiting for its answer. Open loop: ``rates`` req/s
    arriving as ``arrivals``. Capacity: a search for the highest open-loop rate whose p99 meets the plan's SLO,
    starting from ``start_rps`` (default: from the closed-loop peak measured earlier in the same server start)."""

    name: str
    endpoint: str
    batch_size: int = 1
    kind: Kind = "closed"
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    users: int | None = None
    arrivals: Arrivals = "poisson"
    start_rps: float | None = None


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
    start_rps: float | None = None


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
    repetitions: int
    error_rate_limit: float
    min_requests: int
    startup_timeout_s: float
    slo_p99_ms: float
    capacity_tolerance: float
    capacity_max_steps: int
    capacity_step_requests: int
    capacity_max_step_s: float
    configs: tuple[ConfigPlan, ...]
    models: tuple[ModelPlan, ...]
    scenarios: tuple[ScenarioPlan, ...]
    concurrency_override: tuple[int, ...] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    equivalence_margin: float = DEFAULT_EQUIVALENCE_MARGIN
    reference: str | None = None

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
    return {"spec": model.spec, "scenarios": list(model.scenarios), "concurrency": _list_or_none(model.concurrency)}


def _scenario_json(scenario: ScenarioPlan) -> dict[str, Any]:
    return {
        "endpoint": scenario.endpoint,
        "batch_size": scenario.batch_size,
        "kind": scenario.kind,
        "concurrency": list(scenario.concurrency),
        "rates": list(scenario.rates),
        "users": scenario.users,
        "arrivals": scenario.arrivals,
        "start_rps": scenario.start_rps,
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
        start_rps=scenario.start_rps,
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


def estimate_seconds(plan: Plan, *, configs: int | None = None) -> float:
    """Estimated wall time of the whole plan in seconds (warm-up, windows, and the named overheads)."""
    n_configs = len(plan.configs) if configs is None else configs
    measurements = [item for model in plan.models for item in plan.measurements(model)]
    runs = sum(expected_runs(plan, item) for item in measurements)
    per_repetition = n_configs * (
        runs * (plan.warmup_s + plan.duration_s + RUN_OVERHEAD_S) + len(plan.models) * SERVER_START_OVERHEAD_S
    )
    return per_repetition * plan.repetitions


def expected_runs(plan: Plan, measurement: Measurement) -> int:
    """Measured runs ``measurement`` is expected to take: 1, or a capacity search's usual step count."""
    return min(EXPECTED_CAPACITY_STEPS, plan.capacity_max_steps) if measurement.kind == "capacity" else 1


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
    where.check_keys(data, "", (*KNOBS, *VERDICT_KEYS, *SECTIONS))
    presets = _parse_presets(data.get("presets", {}), where)
    if preset not in presets and preset != DEFAULT_PRESET:
        raise PlanError(f"{source}: preset {preset!r} is not one of {_choices((DEFAULT_PRESET, *presets))}")
    preset_values = presets.get(preset, {})
    knobs: dict[str, Any] = {name: _knob(data, name, where) for name in KNOBS}
    knobs.update({name: value for name, value in preset_values.items() if name in KNOBS})
    scenarios = _parse_scenarios(where.table(data, "scenarios"), where)
    models = _parse_models(where.table(data, "models"), {item.name for item in scenarios}, where, base_dir)
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
        where.check_keys(table, path, PRESET_KEYS)
        values: dict[str, Any] = {
            key: _number(table[key], f"{path}.{key}", KNOBS[key], where) for key in KNOBS & table.keys()
        }
        if "concurrency" in table:
            values["concurrency"] = _int_list(table["concurrency"], f"{path}.concurrency", MAX_CONCURRENCY, where)
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
        spec = _model_spec(table.get("spec"), f"{path}.spec", where, base_dir)
        scenarios = table.get("scenarios")
        if not isinstance(scenarios, list) or not scenarios:
            raise where.error(f"{path}.scenarios", f"must be a non-empty list of scenario names, found {scenarios!r}")
        for scenario in scenarios:
            _choice(scenario, f"{path}.scenarios", sorted(scenario_names), where)
        concurrency = None
        if "concurrency" in table:
            concurrency = _int_list(table["concurrency"], f"{path}.concurrency", MAX_CONCURRENCY, where)
        models.append(ModelPlan(name=name, spec=spec, scenarios=tuple(scenarios), concurrency=concurrency))
    return tuple(models)


def _model_spec(value: object, path: str, where: _Where, base_dir: Path | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(
            path,
            f"must be 'fast', 'heavy', 'synthetic:cpu_us=N', 'synthetic:sleep_ms=N' or a model file, found {value!r}",
        )
    spec = value.strip()
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
    return str(model_path.resolve())


def _parse_scenarios(raw: dict[str, Any], where: _Where) -> tuple[ScenarioPlan, ...]:
    return tuple(_parse_scenario(name, table, where) for name, table in raw.items())


def _parse_scenario(name: str, table: dict[str, Any], where: _Where) -> ScenarioPlan:
    path = f"scenarios.{name}"
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
        start = table.get("start_rps")
        positive = _Knob(float, 0.0, exclusive_minimum=True)
        rate = None if start is None else float(_number(start, f"{path}.start_rps", positive, where))
        return replace(scenario, start_rps=rate)
    users = None
    if "users" in table:
        users = int(_number(table["users"], f"{path}.users", _Knob(int, 1, MAX_CONCURRENCY), where))
    return replace(scenario, rates=_rate_list(table.get("rates"), f"{path}.rates", where), users=users)
