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
    "ConfigInfo",
    "Run",
    "load_bundle",
]

FORMAT_NAME = "servingbench-results"
SUPPORTED_VERSIONS = (1,)
RESULTS_FILE = "results.json"
# What a capacity entry written before these fields existed meant: the plan's one search, Poisson arrivals.
DEFAULT_CAPACITY_SCENARIO = "capacity"
DEFAULT_ARRIVALS = "poisson"


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


@dataclass(frozen=True)
class CapacityResult:
    """The highest offered rate (requests/s) at which p99 stayed under ``slo_p99_ms`` for one config, model, rep.

    ``capacity_rps`` is ``None`` when no rate met the SLO. It is only a lower bound of the server's capacity when
    the search did not converge or when ``limited_by`` names what failed first instead of the server (e.g.
    "load generator"). ``theory_rps`` is what the queueing model ``theory`` (e.g. "M/D/1") predicts from the
    measured ``service_ms``; both are ``None`` where the model does not apply.
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

    @property
    def outcome(self) -> str:
        """What became of the search, in words: "capacity", "lower bound", "unsettled", "not measured" (no step ran:
        the server failed first) or "never met" (every rate measured missed the SLO)."""
        if self.capacity_rps is not None:
            return "lower bound" if self.lower_bound else "capacity"
        if not self.steps:
            return "not measured"
        return "unsettled" if self.unsettled else "never met"

    @property
    def unsettled(self) -> bool:
        """True when no capacity was found although some rate met the SLO: it missed when re-measured, and the search
        ran out of steps before a lower rate passed consistently (noise at the knee), so "never met" would be wrong."""
        return self.capacity_rps is None and any(step.ok for step in self.steps)

    @property
    def passed_above(self) -> bool:
        """True when some rate above ``capacity_rps`` met the SLO too but failed when re-measured (noise at the knee,
        or a disturbed step): the confirmed capacity is then a conservative figure."""
        floor = self.capacity_rps
        return floor is not None and any(step.ok and step.rate > floor for step in self.steps)

    @property
    def lower_bound(self) -> bool:
        """True when ``capacity_rps`` is a rate that passed but the server may take more: the generator limited the
        search, the search did not converge, or a higher rate passed once and was not confirmed."""
        return self.capacity_rps is not None and (
            self.limited_by is not None or not self.converged or self.passed_above
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
        return tuple(run for run in self.runs if run.valid and run.status == "ok")

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
        )
    return configs


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
    )


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
