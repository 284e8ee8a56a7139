"""Fixture bundles for the regression gate, built with the report tests' bundle builders.

One config, the model under test (``fast``) and the ``reference`` yardstick, one closed-loop scenario,
six repetitions, as the CI plan has. Variants change one thing each: the cost of a request, the spread,
the machine, the validity of runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from servingbench.harness.calibrate import build_baseline
from tests.reports.builders import FAST_A, FAST_MODEL, BundleSpec, ModelSpec, ScenarioSpec, build_bundle

REFERENCE = ModelSpec("reference", validate_ms=0.02, predict_ms=0.001, noise=0.01)
SPEC = BundleSpec(
    configs=(FAST_A,),
    models=(FAST_MODEL, REFERENCE),
    scenarios=(ScenarioSpec("single-c8", concurrency=8),),
    repetitions=6,
    capacity=True,
    invalid_runs=False,
)
A_A_DRIFT = 1.01  # the second calibration run's framework cost, relative to the first: 1 % A/A noise


def with_overhead(factor: float, spec: BundleSpec = SPEC) -> BundleSpec:
    """Every request costs ``factor`` x the framework overhead (same model): a serving-stack change."""
    return spec.with_(configs=(dataclasses.replace(FAST_A, overhead_ms=FAST_A.overhead_ms * factor),))


def with_model(**changes: Any) -> BundleSpec:
    """The model under test changed (its cost or its noise); the reference stays."""
    return SPEC.with_(models=(dataclasses.replace(FAST_MODEL, **changes), REFERENCE))


def make_baseline(root: Path, spec: BundleSpec = SPEC) -> Path:
    """A calibrated baseline (pooled A/A bundles + noise.json) as ``servingbench calibrate`` writes it."""
    first = build_bundle(root / "aa1", spec)
    second = build_bundle(root / "aa2", with_overhead(A_A_DRIFT, spec))
    return build_baseline([first, second], root / "baseline").baseline_dir


def edit_results(bundle: Path, change: Any) -> Path:
    """Rewrite ``bundle/results.json`` through ``change(document)`` (which edits it in place)."""
    path = bundle / "results.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return bundle


def move_to_other_machine(doc: dict[str, Any]) -> None:
    """Make a bundle look as if measured on another CPU."""
    doc["environment"].update(cpu_model="Other CPU @ 2.0GHz", fingerprint="c" * 64)


def with_reference(**changes: Any) -> BundleSpec:
    """The reference (yardstick) model changed; the model under test stays."""
    return SPEC.with_(models=(FAST_MODEL, dataclasses.replace(REFERENCE, **changes)))
