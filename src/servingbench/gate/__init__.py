"""The CI gate: does a change make serving slower? A room of its own that reads bundles as reports do.

- :func:`check` (``servingbench check``): base and head in one interleaved run on this machine
  (``--base REF``), or one run against a committed baseline from this same machine (``--baseline DIR``);
- :func:`judge_ab`, :func:`judge_baseline`: the pure decisions over loaded bundles;
- :func:`paired_test`: the two-arm paired t test on per-unit log ratios;
- :mod:`~servingbench.gate.noise` and ``servingbench calibrate``: run-to-run (A/A) noise and its prediction interval;
- :mod:`~servingbench.gate.fingerprint`: which machine and which plan a bundle measured;
- :mod:`~servingbench.gate.environments`: the base commit's environment beside the head's.

The harness never imports this package; this package drives the harness and reads its bundles.
"""

from __future__ import annotations

from .ab import BASE, HEAD, judge_ab
from .baseline import judge_baseline
from .check import CI_PLAN, CheckRequest, GateUsageError, ab_plan, check, run_ab
from .environments import BaseBuildError, BaseEnvironment, RefError, prepare_base
from .figures import GATE_METRICS, MIN_UNITS, FigureKey
from .noise import NOISE_FILE, NoiseError, NoiseModel, load_noise, measure_noise
from .paired import PairedTest, family_level, paired_test
from .result import (
    EXIT_INTERRUPTED,
    EXIT_NO_VERDICT,
    EXIT_PASS,
    EXIT_REGRESSION,
    EXIT_USAGE,
    CheckResult,
    GateRow,
)

__all__ = [
    "BASE",
    "CI_PLAN",
    "EXIT_INTERRUPTED",
    "EXIT_NO_VERDICT",
    "EXIT_PASS",
    "EXIT_REGRESSION",
    "EXIT_USAGE",
    "GATE_METRICS",
    "HEAD",
    "MIN_UNITS",
    "NOISE_FILE",
    "BaseBuildError",
    "BaseEnvironment",
    "CheckRequest",
    "CheckResult",
    "FigureKey",
    "GateRow",
    "GateUsageError",
    "NoiseError",
    "NoiseModel",
    "PairedTest",
    "RefError",
    "ab_plan",
    "check",
    "family_level",
    "judge_ab",
    "judge_baseline",
    "load_noise",
    "measure_noise",
    "paired_test",
    "prepare_base",
    "run_ab",
]
