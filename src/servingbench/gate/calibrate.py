"""``servingbench calibrate``: run the plan N >= 5 times back to back (unchanged code: A/A) and keep the run-to-run
noise as the committed baseline (``noise.json``, see :mod:`servingbench.gate.noise`).

The statistics live in :mod:`servingbench.gate.noise`; this module runs plans and writes the file.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import numpy as np
from rich.console import Console

from servingbench.files import dumps_finite, write_atomic
from servingbench.harness import HarnessError, Plan, PlanError, load_plan
from servingbench.harness.speed import SPEED_PROBE
from servingbench.reports.bundle import Bundle, BundleError, load_bundle

from .baseline import DEFAULT_RUNS as CHECK_RUNS
from .check import CI_PLAN, run_times
from .noise import MIN_CALIBRATION_RUNS, MIN_SPEED_RUNS, NOISE_FILE, NoiseEntry, NoiseError, NoiseModel, measure_noise
from .paired import FAMILY_CONFIDENCE, family_level
from .result import EXIT_NO_VERDICT, EXIT_PASS, EXIT_USAGE

__all__ = [
    "DEFAULT_OUT_ROOT",
    "DEFAULT_RUNS",
    "WIDE_INTERVAL",
    "build_baseline",
    "calibrate",
    "run_calibrate",
    "wide_figures",
    "write_baseline",
]

DEFAULT_RUNS = 20
"""Calibration runs by default (at least `MIN_CALIBRATION_RUNS`; about 8 min of the CI plan, once): the family-level
t quantile of the prediction interval (4 figures) falls from 4.3 at 5 runs to 3.1 at 10 and 2.8 at 20."""
DEFAULT_OUT_ROOT = Path("results/calibrate")
WIDE_INTERVAL = 0.25
"""A figure whose family-level prediction interval reaches past +/-25 % cannot show a realistic regression against
the baseline on this machine: calibrate says so (more runs, or a quieter machine, or the A/B check)."""


def build_baseline(bundle_dirs: Sequence[Path], baseline_dir: Path) -> NoiseModel:
    """Measure the A/A noise of the runs in ``bundle_dirs`` and write ``baseline_dir/noise.json`` (atomically).

    Raises :class:`NoiseError` (one line) for unreadable bundles, fewer than 5 runs, or runs that do not compare.
    """
    return write_baseline(_load(bundle_dirs), baseline_dir)


def _load(bundle_dirs: Sequence[Path]) -> list[Bundle]:
    try:
        return [load_bundle(path) for path in bundle_dirs]
    except BundleError as exc:
        raise NoiseError(str(exc)) from exc


def write_baseline(bundles: Sequence[Bundle], baseline_dir: Path) -> NoiseModel:
    """:func:`build_baseline` for bundles already read."""
    noise = measure_noise(bundles)
    baseline_dir.mkdir(parents=True, exist_ok=True)
    return replace(noise, path=write_atomic(baseline_dir / NOISE_FILE, dumps_finite(noise.to_json())))


def calibrate(*, plan: Plan, runs: int, out_root: Path, console: Console) -> list[Path]:
    """Run ``plan`` ``runs`` times back to back; the bundle directories (raises ``HarnessError``)."""
    return run_times(plan, runs, out_root=out_root, console=console, label="servingbench calibrate: A/A run")


def wide_figures(noise: NoiseModel, confidence: float = FAMILY_CONFIDENCE, runs: int = CHECK_RUNS) -> list[str]:
    """Figures whose prediction interval for the mean of ``runs`` new runs (what the baseline check judges) at the
    check's family level reaches past :data:`WIDE_INTERVAL`."""
    level = family_level(len(noise.entries), confidence)
    widths = {entry.key.label(): math.expm1(_check_half_width(entry, level, runs)) for entry in noise.entries.values()}
    return [f"{label} +/-{width:.0%}" for label, width in widths.items() if width > WIDE_INTERVAL]


def _check_half_width(entry: NoiseEntry, level: float, runs: int) -> float:
    """The half-width a check of ``runs`` runs gets: the speed fit's at the calibration's mean speed when there is
    one, else the plain prediction interval's."""
    fit = entry.speed_fit
    return entry.half_width(level, runs) if fit is None else fit.half_width(level, fit.x_mean, runs)


