"""Build small, deterministic results bundles (format version 1) with real HDR histograms.

Each config has a synthetic cost (framework overhead in ms) added to the model's validate and predict
time. Two configs with the same overhead get the same samples (in a different repetition order), so a
correct report must never call them different (equivalent, or not settled where the noise is too large).

A :class:`SearchSpec` adds capacity searches as ``servingbench run`` records them: every step is a run of
its own (``search``, ``step_ok``, ``step_reason``) and each search a ``capacity`` entry with its steps. The
steps sit below and above the synthetic capacity at the SLO, and a step meets the SLO exactly when its
run's p99 does.
"""

from __future__ import annotations

import hashlib
import json
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


FAST_A = ConfigSpec("fastapi-uvicorn", "FastAPI / uvicorn (def)", "fastapi", "uvicorn", "def", 0.30)
FAST_B = ConfigSpec("flask-gthread", "Flask / gunicorn gthread", "flask", "gunicorn-gthread", "def", 0.30, threads=8)
SLOW_C = ConfigSpec("flask-sync", "Flask / gunicorn sync", "flask", "gunicorn-sync", "def", 0.55)
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
class BundleSpec:
    """Everything that varies between fixture bundles."""

    configs: tuple[ConfigSpec, ...] = DEFAULT_CONFIGS
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    scenarios: tuple[ScenarioSpec, ...] = DEFAULT_SCENARIOS
    repetitions: int = 5
    complete: bool = True
    capacity: bool = True
    searches: tuple[SearchSpec, ...] = ()
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
        "plan": {"preset": "quick", "repetitions": spec.repetitions, **spec.plan},
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
                "inflight_per_worker": 40 if config.framework == "fastapi" else (config.threads or 1),
                "keepalive": config.server != "gunicorn-sync",
                "command": [config.server, "app:app"],
                "label": config.label,
            }
            for config in spec.configs
        },
        "runs": runs,
        **({"capacity": (_capacity(spec) if spec.capacity else []) + searches} if spec.capacity or searches else {}),
    }


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
    if spec.invalid_runs:
        runs.extend(_invalid_runs(spec, len(runs) + 1))
    for run in runs:
        _write_artifacts(directory, run)
    (directory / "results.json").write_text(json.dumps(_document(spec, runs, searches), indent=1))
    return directory
