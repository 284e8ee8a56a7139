"""Build small, deterministic results bundles (format version 1) with real HDR histograms.

Each config has a synthetic cost (framework overhead in ms) added to the model's validate and predict
time. Two configs with the same overhead get the same samples (in a different repetition order), so a
correct report must never call them different (equivalent, or not settled where the noise is too large).

A :class:`CurveSpec` adds capacity curves as ``servingbench run`` records them now: a grid of offered rates
shared by every config, each config climbing it in every repetition (from about half its own capacity upwards
until two steps fail, downwards first when its first step fails), every step a run of its own (``search``,
``step_ok``, ``step_reason``) and each curve a ``capacity`` entry (``method: "curve"``) with its steps, the
capacity where p99 crosses the SLO (interpolated in log p99) or the side it is censored on. A step meets the SLO
exactly when its run's p99 does.

A :class:`SearchSpec` adds capacity searches as bundles before curves recorded them (no ``method``; each config
tried its own rates): the report still reads them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

US_PER_MS = 1000.0
HDR_RANGE_US = (1, 60_000_000)
HDR_DIGITS = 3
SAMPLES_PER_RUN = 2000
LATENCY_SIGMA = 0.35  # lognormal shape of per-request latency
SERVER_CPUS = 1
SINGLE_USER_UTILISATION = 0.8  # one closed-loop user leaves the server idle between requests
MAX_OPEN_LOAD = 0.95  # offered load past capacity is drawn as a server at 95 % busy (latency 20 x service)
P99_OVER_MEAN = 2.12  # p99 / mean of the lognormal latency shape (sigma 0.35): exp(2.326 sigma - sigma^2 / 2)
STEP_FACTORS = (0.5, 1.2, 0.85, 1.05, 0.95)  # step rates / capacity at the SLO, in the order a search tries them
LATE_SHARE_OVERLOADED = 0.05  # share of a failing step's requests sent late
THEORY_OPTIMISM = 1.08  # the queueing model's capacity / the synthetic one (theory ignores framework jitter)
GENERATOR_LIMIT = "load generator"
CURVE_POINTS = 6
CURVE_LOW, CURVE_HIGH = 0.5, 1.6  # the grid spans these multiples of the lowest and highest nominal capacity
CURVE_START = 0.5  # a climb starts at the first rate at or above this multiple of the config's own capacity
FAILURES_TO_STOP = 2
GROSS_FACTOR = 4.0
SHA256 = "2fad07866ee791fdd65a8f1d741362ad2b16f430b4b842d7b41f166cfea39633"


@dataclass(frozen=True)
class ConfigSpec:
    """A server config and its synthetic framework overhead per request (ms)."""

    name: str
    label: str
    framework: str
    server: str
    route: str
    overhead_ms: float
    workers: int = 1
    threads: int | None = None
    role: str = "equal-work"
    baseline: str | None = None  # the framework it is measured against (its floor, or a variant's counterpart)
    inflight: int | None = None  # requests one worker serves at once (default: 40 for ASGI def, else threads or 1)


@dataclass(frozen=True)
class ModelSpec:
    """A model's validate and predict time (ms) and the relative repetition noise of its throughput.

    ``waits``: predict blocks (sleeps) instead of computing, so it adds wall time but no server CPU.
    """

    name: str
    validate_ms: float
    predict_ms: float
    noise: float
    waits: bool = False


@dataclass(frozen=True)
class ScenarioSpec:
    """A load scenario: closed loop with ``concurrency`` users or open loop at ``target_rps``."""

    name: str
    kind: str = "closed"
    concurrency: int | None = None
    target_rps: float | None = None
    endpoint: str = "/predict"


FAST_A = ConfigSpec("fastapi-uvicorn", "FastAPI / uvicorn (def)", "fastapi", "uvicorn", "def", 0.30, baseline="asgi")
FAST_B = ConfigSpec(
    "flask-gthread", "Flask / gunicorn gthread", "flask", "gunicorn-gthread", "def", 0.30, threads=8, baseline="wsgi"
)
SLOW_C = ConfigSpec("flask-sync", "Flask / gunicorn sync", "flask", "gunicorn-sync", "def", 0.55, baseline="wsgi")
DEFAULT_CONFIGS = (FAST_A, FAST_B, SLOW_C)
FAST_MODEL = ModelSpec("fast", validate_ms=0.02, predict_ms=0.05, noise=0.01)
HEAVY_MODEL = ModelSpec("heavy", validate_ms=0.02, predict_ms=6.0, noise=0.06)
DEFAULT_MODELS = (FAST_MODEL, HEAVY_MODEL)
DEFAULT_SCENARIOS = (
    ScenarioSpec("single-c1", concurrency=1),
    ScenarioSpec("single-c8", concurrency=8),
    ScenarioSpec("open-r300", kind="open", target_rps=300.0),
    ScenarioSpec("open-r600", kind="open", target_rps=600.0),
)
NOISE_PATTERN = (0.0, 1.0, -1.0, 0.5, -0.5)  # multiples of the model's noise, rotated per config
SEARCH_SCENARIOS = (ScenarioSpec("single-c8", concurrency=8), ScenarioSpec("open-r300", kind="open", target_rps=300.0))


@dataclass(frozen=True)
class SearchSpec:
    """A capacity search of the first model, run for every config and repetition.

    ``theory_configs`` get an M/D/1 theory value, ``limited_configs`` a search whose failures above capacity
    are the load generator falling behind (invalid step runs, ``limited_by`` set), ``unconverged`` lists the
    (config, repetition) pairs whose search ran out of steps before it converged.
    """

    name: str = "capacity"
    slo_p99_ms: float = 5.0
    arrivals: str = "poisson"
    factors: tuple[float, ...] = STEP_FACTORS
    theory_configs: tuple[str, ...] = ()
    limited_configs: tuple[str, ...] = ()
    unconverged: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class CurveSpec:
    """A capacity curve of the first model, climbed by every config in every repetition on one shared grid.

    ``theory_configs`` get an M/D/1 theory value; ``limited_configs`` have their first failing step fail on the
    load generator's account (an invalid run, ``generator_limited``) and re-run at the same rate; ``never_met`` and
    ``always_met`` list (config, repetition) pairs whose curve met the SLO at no rate (censored below the lowest rate
    measured) or at every rate (censored above the highest).
    """

    name: str = "capacity"
    slo_p99_ms: float = 5.0
    arrivals: str = "poisson"
    points: int = CURVE_POINTS
    theory_configs: tuple[str, ...] = ()
    limited_configs: tuple[str, ...] = ()
    never_met: tuple[tuple[str, int], ...] = ()
    always_met: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class BundleSpec:
    """Everything that varies between fixture bundles."""

    configs: tuple[ConfigSpec, ...] = DEFAULT_CONFIGS
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    scenarios: tuple[ScenarioSpec, ...] = DEFAULT_SCENARIOS
    repetitions: int = 5
    complete: bool = True
    capacity: bool = True
    searches: tuple[SearchSpec, ...] = ()
    curves: tuple[CurveSpec, ...] = ()
    traffic_rps: float = 0.0
    invalid_runs: bool = True
    invalid: tuple[tuple[str, int], ...] = ()  # (config, repetition) whose runs are marked invalid
    plan: dict[str, Any] = field(default_factory=dict)  # extra keys of the bundle's plan section
    fingerprint: str = "a" * 64
    packages: dict[str, str] = field(default_factory=lambda: {"fastapi": "0.165.0", "flask": "3.1.3"})

    def with_(self, **changes: Any) -> BundleSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


SEARCH = SearchSpec(
    theory_configs=(SLOW_C.name,), limited_configs=(FAST_A.name,), unconverged=((FAST_B.name, 0),)
)  # the generator limits FastAPI, theory applies to the one-at-a-time sync worker, one gthread search stops early
SEARCH_SPEC = BundleSpec(
    models=(FAST_MODEL,), scenarios=SEARCH_SCENARIOS, repetitions=3, capacity=False, searches=(SEARCH,)
)
CURVE = CurveSpec(theory_configs=(SLOW_C.name,), limited_configs=(FAST_A.name,))
CURVE_SPEC = BundleSpec(
    models=(FAST_MODEL,), scenarios=SEARCH_SCENARIOS, repetitions=6, capacity=False, curves=(CURVE,)
)  # six repetitions (intervals at 95 %); the generator limits FastAPI once per curve; theory for the sync worker
ASGI_FLOOR = ConfigSpec("asgi-uvicorn", "ASGI floor / uvicorn", "asgi", "uvicorn", "def", 0.18, role="floor")
FAST_IDIOMATIC = ConfigSpec(
    "fastapi-idiomatic-uvicorn", "FastAPI (idiomatic) / uvicorn", "fastapi-idiomatic", "uvicorn", "def", 0.42,
    role="variant", baseline="fastapi",
)  # fmt: skip
WSGI_FLOOR = ConfigSpec(
    "wsgi-gthread", "WSGI floor / gunicorn gthread", "wsgi", "gunicorn-gthread", "def", 0.20, threads=8, role="floor"
)
FAST_GRANIAN = ConfigSpec(
    "fastapi-granian", "FastAPI / Granian", "fastapi", "granian", "def", 0.28, baseline="asgi", inflight=8
)
FLASK_GRANIAN = ConfigSpec(
    "flask-granian", "Flask / Granian", "flask", "granian", "def", 0.33, threads=8, baseline="wsgi", inflight=8
)
TAX_CONFIGS = (FAST_A, ASGI_FLOOR, FAST_IDIOMATIC, FAST_B, WSGI_FLOOR, FAST_GRANIAN, FLASK_GRANIAN)
TAX_SPEC = BundleSpec(
    configs=TAX_CONFIGS, models=(FAST_MODEL,), scenarios=(ScenarioSpec("single-c8", concurrency=8),),
    repetitions=5, capacity=False, invalid_runs=False,
)  # fmt: skip


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _histogram(samples_ms: np.ndarray[Any, np.dtype[np.float64]]) -> HdrHistogram:
    histogram = HdrHistogram(*HDR_RANGE_US, HDR_DIGITS)
    values, counts = np.unique(np.clip(np.rint(samples_ms * US_PER_MS), 1, HDR_RANGE_US[1]), return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        histogram.record_value(int(value), int(count))
    return histogram


def _latency_summary(histogram: HdrHistogram, mean_ms: float) -> dict[str, float]:
    """Run latency summary in ms; the mean comes from the samples (hdrh's get_mean_value is slow)."""

    def ms(value: float) -> float:
        return round(float(value) / US_PER_MS, 3)

    return {
        "min": ms(histogram.get_min_value()),
        "mean": round(mean_ms, 3),
        "p50": ms(histogram.get_value_at_percentile(50)),
        "p90": ms(histogram.get_value_at_percentile(90)),
        "p99": ms(histogram.get_value_at_percentile(99)),
        "p999": ms(histogram.get_value_at_percentile(99.9)),
        "max": ms(histogram.get_max_value()),
    }


def _samples(mean_ms: float, seed: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, LATENCY_SIGMA, SAMPLES_PER_RUN)
    return np.asarray(raw / raw.mean() * mean_ms, dtype=np.float64)


def _service_ms(config: ConfigSpec, model: ModelSpec) -> float:
    return model.validate_ms + model.predict_ms + config.overhead_ms


def _cpu_ms(config: ConfigSpec, model: ModelSpec) -> float:
    """CPU time per request (ms): the whole service time, less predict when predict only waits."""
    return _service_ms(config, model) - (model.predict_ms if model.waits else 0.0)


def _noise_factor(model: ModelSpec, rep: int, index: int) -> float:
    return 1.0 + model.noise * NOISE_PATTERN[(rep + index) % len(NOISE_PATTERN)]


def _noise_index(spec: BundleSpec, config: ConfigSpec) -> int:
    """Configs of equal cost get the same noise pattern, rotated by their position among them."""
    return spec.configs.index(config) - [item.overhead_ms for item in spec.configs].index(config.overhead_ms)


def _measure(config: ConfigSpec, model: ModelSpec, scenario: ScenarioSpec, rep: int, index: int) -> dict[str, Any]:
    """Synthetic throughput (req/s) and mean latency (ms) for one run."""
    service_ms = _service_ms(config, model)
    factor = _noise_factor(model, rep, index)
    capacity_rps = SERVER_CPUS * US_PER_MS / service_ms * factor
    if scenario.kind == "open":
        rate = scenario.target_rps or 0.0
        load = min(rate / capacity_rps, MAX_OPEN_LOAD)
        return {"rps": min(rate, capacity_rps), "mean_ms": service_ms / factor / (1.0 - load)}
    users = scenario.concurrency or 1
    rps = capacity_rps * (SINGLE_USER_UTILISATION if users == 1 else 1.0)
    return {"rps": rps, "mean_ms": users / rps * US_PER_MS}


def _run(
    spec: BundleSpec, config: ConfigSpec, model: ModelSpec, scenario: ScenarioSpec, rep: int, order: int
) -> dict[str, Any]:
    index = _noise_index(spec, config)
    measured = _measure(config, model, scenario, rep, index)
    seed = _seed(model.name, scenario.name, config.overhead_ms, (rep + index) % len(NOISE_PATTERN))
    samples = _samples(measured["mean_ms"], seed)
    total = _histogram(samples)
    validate = _histogram(_samples(model.validate_ms, seed + 1)[:200])
    predict = _histogram(_samples(model.predict_ms, seed + 2)[:200])
    duration_s = 10.0
    requests = int(measured["rps"] * duration_s)
    run_id = f"r{order:04d}"
    return {
        "id": run_id,
        "config": config.name,
        "framework": config.framework,
        "server": config.server,
        "route": config.route,
        "workers": config.workers,
        "threads": config.threads,
        "model": model.name,
        "scenario": scenario.name,
        "kind": scenario.kind,
        "endpoint": scenario.endpoint,
        "batch_size": 1,
        "concurrency": scenario.concurrency,
        "target_rps": scenario.target_rps,
        "repetition": rep,
        "order": order,
        "warmup_s": 2.0,
        "duration_s": duration_s,
        "requests": requests,
        "errors": 0,
        "errors_by_kind": {},
        "rps": round(measured["rps"], 3),
        "offered_rps": scenario.target_rps,
        "achieved_rps": round(measured["rps"], 3) if scenario.kind == "open" else None,
        "late": 0 if scenario.kind == "open" else None,
        "dropped": 0 if scenario.kind == "open" else None,
        "latency_ms": _latency_summary(total, float(samples.mean())),
        "server_timing_ms": {
            "validate_p50": model.validate_ms,
            "predict_p50": model.predict_ms,
            "validate_mean": model.validate_ms,
            "predict_mean": model.predict_ms,
        },
        "histograms": {
            "total": total.encode().decode("ascii"),
            "total_uncorrected": None,
            "validate": validate.encode().decode("ascii"),
            "predict": predict.encode().decode("ascii"),
        },
        "server_cpu_s": round(duration_s * 0.9, 3),
        "server_cpu_us_per_request": round(_cpu_ms(config, model) * 900.0, 1),
        "server_rss_mb": 90.0 + 10 * index,
        "server_rss_mb_per_worker": [80.0 + 5.0 * spec.configs.index(config) + 0.1 * rep],
        "server_pss_mb_per_worker": None,
        "generator_cpu_pct": 40.0,
        "valid": True,
        "invalid_reason": None,
        "status": "ok",
        "log_tail": None,
        "artifacts": {
            "locust_html": f"runs/{run_id}/locust.html",
            "locust_csv": f"runs/{run_id}/locust_stats.csv",
            "server_log": f"runs/{run_id}/server.log",
        },
    }


def _invalid_runs(spec: BundleSpec, start: int) -> list[dict[str, Any]]:
    """One saturated run and one failed run with an error breakdown, both of the slow config."""
    config, model, scenario = spec.configs[-1], spec.models[0], spec.scenarios[0]
    saturated = _run(spec, config, model, scenario, spec.repetitions, start)
    saturated.update(valid=False, invalid_reason="load generator saturated (97% CPU)", generator_cpu_pct=97.0)
    failed = _run(spec, config, model, scenario, spec.repetitions + 1, start + 1)
    failed.update(
        valid=False,
        status="failed",
        invalid_reason="error rate 12.0% over the 1% limit",
        errors=120,
        errors_by_kind={"HTTP 503": 100, "ConnectionError": 20},
        log_tail="[ERROR] Worker timeout (pid:42) <script>alert(1)</script>",
    )
    return [saturated, failed]


def _capacity(spec: BundleSpec) -> list[dict[str, Any]]:
    model = spec.models[0]
    results = []
    for rep in range(spec.repetitions):
        for index, config in enumerate(spec.configs):
            service_ms = model.validate_ms + model.predict_ms + config.overhead_ms
            factor = 1.0 + model.noise * NOISE_PATTERN[(rep + index) % len(NOISE_PATTERN)]
            capacity = round(0.8 * US_PER_MS / service_ms * factor, 1)
            step = {"rate": capacity, "p99_ms": 4.0, "error_rate": 0.0, "ok": True, "run": None}
            results.append(
                {"config": config.name, "model": model.name, "repetition": rep, "slo_p99_ms": 5.0,
                 "capacity_rps": capacity, "steps": [step]}
            )  # fmt: skip
    return results


def _capacity_at_slo(spec: BundleSpec, search: SearchSpec, config: ConfigSpec, rep: int) -> float:
    """The offered rate (req/s) at which the synthetic server's p99 reaches the SLO (M/M/1-like mean latency)."""
    model = spec.models[0]
    service_ms = _service_ms(config, model)
    capacity_rps = SERVER_CPUS * US_PER_MS / service_ms * _noise_factor(model, rep, _noise_index(spec, config))
    return capacity_rps * max(0.0, 1.0 - P99_OVER_MEAN * service_ms / search.slo_p99_ms)


def _step_run(
    spec: BundleSpec, search: SearchSpec, config: ConfigSpec, rep: int, rate: float, order: int, search_id: str
) -> dict[str, Any]:
    """One step as a run record: an open-loop run at ``rate`` req/s, judged against the search's SLO."""
    scenario = ScenarioSpec(f"{search.name}-r{rate:g}", kind="open", target_rps=rate)
    run = _run(spec, config, spec.models[0], scenario, rep, order)
    p99 = run["latency_ms"]["p99"]
    ok = p99 <= search.slo_p99_ms
    reason = None if ok else f"p99 {p99:.1f} ms over the SLO {search.slo_p99_ms:g} ms"
    if not ok:
        run["late"] = int(run["requests"] * LATE_SHARE_OVERLOADED)
    if not ok and config.name in search.limited_configs:
        reason = f"load generator fell behind: {run['late']} requests sent late"
        run.update(valid=False, invalid_reason="load generator saturated (96% CPU)", generator_cpu_pct=96.0)
    run.update(search=search_id, step_ok=ok, step_reason=reason)
    return run


def _step_entry(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate": run["target_rps"],
        "ok": run["step_ok"],
        "p99_ms": run["latency_ms"]["p99"],
        "error_rate": 0.0,
        "achieved_rps": run["achieved_rps"],
        "late": run["late"],
        "dropped": run["dropped"],
        "requests": run["requests"],
        "reason": run["step_reason"],
        "run": run["id"],
    }


def _search_entry(
    spec: BundleSpec, search: SearchSpec, config: ConfigSpec, rep: int, search_id: str, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    passed = [step["target_rps"] for step in steps if step["step_ok"]]
    converged = (config.name, rep) not in search.unconverged
    theory = config.name in search.theory_configs
    theory_rps = round(_capacity_at_slo(spec, search, config, rep) * THEORY_OPTIMISM, 1) if theory else None
    return {
        "id": search_id,
        "config": config.name,
        "model": spec.models[0].name,
        "scenario": search.name,
        "repetition": rep,
        "slo_p99_ms": search.slo_p99_ms,
        "arrivals": search.arrivals,
        "capacity_rps": max(passed) if passed else None,
        "converged": converged,
        "stop_reason": "bracket within tolerance, capacity confirmed" if converged else "step budget (5) spent",
        "limited_by": GENERATOR_LIMIT if config.name in search.limited_configs else None,
        "service_ms": round(_service_ms(config, spec.models[0]), 3) if theory else None,
        "theory": "M/D/1" if theory else None,
        "theory_rps": theory_rps,
        "steps": [_step_entry(step) for step in steps],
    }


def _searches(spec: BundleSpec, start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The step runs (orders from ``start``) and capacity entries of every search, per repetition and config."""
    runs: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for search in spec.searches:
        for rep in range(spec.repetitions):
            for config in spec.configs:
                search_id = f"k{len(entries) + 1:03d}"
                capacity = _capacity_at_slo(spec, search, config, rep)
                steps = [
                    _step_run(spec, search, config, rep, round(capacity * factor, 1), start + len(runs) + i, search_id)
                    for i, factor in enumerate(search.factors)
                ]
                runs.extend(steps)
                entries.append(_search_entry(spec, search, config, rep, search_id, steps))
    return runs, entries


def _nominal_capacity(spec: BundleSpec, curve: CurveSpec, config: ConfigSpec) -> float:
    return _capacity_at_slo(spec, SearchSpec(slo_p99_ms=curve.slo_p99_ms), config, 0)


def curve_grid(spec: BundleSpec, curve: CurveSpec) -> tuple[float, ...]:
    """The grid every config climbs: ``points`` rates from 0.5 x the lowest to 1.6 x the highest nominal capacity,
    3 significant digits, plus the plan's traffic rate."""
    capacities = [_nominal_capacity(spec, curve, config) for config in spec.configs]
    low, high = CURVE_LOW * min(capacities), CURVE_HIGH * max(capacities)
    ratio = (high / low) ** (1.0 / (curve.points - 1))
    rates = {float(f"{low * ratio**index:.3g}") for index in range(curve.points)}
    if spec.traffic_rps > 0:
        rates.add(spec.traffic_rps)
    return tuple(sorted(rates))


@dataclass
class _Climb:
    """One config's climb in one repetition: its step runs and entry steps, as the harness records them."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


def _curve_step(
    spec: BundleSpec, curve: CurveSpec, config: ConfigSpec, rep: int, rate: float, order: int, curve_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    run = _step_run(spec, SearchSpec(curve.name, curve.slo_p99_ms), config, rep, rate, order, curve_id)
    run.update(valid=True, invalid_reason=None, generator_cpu_pct=40.0, wall_s=1.2, session=f"s{rep:03d}")
    if (config.name, rep) in curve.never_met:
        run.update(step_ok=False, step_reason=f"error rate 5.0% over 1% (forced at {rate:g} req/s)")
    if (config.name, rep) in curve.always_met:
        run.update(step_ok=True, step_reason=None)
    p99 = run["latency_ms"]["p99"]
    gross = not run["step_ok"] and p99 > GROSS_FACTOR * curve.slo_p99_ms
    step = {"rate": rate, "p99_ms": p99, "ok": run["step_ok"], "generator_limited": False, "gross": gross,
            "run": run["id"], "reason": run["step_reason"]}  # fmt: skip
    return run, step


def _climb(
    spec: BundleSpec, curve: CurveSpec, config: ConfigSpec, rep: int, grid: tuple[float, ...], start: int, cid: str
) -> _Climb:
    """The harness's climb: up from about half the config's capacity while steps pass, down first if the first
    fails; stop after two failures in a row above the last pass, a gross failure, or the grid's end."""
    climb = _Climb()
    own = _nominal_capacity(spec, curve, config)
    index = next((i for i, rate in enumerate(grid) if rate >= CURVE_START * own), len(grid) - 1)
    limited_once = config.name in curve.limited_configs
    direction, failures = 0, 0
    while 0 <= index < len(grid):
        run, step = _curve_step(spec, curve, config, rep, grid[index], start + len(climb.runs), cid)
        if limited_once and not step["ok"]:  # the generator fell behind first: invalid, re-run at the same rate
            limited_once = False
            reason = "load generator fell behind: p99 send lag 9.0 ms over 0.5 ms (a tenth of the SLO)"
            run.update(valid=False, invalid_reason=reason, step_reason=reason)
            climb.runs.append(run)
            climb.steps.append({**step, "generator_limited": True, "gross": False, "reason": reason})
            continue
        climb.runs.append(run)
        climb.steps.append(step)
        if direction == 0:
            direction = 1 if step["ok"] else -1
        if direction < 0:
            if step["ok"]:
                break
            index -= 1
            continue
        failures = 0 if step["ok"] else failures + 1
        if failures >= FAILURES_TO_STOP or step["gross"]:
            break
        index += 1
    return climb


def _fit(steps: list[dict[str, Any]], slo: float) -> dict[str, Any]:
    """Where p99 crosses the SLO between the highest passing rate and the next failing one (log p99, linear)."""
    counted = sorted((step for step in steps if not step["generator_limited"]), key=lambda step: step["rate"])
    passing = [step for step in counted if step["ok"]]
    if not passing:
        return {"capacity_rps": None, "censored": "below", "bound_rps": counted[0]["rate"]}
    above = [step for step in counted if not step["ok"] and step["rate"] > passing[-1]["rate"]]
    if not above:
        return {"capacity_rps": None, "censored": "above", "bound_rps": counted[-1]["rate"]}
    low, high = passing[-1], above[0]
    low_p99, high_p99 = math.log(max(low["p99_ms"], 1e-3)), math.log(max(high["p99_ms"], slo * 1.0001))
    share = (math.log(slo) - low_p99) / (high_p99 - low_p99) if high_p99 > low_p99 else 0.0
    rate = low["rate"] + min(max(share, 0.0), 1.0) * (high["rate"] - low["rate"])
    return {"capacity_rps": round(rate, 3), "censored": None, "bound_rps": None}


def _curves(spec: BundleSpec, start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The step runs (orders from ``start``) and capacity entries of every curve, per repetition and config."""
    runs: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for curve in spec.curves:
        grid = curve_grid(spec, curve)
        for rep in range(spec.repetitions):
            for config in spec.configs:
                curve_id = f"c{len(entries) + 1:03d}"
                climb = _climb(spec, curve, config, rep, grid, start + len(runs), curve_id)
                runs.extend(climb.runs)
                fit = _fit(climb.steps, curve.slo_p99_ms)
                theory = config.name in curve.theory_configs
                capacity = _capacity_at_slo(spec, SearchSpec(slo_p99_ms=curve.slo_p99_ms), config, rep)
                entries.append(
                    {
                        "id": curve_id, "config": config.name, "model": spec.models[0].name, "scenario": curve.name,
                        "repetition": rep, "slo_p99_ms": curve.slo_p99_ms, "arrivals": curve.arrivals,
                        "method": "curve", "grid": list(grid), **fit,
                        "fitted": [[step["rate"], step["p99_ms"]] for step in climb.steps],
                        "converged": fit["capacity_rps"] is not None, "stop_reason": "the climb ended",
                        "limited_by": None, "steps": climb.steps,
                        "service_ms": round(_service_ms(config, spec.models[0]), 3) if theory else None,
                        "theory": "M/D/1" if theory else None,
                        "theory_rps": round(capacity * THEORY_OPTIMISM, 1) if theory else None,
                    }
                )  # fmt: skip
    return runs, entries


def _document(spec: BundleSpec, runs: list[dict[str, Any]], searches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": "servingbench-results",
        "version": 1,
        "created": "2026-11-24T16:40:00Z",
        "finished": "2026-11-24T16:52:00Z" if spec.complete else None,
        "complete": spec.complete,
        "preset": "quick",
        "seed": 12345,
        "environment": {
            "fingerprint": spec.fingerprint,
            "hostname": "bench-host",
            "cpu_model": "Synthetic CPU @ 3.0GHz",
            "logical_cpus": 2,
            "usable_cpus": [0, 1],
            "cpu_quota": None,
            "server_cpus": [0],
            "load_cpus": [1],
            "kernel": "6.1.0-test",
            "python": "3.11.7",
            "platform": "Linux-6.1.0-x86_64",
            "packages": spec.packages,
            "git_revision": "abc123",
            "git_dirty": False,
            "load_avg_before": [0.1, 0.2, 0.3],
            "load_avg_after": [0.9, 0.5, 0.4],
            "blas_threads": 1,
        },
        "plan": {
            "preset": "quick",
            "repetitions": spec.repetitions,
            "slo_p99_ms": spec.curves[0].slo_p99_ms if spec.curves else 50.0,
            "traffic_rps": spec.traffic_rps,
            "capacity_points": spec.curves[0].points if spec.curves else 8,
            **spec.plan,
        },
        "fairness": [
            "production servers only: uvicorn and gunicorn, versions printed",
            "every server config on CPU 0, the load generator on CPU 1",
            "one worker process per config; BLAS/OpenMP threads = 1 in every worker",
            "configs interleaved in a seeded random order, repeated",
        ],
        "configs": {
            config.name: {
                "framework": config.framework,
                "server": config.server,
                "route": config.route,
                "workers": config.workers,
                "threads": config.threads,
                "inflight_per_worker": _inflight(config),
                "keepalive": config.server != "gunicorn-sync",
                "role": config.role,
                "interface": "wsgi" if config.framework in WSGI_FRAMEWORKS else "asgi",
                "baseline": config.baseline,
                "command": [config.server, "app:app"],
                "label": config.label,
            }
            for config in spec.configs
        },
        "models": {model.name: _model_entry(model) for model in spec.models},
        "sessions": [
            {"id": f"s{index + 1:03d}", "config": config.name, "model": model.name, "start_s": 1.5, "failed": None}
            for index, (model, config) in enumerate((m, c) for m in spec.models for c in spec.configs)
        ],
        "runs": runs,
        **({"capacity": (_capacity(spec) if spec.capacity else []) + searches} if spec.capacity or searches else {}),
    }


WSGI_FRAMEWORKS = ("flask", "wsgi", "flask-idiomatic")


def _inflight(config: ConfigSpec) -> int:
    if config.inflight is not None:
        return config.inflight
    if config.framework in WSGI_FRAMEWORKS:
        return config.threads or 1
    return 40 if config.route == "def" else 1


def _model_entry(model: ModelSpec) -> dict[str, Any]:
    names = [f"x{index}" for index in range(10)]
    return {"spec": model.name, "name": model.name, "version": "1", "sha256": SHA256, "n_features": len(names),
            "feature_names": names, "sklearn_version": "1.9.1", "kind": "sklearn"}  # fmt: skip


def _write_artifacts(directory: Path, run: dict[str, Any]) -> None:
    run_dir = directory / "runs" / str(run["id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "locust.html").write_text(f"<!doctype html><title>Locust {run['id']}</title><p>report</p>\n")
    (run_dir / "server.log").write_text("started\n")


def build_bundle(directory: Path, spec: BundleSpec | None = None) -> Path:
    """Write a bundle into ``directory`` (created) and return it."""
    spec = spec or BundleSpec()
    directory.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for rep in range(spec.repetitions):
        for model in spec.models:
            for scenario in spec.scenarios:
                for config in spec.configs:
                    run = _run(spec, config, model, scenario, rep, len(runs) + 1)
                    if (config.name, rep) in spec.invalid:
                        run.update(valid=False, invalid_reason="too few requests (44 < 50)")
                    runs.append(run)
    step_runs, searches = _searches(spec, len(runs) + 1)
    runs.extend(step_runs)
    curve_runs, curves = _curves(spec, len(runs) + 1)
    runs.extend(curve_runs)
    searches += curves
    if spec.invalid_runs:
        runs.extend(_invalid_runs(spec, len(runs) + 1))
    for run in runs:
        _write_artifacts(directory, run)
    (directory / "results.json").write_text(json.dumps(_document(spec, runs, searches), indent=1))
    return directory
