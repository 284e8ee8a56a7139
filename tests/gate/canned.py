"""Canned results bundles for the gate: deterministic, small, with known effects.

A request costs ``cost_us`` of server CPU; each repetition the machine runs at a speed drawn once and shared by
every config of that repetition (the drift pairing removes), and each run adds its own noise. Throughput, p50 and
p99 follow the cost. ``head_factor`` makes the head arm (or, for a single-config bundle, its one config) that much
more expensive; ``run_factor`` shifts a whole run (run-to-run noise between bundles). ``machine_speed`` is how
slow the machine ran during a whole run (1.0: as usual; 1.2: 20 % slower): every request's cost grows by
``machine_speed ** speed_slope`` and, with ``probe``, each run records a speed probe of ``PROBE_US *
machine_speed`` (with a little noise of its own).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from servingbench.harness.speed import SPEED_PROBE

MACHINE = "0123456789abcdef"
OTHER_MACHINE = "fedcba9876543210"
CONFIG = "fastapi-uvicorn"
MODEL = "model"
SCENARIO = "single-c8"
USERS = 8
US_PER_S = 1_000_000.0
US_PER_MS = 1000.0
P99_OVER_P50 = 2.0
PROBE_US = 4000.0
PROBE_NOISE_SD = 0.02
LAUNCH = {"framework": "fastapi", "server": "uvicorn", "route": "def", "threads": None}


@dataclass(frozen=True)
class Shape:
    """What a canned bundle holds. Noise values are log-scale standard deviations."""

    repetitions: int = 20
    cost_us: float = 650.0
    head_factor: float = 1.0
    run_factor: float = 1.0
    drift_sd: float = 0.15
    noise_sd: float = 0.03
    restart_every: int = 0
    machine_id: str | None = MACHINE
    seed: int = 1
    complete: bool = True
    invalid: frozenset[tuple[str, int]] = frozenset()
    packages: tuple[tuple[str, str], ...] = (("fastapi", "0.115.0"),)
    machine_speed: float = 1.0
    speed_slope: float = 0.5
    probe: bool = False

    def with_(self, **changes: Any) -> Shape:
        return replace(self, **changes)


def _plan(configs: Sequence[str], shape: Shape) -> dict[str, Any]:
    return {
        "source": "ci_plan.toml",
        "preset": "default",
        "seed": 1,
        "workers": 1,
        "server_cpus": 1,
        "blas_threads": 1,
        "warmup_s": 0.3,
        "duration_s": 2.0,
        "repetitions": shape.repetitions,
        "error_rate_limit": 0.01,
        "min_requests": 200,
        "restart_every": shape.restart_every,
        "configs": {name: dict(LAUNCH) for name in configs},
        "models": {MODEL: {"spec": "synthetic:cpu_us=300", "scenarios": ["single"], "concurrency": None}},
        "scenarios": {"single": {"endpoint": "/predict", "kind": "closed", "concurrency": [USERS]}},
    }


def _run(
    ident: int, config: str, repetition: int, cost_us: float, p99_noise: float, valid: bool, probe_us: float | None
) -> dict[str, Any]:
    p50_ms = USERS * cost_us / US_PER_MS
    return {
        "id": f"r{ident:04d}",
        "order": ident,
        "config": config,
        "model": MODEL,
        "scenario": SCENARIO,
        "kind": "closed",
        "repetition": repetition,
        "session": f"s-{config}-{repetition // 1000}",
        "valid": valid,
        "status": "ok",
        "invalid_reason": None if valid else "error rate 5.0% above the 1% limit",
        "duration_s": 2.0,
        "requests": 3000,
        "rps": US_PER_S / cost_us,
        "latency_ms": {"p50": p50_ms, "p99": p50_ms * P99_OVER_P50 * p99_noise},
        "server_cpu_us_per_request": cost_us,
        "server_cpu_s": 2.0,
        "speed_probe_us": probe_us,
    }


def document(shape: Shape, configs: Sequence[str] = ("base", "head")) -> dict[str, Any]:
    """A results.json document: every config measured in every repetition. The last config gets ``head_factor``
    (the head arm of an A/B bundle, or the one config of a single-config bundle)."""
    rng = np.random.default_rng(shape.seed)
    probe_rng = np.random.default_rng(shape.seed + 10_000)  # its own stream: the cost draws stay as they were
    runs: list[dict[str, Any]] = []
    for repetition in range(shape.repetitions):
        speed = float(np.exp(rng.normal(0.0, shape.drift_sd)))
        for index, config in enumerate(configs):
            factor = shape.head_factor if index == len(configs) - 1 else 1.0
            own = float(np.exp(rng.normal(0.0, shape.noise_sd)))
            slowdown = shape.machine_speed**shape.speed_slope
            cost = shape.cost_us * shape.run_factor * factor * speed * own * slowdown
            valid = (config, repetition) not in shape.invalid
            p99_noise = float(np.exp(rng.normal(0.0, shape.noise_sd)))
            probe = PROBE_US * shape.machine_speed * float(np.exp(probe_rng.normal(0.0, PROBE_NOISE_SD)))
            probe_us = probe if shape.probe else None
            runs.append(_run(len(runs) + 1, config, repetition, cost, p99_noise, valid, probe_us))
    return {
        "format": "servingbench-results",
        "version": 1,
        "complete": shape.complete,
        "created": f"2026-12-01T00:00:{shape.seed % 60:02d}Z",
        "finished": "2026-12-01T00:05:00Z",
        "preset": "default",
        "seed": 1,
        "environment": {
            "machine_id": shape.machine_id,
            "cpu_model": "Test CPU @ 2.0GHz",
            "logical_cpus": 2,
            "python": "3.11.7",
            "python_implementation": "CPython",
            "packages": dict(shape.packages),
            "git_revision": "1" * 40,
            "git_dirty": False,
            **({"speed_probe": SPEED_PROBE} if shape.probe else {}),
        },
        "plan": _plan(configs, shape),
        "fairness": [],
        "configs": {name: {"label": name, **LAUNCH} for name in configs},
        "runs": runs,
    }


def write_bundle(directory: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``directory/results.json``; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(doc))
    return directory


def ab_bundle(directory: Path, shape: Shape = Shape()) -> Path:
    """An A/B bundle: configs ``base`` and ``head``."""
    return write_bundle(directory, document(shape))


def single_bundle(directory: Path, shape: Shape = Shape()) -> Path:
    """A run of the plan as written: one config."""
    return write_bundle(directory, document(shape, (CONFIG,)))


RUN_TO_RUN = (1.0, 1.02, 0.985, 1.01, 0.995)  # five A/A runs: about 1.4 % run-to-run spread


def calibration_bundles(
    root: Path, shape: Shape = Shape(), factors: Sequence[float] = RUN_TO_RUN, speeds: Sequence[float] = ()
) -> list[Path]:
    """Single-config runs of unchanged code, as ``servingbench calibrate`` makes them (one seed each); ``speeds``:
    each run's ``machine_speed`` (default: the shape's)."""
    return [
        single_bundle(
            root / f"aa{index}",
            shape.with_(
                run_factor=factor,
                seed=100 + index,
                machine_speed=speeds[index] if speeds else shape.machine_speed,
            ),
        )
        for index, factor in enumerate(factors)
    ]