def _no_fit_reason(noise: NoiseModel, bundles: Sequence[Bundle]) -> str:
    """Why the calibration has no speed fit: runs of another probe kind, runs without a probe, or too few runs."""
    kinds = [bundle.environment.get("speed_probe") for bundle in bundles]
    other = sum(kind not in (None, SPEED_PROBE) for kind in kinds)
    old = sum(kind is None for kind in kinds)
    if other or old:
        parts = [
            *([f"{other} made with another kind of machine-speed probe"] if other else []),
            *([f"{old} made before the probe had a kind (or in target mode)"] if old else []),
        ]
        return f"of {len(kinds)} runs, {' and '.join(parts)}: never fitted with this servingbench's ({SPEED_PROBE})"
    if any(entry.speeds for entry in noise.entries.values()):
        return f"the machine-speed probe's fit needs {MIN_SPEED_RUNS} runs, this calibration has {noise.runs}"
    return "no machine-speed probe in every run"


def _print(console: Console, noise: NoiseModel, bundles: Sequence[Bundle]) -> None:
    console.print(f"servingbench calibrate: {noise.runs} A/A runs, run-to-run noise per figure:", highlight=False)
    for entry in noise.entries.values():
        low, high = (math.exp(entry.log_mean + sign * entry.half_width(0.95)) for sign in (-1, 1))
        console.print(
            f"  {entry.key.label()}: sd {math.expm1(entry.log_sd):.1%} between runs, 95% prediction interval "
            f"[{low:.4g}, {high:.4g}]",
            highlight=False,
            markup=False,
        )
    fits = [(entry, entry.speed_fit) for entry in noise.entries.values()]
    probed = [(entry, fit) for entry, fit in fits if fit is not None]
    if probed:
        spread = math.expm1(float(np.std(np.log(probed[0][0].speeds), ddof=1)))
        console.print(
            f"  machine-speed probe ({SPEED_PROBE}): sd {spread:.1%} between runs; run-to-run sd left once each "
            "figure is regressed on it (what a check is judged against):",
            highlight=False,
        )
        for entry, fit in probed:
            console.print(
                f"    {entry.key.label()}: {math.expm1(fit.resid_sd):.1%} (slope {fit.slope:.2f}, the probe explains "
                f"{fit.explained:.0%} of the variance)",
                highlight=False,
                markup=False,
            )
    else:
        console.print(
            f"  {_no_fit_reason(noise, bundles)}: checks are judged against the plain interval", highlight=False
        )
    wide = wide_figures(noise)
    if wide:
        console.print(
            f"warning: {'; '.join(wide)} for the mean of {CHECK_RUNS} runs: the baseline check cannot show a "
            "regression smaller than that on this "
            "machine; calibrate with more runs on a quiet machine, or rely on the A/B check (make bench-ci)",
            highlight=False,
            markup=False,
        )
    if noise.machine.id is None:
        console.print(
            "warning: this machine has no /etc/machine-id: no run can be matched to this baseline", highlight=False
        )


def run_calibrate(
    *,
    plan_path: Path | None,
    runs: int,
    out_root: Path,
    baseline_dir: Path,
    from_bundles: Sequence[Path] = (),
    preset: str = "default",
    console: Console | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``servingbench calibrate``: 0 when the baseline is written, 2 for a usage error, 3 when the runs do not give
    a baseline (too few, invalid, another machine...)."""
    console = console or Console()
    err = stderr or sys.stderr
    if not from_bundles and runs < MIN_CALIBRATION_RUNS:
        print(f"servingbench calibrate: error: --runs must be at least {MIN_CALIBRATION_RUNS}, got {runs}", file=err)
        return EXIT_USAGE
    try:
        plan = load_plan(plan_path or CI_PLAN, preset)
    except PlanError as exc:
        print(f"servingbench calibrate: error: {exc}", file=err)
        return EXIT_USAGE
    try:
        bundles = _load(list(from_bundles) or calibrate(plan=plan, runs=runs, out_root=out_root, console=console))
        noise = write_baseline(bundles, baseline_dir)
    except (NoiseError, HarnessError) as exc:
        print(f"servingbench calibrate: no baseline: {exc}", file=err)
        return EXIT_NO_VERDICT
    _print(console, noise, bundles)
    console.print(f"baseline written to {noise.path}", highlight=False, markup=False)
    return EXIT_PASS
