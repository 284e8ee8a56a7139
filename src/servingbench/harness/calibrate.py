"""A/A calibration for the CI gate: run the same plan several times and keep the run-to-run noise with the baseline.

``servingbench calibrate`` runs the CI plan ``runs`` times back to back (same code, same model: an A/A
experiment), then writes the committed baseline: one slim pooled bundle (``results.json`` + ``summary.csv``,
every run of every calibration run, no Locust artefacts or histograms) and ``noise.json``, the spread of each
figure between the runs, from which ``servingbench check`` derives its thresholds. The statistics themselves
live in :mod:`servingbench.reports.regression`; this module only runs plans and writes files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from servingbench.files import dumps_finite, write_atomic
from servingbench.harness.bundle import RESULTS_FILE, SUMMARY_FILE, summary_csv
from servingbench.harness.runner import HarnessError, run_benchmark
from servingbench.reports.bundle import Bundle, BundleError, load_bundle
from servingbench.reports.regression import ABSOLUTE, DRIFT_METRICS, NOISE_FILE, NoiseModel, measure_noise

__all__ = [
    "BASELINE_FILES",
    "CI_PLAN",
    "DEFAULT_BASELINE_DIR",
    "DEFAULT_OUT_ROOT",
    "DEFAULT_RUNS",
    "STEADY_SPREAD",
    "Calibration",
    "CalibrationError",
    "build_baseline",
    "calibrate",
    "pool_documents",
    "run_calibrate",
    "unsteady",
]

CI_PLAN = Path(__file__).with_name("ci_plan.toml")
DEFAULT_RUNS = 3  # A/A runs; two give a single ratio, three a spread worth the name
MIN_RUNS = 2
DEFAULT_OUT_ROOT = Path("results/calibrate")
DEFAULT_BASELINE_DIR = Path("baselines/ci")
BASELINE_FILES = (RESULTS_FILE, SUMMARY_FILE, NOISE_FILE)
EXIT_OK = 0
EXIT_ERROR = 2
# A/A spread of the machine's pace (throughput, p50, CPU per request) above which the machine was not steady
# while the baseline was made: the gate's thresholds would be wide and its baseline a moving target.
STEADY_SPREAD = 0.10
# Per-run payload the gate never reads: dropped from the committed baseline to keep it small.
SLIM_RUN_FIELDS: dict[str, Any] = {"histograms": {}, "artifacts": {}, "log_tail": None}


class CalibrationError(Exception):
    """Calibration cannot produce a baseline. ``str(err)`` is one line."""


@dataclass(frozen=True)
class Calibration:
    """What calibration produced: the A/A bundles, the baseline directory and the noise written into it."""

    bundles: tuple[Path, ...]
    baseline_dir: Path
    noise: NoiseModel


def _read_document(bundle_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((bundle_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read {bundle_dir / RESULTS_FILE}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f"{bundle_dir / RESULTS_FILE} must hold a JSON object")
    return doc


def _repetition_span(docs: Sequence[Mapping[str, Any]]) -> int:
    """One more than the highest repetition in any bundle: the offset between pooled runs' repetition numbers."""
    repetitions = [int(run.get("repetition", 0)) for doc in docs for run in doc.get("runs", [])]
    repetitions += [int(item.get("repetition", 0)) for doc in docs for item in doc.get("capacity") or []]
    return max(repetitions, default=0) + 1


def _pooled_run(run: Mapping[str, Any], index: int, offset: int, order: int) -> dict[str, Any]:
    prefix = f"a{index + 1}-"
    return {
        **run,
        **SLIM_RUN_FIELDS,
        "id": prefix + str(run["id"]),
        "session": None if run.get("session") is None else prefix + str(run["session"]),
        "repetition": int(run["repetition"]) + offset,
        "order": order,
    }


