"""Build small, deterministic results bundles (format version 1) with real HDR histograms.

Each config has a synthetic cost (framework overhead in ms) added to the model's validate and predict
time. Two configs with the same overhead get the same samples (in a different repetition order), so a
correct report must find no significant difference between them.
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
    """A model's validate and predict time (ms) and the relative repetition noise of its throughput."""

    name: str
    validate_ms: float
    predict_ms: float
    noise: float


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


@dataclass(frozen=True)
class BundleSpec:
    """Everything that varies between fixture bundles."""

    configs: tuple[ConfigSpec, ...] = DEFAULT_CONFIGS
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    scenarios: tuple[ScenarioSpec, ...] = DEFAULT_SCENARIOS
    repetitions: int = 5
    complete: bool = True
    capacity: bool = True
    invalid_runs: bool = True
    fingerprint: str = "a" * 64
    packages: dict[str, str] = field(default_factory=lambda: {"fastapi": "0.165.0", "flask": "3.1.3"})

    def with_(self, **changes: Any) -> BundleSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


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


def _measure(config: ConfigSpec, model: ModelSpec, scenario: ScenarioSpec, rep: int, index: int) -> dict[str, Any]:
    """Synthetic throughput (req/s) and mean latency (ms) for one run."""
    service_ms = model.validate_ms + model.predict_ms + config.overhead_ms
    factor = 1.0 + model.noise * NOISE_PATTERN[(rep + index) % len(NOISE_PATTERN)]
    capacity_rps = SERVER_CPUS * US_PER_MS / service_ms * factor
    if scenario.kind == "open":
        rate = scenario.target_rps or 0.0
        load = min(rate / capacity_rps, 0.95)
        return {"rps": min(rate, capacity_rps), "mean_ms": service_ms / factor / (1.0 - load)}
    users = scenario.concurrency or 1
    rps = capacity_rps * (SINGLE_USER_UTILISATION if users == 1 else 1.0)
    return {"rps": rps, "mean_ms": users / rps * US_PER_MS}


def _run(
    spec: BundleSpec, config: ConfigSpec, model: ModelSpec, scenario: ScenarioSpec, rep: int, order: int
) -> dict[str, Any]:
    index = [item.overhead_ms for item in spec.configs].index(config.overhead_ms)
    index = spec.configs.index(config) - index  # same-cost configs get rotated noise
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
        "server_cpu_us_per_request": round((model.validate_ms + model.predict_ms + config.overhead_ms) * 900.0, 1),
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


def _document(spec: BundleSpec, runs: list[dict[str, Any]]) -> dict[str, Any]:
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
        "plan": {"preset": "quick", "repetitions": spec.repetitions},
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
        **({"capacity": _capacity(spec)} if spec.capacity else {}),
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
                    runs.append(_run(spec, config, model, scenario, rep, len(runs) + 1))
    if spec.invalid_runs:
        runs.extend(_invalid_runs(spec, len(runs) + 1))
    for run in runs:
        _write_artifacts(directory, run)
    (directory / "results.json").write_text(json.dumps(_document(spec, runs), indent=1))
    return directory
