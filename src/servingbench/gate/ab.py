"""Judge an A/B bundle: the ``head`` config against the ``base`` config, measured interleaved in one run.

Per figure, the per-unit log ratio head / base (a unit is a repetition, or the block of repetitions one server start
served when the plan restarts servers) goes through the paired t test of :mod:`servingbench.gate.paired`, at a level
Bonferroni-corrected over every figure of the check. A figure is a **regression** when its interval lies wholly on
the more-expensive side (significant) **and** its estimated cost change exceeds the material threshold: the
metric's default (5 %, p99 10 %), or one run-to-run standard deviation from calibration on this machine when that
is larger. Nothing from another machine or another time enters the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from servingbench.reports.bundle import Bundle

from .figures import GATE_METRICS, FigureKey, arm_values, cost_log, invalid_summary, run_value
from .fingerprint import Machine, machine_mismatch, plan_identity, plan_mismatch
from .noise import NoiseModel
from .paired import (
    FAMILY_CONFIDENCE,
    block_unit,
    family_level,
    paired_test,
    repetition_unit,
    unit_log_ratios,
    units_for_margin,
)
from .result import CheckResult, GateRow, classify, decide, no_verdict

__all__ = ["BASE", "HEAD", "MATERIAL_NOISE_SDS", "judge_ab", "material_threshold", "usable_noise"]

BASE = "base"
HEAD = "head"
MATERIAL_NOISE_SDS = 1.0
"""A change smaller than one standard deviation of a whole run of unchanged code on this machine (calibration) is
not material: users would see that much between two runs of the same code anyway."""


def material_threshold(key: FigureKey, noise: NoiseModel | None) -> tuple[float, str]:
    """The material threshold of a figure (relative cost change) and where it came from."""
    default = GATE_METRICS[key.metric].default_threshold
    entry = noise.figure(key) if noise is not None else None
    if entry is None:
        return default, "default"
    calibrated = math.expm1(MATERIAL_NOISE_SDS * entry.log_sd)
    if calibrated > default:
        return calibrated, f"A/A noise ({entry.n} runs)"
    return default, "default (above the A/A noise)"


def usable_noise(noise: NoiseModel | None, bundle: Bundle) -> tuple[NoiseModel | None, list[str]]:
    """``noise`` when it was measured on this bundle's machine with the same plan, else ``None`` and why."""
    if noise is None:
        return None, []
    where = f"calibration {noise.path}" if noise.path else "calibration"
    mismatch = machine_mismatch(noise.machine, Machine.of(bundle.environment))
    if mismatch is None:
        mismatch = plan_mismatch(noise.plan, plan_identity(bundle.plan))
        mismatch = None if mismatch is None else f"another plan ({mismatch})"
    if mismatch is not None:
        return None, [f"{where} not used for thresholds: {mismatch}; default thresholds apply"]
    return noise, [f"thresholds from {where} ({noise.runs} A/A runs on this machine) where above the defaults"]


def _unit(bundle: Bundle) -> tuple[Callable[[int], int], str, str]:
    """The unit of pairing, its name, and why."""
    restart = bundle.plan.get("restart_every")
    if isinstance(restart, int) and not isinstance(restart, bool) and restart > 0:
        return block_unit(restart), f"block of {restart} repetitions", "the repetitions of one server start"
    return repetition_unit, "repetition", "both servers stay up for the whole run"


def _row(
    key: FigureKey,
    head: dict[int, float],
    base: dict[int, float],
    unit: Callable[[int], int],
    level: float,
    family: int,
    noise: NoiseModel | None,
) -> GateRow:
    logs = [cost_log(value, key.metric) for value in unit_log_ratios(head, base, unit)]
    test = paired_test(logs, level=level)
    threshold, source = material_threshold(key, noise)
    material = math.log1p(threshold)
    settled = test.has_interval and -material <= (test.low or 0.0) and (test.high or 0.0) <= material
    verdict = classify(
        test.mean,
        worse=test.above_zero,
        better=test.below_zero,
        n=test.n,
        threshold=threshold,
        settled=settled,
        baseline=False,
    )
    more = None
    if verdict == "inconclusive" and test.sd is not None and test.mean is not None:
        more = units_for_margin(test.sd, test.n, level, max(abs(test.mean), material - abs(test.mean)))
    return GateRow(
        key,
        run_value(base.values()) if base else None,
        run_value(head.values()) if head else None,
        test.n,
        test.mean,
        test.low,
        test.high,
        None if test.p_value is None else min(1.0, test.p_value * family),
        threshold,
        source,
        verdict,
        more,
    )


def _notes(bundle: Bundle, unit: str, noise_notes: Sequence[str], invalid: Sequence[str]) -> list[str]:
    notes = [f"paired unit: {unit}", *noise_notes, *invalid]
    notes += [rule for rule in bundle.fairness if rule.startswith("VIOLATED:")]
    if bundle.capacity:
        notes.append("capacity searches are not judged by the gate (their steps run at rates chosen per config)")
    return notes


def judge_ab(bundle: Bundle, *, noise: NoiseModel | None = None, confidence: float = FAMILY_CONFIDENCE) -> CheckResult:
    """Judge ``head`` against ``base`` in one A/B bundle. Pure: reads the bundle (and the calibration ``noise``, used
    only for thresholds and only from this machine and plan), decides, returns the result."""
    environment = bundle.environment
    context = {
        "bundle": str(bundle.path),
        "machine": Machine.of(environment).to_json(),
        "head": {"commit": environment.get("git_revision"), "dirty": environment.get("git_dirty")},
    }
    missing = [name for name in (BASE, HEAD) if name not in bundle.configs]
    if missing:
        return no_verdict("ab", f"{bundle.path} is not an A/B run (no config {', '.join(missing)})", **context)
    if not bundle.complete:
        return no_verdict("ab", f"the run in {bundle.path} did not finish (interrupted or still running)", **context)
    noise, noise_notes = usable_noise(noise, bundle)
    unit, unit_text, why = _unit(bundle)
    head, base = arm_values(bundle, HEAD), arm_values(bundle, BASE)
    keys = sorted(head.keys() | base.keys())
    level = family_level(len(keys), confidence)
    rows = tuple(_row(key, head.get(key, {}), base.get(key, {}), unit, level, len(keys), noise) for key in keys)
    status, reason = decide("ab", rows)
    invalid = invalid_summary(bundle.runs, {BASE: "base", HEAD: "head"})
    if status == "no verdict" and invalid:
        reason += "; " + "; ".join(invalid)  # why the units are missing, in the one line CI shows
    notes = _notes(bundle, f"{unit_text} ({why})", noise_notes, invalid)
    return CheckResult("ab", status, reason, rows, tuple(notes), unit_text, level, context)