def pool_documents(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``results.json`` document holding every run of ``docs`` (A/A runs of one plan).

    Run ids get an ``a<N>-`` prefix and repetitions are renumbered so that run N's repetitions follow run N-1's;
    pairing within a repetition (model vs reference) is kept. Environment, plan and configs are the first run's.
    """
    if not docs:
        raise CalibrationError("nothing to pool: no bundles")
    span = _repetition_span(docs)
    runs: list[dict[str, Any]] = []
    capacity: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        for run in doc.get("runs", []):
            runs.append(_pooled_run(run, index, index * span, len(runs) + 1))
        for item in doc.get("capacity") or []:
            capacity.append({**item, "repetition": int(item.get("repetition", 0)) + index * span})
    pooled = {**docs[0], "finished": docs[-1].get("finished"), "complete": all(doc.get("complete") for doc in docs)}
    pooled.update(runs=runs, calibration={"runs": len(docs), "created": [doc.get("created") for doc in docs]})
    if capacity:
        pooled["capacity"] = capacity
    return pooled


def _check_bundles(bundles: Sequence[Bundle]) -> None:
    if len(bundles) < MIN_RUNS:
        raise CalibrationError(f"calibration needs at least {MIN_RUNS} runs of the same plan, got {len(bundles)}")
    for bundle in bundles:
        if not bundle.complete:
            raise CalibrationError(f"{bundle.path} is incomplete: re-run the calibration")
    fingerprints = {bundle.fingerprint for bundle in bundles}
    if len(fingerprints) != 1:
        raise CalibrationError("the calibration runs come from different environments (fingerprints differ)")


def build_baseline(bundle_dirs: Sequence[Path], baseline_dir: Path) -> Calibration:
    """Measure the A/A noise of ``bundle_dirs`` and write the slim pooled baseline into ``baseline_dir``.

    Writes ``results.json``, ``summary.csv`` and ``noise.json`` (each atomically); other files there are kept.
    """
    try:
        bundles = [load_bundle(path) for path in bundle_dirs]
    except BundleError as exc:
        raise CalibrationError(str(exc)) from exc
    _check_bundles(bundles)
    noise = measure_noise(bundles)
    pooled = pool_documents([_read_document(path) for path in bundle_dirs])
    baseline_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(baseline_dir / RESULTS_FILE, dumps_finite(pooled))
    write_atomic(baseline_dir / SUMMARY_FILE, summary_csv(pooled["runs"]))
    write_atomic(baseline_dir / NOISE_FILE, dumps_finite(noise.to_json()))
    return Calibration(tuple(bundle_dirs), baseline_dir, noise)


def calibrate(
    *,
    plan_path: Path | None = CI_PLAN,
    runs: int = DEFAULT_RUNS,
    out_root: Path = DEFAULT_OUT_ROOT,
    baseline_dir: Path = DEFAULT_BASELINE_DIR,
    preset: str = "default",
    console: Console | None = None,
) -> Calibration:
    """Run the plan ``runs`` times back to back (an A/A experiment) and write the baseline with its noise.

    Each run is a full bundle under ``out_root``; raises :class:`HarnessError` when the plan cannot run.
    """
    if runs < MIN_RUNS:
        raise CalibrationError(f"--runs must be at least {MIN_RUNS}, got {runs}")
    console = console or Console()
    bundle_dirs = []
    for index in range(runs):
        console.print(f"servingbench calibrate: A/A run {index + 1} of {runs}", highlight=False)
        bundle_dirs.append(
            run_benchmark(
                plan_path=plan_path, preset=preset, out_root=out_root, targets=[], load_workers=None, console=console
            )
        )
    return build_baseline(bundle_dirs, baseline_dir)


def unsteady(noise: NoiseModel) -> list[str]:
    """Figures of the machine's pace that moved more than :data:`STEADY_SPREAD` between the A/A runs."""
    return [
        f"{' '.join(entry.key)} {entry.spread:.0%}"
        for entry in noise.entries.values()
        if entry.basis == ABSOLUTE and entry.key.metric in DRIFT_METRICS and entry.spread > STEADY_SPREAD
    ]


def _print_noise(console: Console, calibration: Calibration) -> None:
    for entry in calibration.noise.entries.values():
        if entry.basis == "absolute":
            where = " ".join(entry.key)
            console.print(f"  {where}: A/A spread {entry.spread:.1%}", highlight=False, markup=False)


def run_calibrate(
    *,
    plan_path: Path | None,
    runs: int,
    out_root: Path,
    baseline_dir: Path,
    from_bundles: Sequence[Path] = (),
    console: Console | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``servingbench calibrate``: run (or, with ``from_bundles``, reuse) A/A runs and write the baseline; 0 or 2."""
    console = console or Console()
    try:
        if from_bundles:
            calibration = build_baseline(list(from_bundles), baseline_dir)
        else:
            calibration = calibrate(
                plan_path=plan_path, runs=runs, out_root=out_root, baseline_dir=baseline_dir, console=console
            )
    except (CalibrationError, HarnessError) as exc:
        print(f"servingbench calibrate: error: {exc}", file=stderr or sys.stderr)
        return EXIT_ERROR
    console.print(f"servingbench calibrate: {len(calibration.bundles)} A/A runs, noise per figure:", highlight=False)
    _print_noise(console, calibration)
    moving = unsteady(calibration.noise)
    if moving:
        console.print(
            f"warning: the machine was not steady during calibration ({'; '.join(moving)} between A/A runs): "
            "thresholds will be wide; re-run `make baseline` on a quiet machine before committing it",
            highlight=False,
            markup=False,
        )
    files = ", ".join(BASELINE_FILES)
    console.print(f"baseline written to {calibration.baseline_dir} ({files})", highlight=False, markup=False)
    return EXIT_OK
