"""Run-to-run (A/A) noise: how much one whole run of unchanged code differs from the next, on this machine.

``servingbench calibrate`` runs the plan N >= 5 times and keeps, per figure, each run's value (its median over
repetitions), the mean and standard deviation of their logs, and the prediction interval for one more run of the
same code: ``mean +/- t(n - 1) * sd * sqrt(1 + 1/n)`` on the log scale. The spread of repetitions *inside* one run
is not the noise that matters between runs (they share the machine's state; two runs minutes apart do not).

Each calibration run also keeps its machine-speed probe (:mod:`servingbench.harness.speed`: the median CPU time of a
fixed piece of work on the server's cores around every run). Where every calibration run has one, each figure's log
is regressed on the probe's log across the runs (:class:`SpeedFit`): the machine's speed, not the code, moves most
of what one run differs from the next on a shared VM, and a check made an hour later on a slower phase of the
machine is judged against the figure expected *at the speed it ran at*, with the regression's prediction interval
``t(n - 2) * s * sqrt(1/M + 1/n + (x - mean x)^2 / Sxx)``. The probe does not depend on the code under test, so the
adjustment cannot hide a change in it; a speed well outside the calibration's range is not extrapolated (no
verdict).

The committed-baseline check judges a new run against that prediction interval; the A/B check uses the noise only
for its material threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from servingbench.harness.speed import SPEED_PROBE
from servingbench.reports.bundle import Bundle

from .figures import MIN_UNITS, FigureKey, arm_values, run_value
from .fingerprint import Machine, plan_identity

__all__ = [
    "MIN_CALIBRATION_RUNS",
    "MIN_SPEED_RUNS",
    "NOISE_FILE",
    "NOISE_FORMAT",
    "NOISE_VERSION",
    "SPEED_EXTRAPOLATION",
    "NoiseEntry",
    "NoiseError",
    "NoiseModel",
    "SpeedFit",
    "load_noise",
    "measure_noise",
    "prediction_half_width",
    "prediction_scale",
    "run_speed",
]

NOISE_FILE = "noise.json"
NOISE_FORMAT = "servingbench-noise"
NOISE_VERSION = 2  # 1 was the spread of the old gate (max/min of run medians), unusable for a prediction interval
MIN_CALIBRATION_RUNS = MIN_UNITS
SOFTWARE_KEYS = ("python", "python_implementation", "packages")
PREDICTION_LEVEL = 0.95  # the two-sided level of the interval stored for a reader; the check uses its family level
SPEED_EXTRAPOLATION = 1.0
"""How far past the calibration's probe range (as a fraction of its width, on the log scale) the speed fit still
judges: out there the leverage term of its interval covers the fit's uncertainty if the line holds; much further a
straight line is a guess. Chosen from the third trial (docs/bench-ci.md): the VM ran up to 26 % faster than any of
the 16 calibration runs (1.15 range widths past the fastest), and with a limit of a quarter of the width 7 of 20 A/A
and 5 of 10 +15 % checks got no verdict; judged with the fit out to one range width, 19 A/A passed (1 no verdict)
and 10 of 10 +15 % failed; a second trial against the same calibration checked that choice."""
MIN_SPEED_RUNS = MIN_UNITS + 1
"""Calibration runs with a speed probe needed for the speed regression: its residual has n - 2 degrees of freedom,
so this keeps the t quantile's degrees of freedom at the plain interval's minimum."""


class NoiseError(Exception):
    """Calibration cannot measure the noise, or a noise file is unusable. ``str(err)`` is one line."""


def prediction_scale(sd: float, n: int, runs: int = 1) -> float:
    """The standard error (log scale) of the mean of ``runs`` new runs around the mean of ``n`` calibration runs with
    log standard deviation ``sd``: sd * sqrt(1 / runs + 1 / n)."""
    if runs < 1:
        raise ValueError(f"a prediction interval is for at least 1 new run, got {runs}")
    return sd * math.sqrt(1.0 / runs + 1.0 / n)


def prediction_half_width(sd: float, n: int, level: float, runs: int = 1) -> float:
    """Half-width (log scale) of the two-sided ``level`` prediction interval for the mean (of logs) of ``runs`` new
    runs, from ``n`` runs with log standard deviation ``sd``: t(1 - (1 - level) / 2, n - 1) * sd * sqrt(1 / runs +
    1 / n). One new run carries its whole run-to-run noise; the mean of several carries less of it."""
    if n < 2:
        raise ValueError(f"a prediction interval needs at least 2 runs, got {n}")
    return float(scipy_stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1)) * prediction_scale(sd, n, runs)


@dataclass(frozen=True)
class SpeedFit:
    """A figure's log regressed on the machine-speed probe's log over the calibration runs (ordinary least squares).

    ``slope``: how much of a change in the probe shows in the figure (1: all of it; the CI plan's server CPU per
    request measured about 0.4 with the first, idle-core probe and 0.75 with the in-load one, its synthetic model
    spinning on the wall clock); ``resid_sd``: the run-to-run noise
    the probe does not explain (n - 2 degrees of freedom); ``x_*``: the probe logs' mean, sum of squared deviations,
    and range."""

    n: int
    slope: float
    y_mean: float
    x_mean: float
    sxx: float
    resid_sd: float
    x_min: float
    x_max: float

    @classmethod
    def of(cls, speed_logs: Sequence[float], figure_logs: Sequence[float]) -> SpeedFit | None:
        """The fit, or ``None`` with fewer than :data:`MIN_SPEED_RUNS` runs or a probe that never moved."""
        x, y = np.asarray(speed_logs, dtype=float), np.asarray(figure_logs, dtype=float)
        if len(x) != len(y) or len(x) < MIN_SPEED_RUNS:
            return None
        if not float(np.ptp(x)) > 1e-9:  # logs: a probe that moved by less than a millionth never moved
            return None
        sxx = float(np.sum((x - x.mean()) ** 2))
        slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
        residuals = y - y.mean() - slope * (x - x.mean())
        resid_sd = float(np.sqrt(np.sum(residuals**2) / (len(x) - 2)))
        return cls(len(x), slope, float(y.mean()), float(x.mean()), sxx, resid_sd, float(x.min()), float(x.max()))

    def expected(self, speed_log: float) -> float:
        """The figure's expected log at probe log ``speed_log``."""
        return self.y_mean + self.slope * (speed_log - self.x_mean)

    def scale(self, speed_log: float, runs: int = 1) -> float:
        """Standard error (log scale) of the mean of ``runs`` new runs, at mean probe log ``speed_log``, around
        :meth:`expected`: s * sqrt(1/runs + 1/n + (x - mean x)^2 / Sxx)."""
        if runs < 1:
            raise ValueError(f"a prediction interval is for at least 1 new run, got {runs}")
        leverage = (speed_log - self.x_mean) ** 2 / self.sxx
        return self.resid_sd * math.sqrt(1.0 / runs + 1.0 / self.n + leverage)

    def half_width(self, level: float, speed_log: float, runs: int = 1) -> float:
        """Half-width of the two-sided ``level`` prediction interval (t with n - 2 degrees of freedom)."""
        return float(scipy_stats.t.ppf(1.0 - (1.0 - level) / 2.0, self.n - 2)) * self.scale(speed_log, runs)

    def p_value(self, change_log: float, speed_log: float, runs: int) -> float:
        """Two-sided p-value of a mean this far (``change_log``) from :meth:`expected` under "same code"."""
        scale = self.scale(speed_log, runs)
        if scale == 0.0:
            return 1.0 if change_log == 0.0 else 0.0
        return float(2.0 * scipy_stats.t.sf(abs(change_log) / scale, self.n - 2))

    def covers(self, speed_log: float) -> bool:
        """Whether ``speed_log`` lies within the calibration runs' range, widened on each side by
        :data:`SPEED_EXTRAPOLATION` of its width (the fit is not extrapolated further)."""
        slack = SPEED_EXTRAPOLATION * (self.x_max - self.x_min)
        return self.x_min - slack <= speed_log <= self.x_max + slack

    @property
    def explained(self) -> float:
        """The share of the figure's run-to-run variance the probe explains (R^2)."""
        total = self.slope**2 * self.sxx + self.resid_sd**2 * (self.n - 2)
        return 0.0 if total == 0.0 else self.slope**2 * self.sxx / total


def run_speed(bundle: Bundle, config: str) -> float | None:
    """A whole run's machine-speed probe: the median over ``config``'s valid scenario runs that recorded one
    (``None`` with fewer than :data:`MIN_UNITS`, e.g. a bundle made before the probe existed, or target mode, and
    for a bundle whose probe is of another kind than this servingbench's :data:`SPEED_PROBE`)."""
    if bundle.environment.get("speed_probe") != SPEED_PROBE:
        return None
    values = [
        run.speed_probe_us
        for run in bundle.scenario_runs
        if run.config == config and run.speed_probe_us is not None and run.speed_probe_us > 0.0
    ]
    return float(np.median(values)) if len(values) >= MIN_UNITS else None


@dataclass(frozen=True)
class NoiseEntry:
    """The A/A noise of one figure of one config: each run's value, and the mean and sd of their logs; ``speeds``:
    each run's machine-speed probe, when every calibration run had one (else empty)."""

    config: str
    key: FigureKey
    run_values: tuple[float, ...]
    speeds: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.run_values)

    @property
    def log_mean(self) -> float:
        return float(np.mean(np.log(self.run_values)))

    @property
    def log_sd(self) -> float:
        return float(np.std(np.log(self.run_values), ddof=1))

    def half_width(self, level: float, runs: int = 1) -> float:
        """The prediction interval's half-width on the log scale at two-sided ``level``, for the mean of ``runs``."""
        return prediction_half_width(self.log_sd, self.n, level, runs)

    @cached_property
    def speed_fit(self) -> SpeedFit | None:
        """The figure regressed on the speed probe across the calibration runs (``None`` without probes); fitted
        once per entry (a check reads it for its expectation, interval and the probe's range)."""
        if len(self.speeds) != self.n:
            return None
        return SpeedFit.of(np.log(self.speeds).tolist(), np.log(self.run_values).tolist())

    def to_json(self) -> dict[str, Any]:
        half = self.half_width(PREDICTION_LEVEL)
        entry: dict[str, Any] = {
            "config": self.config,
            **self.key._asdict(),
            "run_values": list(self.run_values),
            "log_mean": self.log_mean,
            "log_sd": self.log_sd,
            "prediction_interval": [math.exp(self.log_mean - half), math.exp(self.log_mean + half)],
        }
        fit = self.speed_fit
        if self.speeds:
            entry["speeds"] = list(self.speeds)
        if fit is not None:
            entry["speed_fit"] = {"slope": fit.slope, "resid_log_sd": fit.resid_sd, "explained": fit.explained}
        return entry


@dataclass(frozen=True)
class NoiseModel:
    """What calibration measured: ``runs`` A/A runs of one plan on one machine, one entry per config and figure."""

    runs: int
    machine: Machine
    plan: Mapping[str, Any]
    created: tuple[str, ...]
    entries: Mapping[tuple[str, FigureKey], NoiseEntry] = field(default_factory=dict)
    software: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    stale_probe: str | None = None
    """The kind of the speed probe a noise file's ``speeds`` were made with, when it is not this servingbench's
    :data:`SPEED_PROBE` (its speeds are then dropped: the check falls back to the plain interval and says why)."""

    @property
    def speed_fit(self) -> SpeedFit | None:
        """A figure's speed fit, for what every figure's shares: the calibration runs' probes (mean and range);
        ``None`` when no figure has one."""
        return next((fit for entry in self.entries.values() if (fit := entry.speed_fit) is not None), None)

    def figure(self, key: FigureKey) -> NoiseEntry | None:
        """The entry of ``key`` for the plan's config (a CI plan has one); ``None`` when calibration lacks it."""
        return next((entry for (_, other), entry in self.entries.items() if other == key), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": NOISE_FORMAT,
            "version": NOISE_VERSION,
            "runs": self.runs,
            "machine": self.machine.to_json(),
            "plan": dict(self.plan),
            "created": list(self.created),
            "software": dict(self.software),
            "prediction_level": PREDICTION_LEVEL,
            **({"speed_probe": SPEED_PROBE} if any(entry.speeds for entry in self.entries.values()) else {}),
            "figures": [entry.to_json() for entry in self.entries.values()],
        }


def _check_calibration(bundles: Sequence[Bundle]) -> tuple[Machine, dict[str, Any]]:
    if len(bundles) < MIN_CALIBRATION_RUNS:
        raise NoiseError(f"calibration needs at least {MIN_CALIBRATION_RUNS} runs, got {len(bundles)}")
    machine = Machine.of(bundles[0].environment)
    plan = plan_identity(bundles[0].plan)
    for bundle in bundles:
        if not bundle.complete:
            raise NoiseError(f"{bundle.path} is incomplete: re-run the calibration")
        other = Machine.of(bundle.environment)
        if other.id != machine.id:
            raise NoiseError(f"{bundle.path} ran on {other.describe()}, the first run on {machine.describe()}")
        if plan_identity(bundle.plan) != plan:
            raise NoiseError(f"{bundle.path} measured another plan than {bundles[0].path}")
    return machine, plan


def measure_noise(bundles: Sequence[Bundle]) -> NoiseModel:
    """The A/A noise of every figure measured with at least :data:`MIN_UNITS` valid repetitions in every one of
    ``bundles`` (runs of one plan on one machine). Raises :class:`NoiseError` for fewer than 5 runs, mixed machines
    or plans, an incomplete run, or no figure measured in every run."""
    machine, plan = _check_calibration(bundles)
    configs = sorted({run.config for bundle in bundles for run in bundle.scenario_runs})
    entries: dict[tuple[str, FigureKey], NoiseEntry] = {}
    for config in configs:
        per_run = [arm_values(bundle, config) for bundle in bundles]
        speeds = [run_speed(bundle, config) for bundle in bundles]
        probed = tuple(speed for speed in speeds if speed is not None)
        for key in sorted(per_run[0]):
            if all(len(values.get(key, {})) >= MIN_UNITS for values in per_run):
                values = tuple(run_value(v[key].values()) for v in per_run)
                entries[(config, key)] = NoiseEntry(config, key, values, probed if len(probed) == len(values) else ())
    if not entries:
        raise NoiseError(f"no figure has {MIN_UNITS} valid repetitions in every calibration run")
    created = tuple(bundle.created or "" for bundle in bundles)
    return NoiseModel(len(bundles), machine, plan, created, entries, _software(bundles[0].environment))


def _software(environment: Mapping[str, Any]) -> dict[str, Any]:
    """The versions a change may bump (listed by the check when they differ)."""
    return {key: environment.get(key) for key in SOFTWARE_KEYS if key in environment}


def _error(path: Path, problem: str) -> NoiseError:
    return NoiseError(f"unusable noise file {path}: {problem} (re-make it with `make baseline` on this machine)")


def _entry(raw: object, path: Path) -> NoiseEntry:
    if not isinstance(raw, dict):
        raise _error(path, "a figure is not an object")
    try:
        key = FigureKey(str(raw["model"]), str(raw["scenario"]), str(raw["metric"]))
        values = tuple(float(value) for value in raw["run_values"])
        speeds = tuple(float(value) for value in raw.get("speeds") or ())
        config = str(raw["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _error(path, f"a figure lacks or mistypes {exc}") from exc
    if len(values) < MIN_CALIBRATION_RUNS or not all(math.isfinite(v) and v > 0.0 for v in values):
        raise _error(path, f"{' '.join(key)} needs {MIN_CALIBRATION_RUNS}+ positive run values")
    if speeds and (len(speeds) != len(values) or not all(math.isfinite(v) and v > 0.0 for v in speeds)):
        raise _error(path, f"{' '.join(key)}: 'speeds' needs one positive probe per run value")
    return NoiseEntry(config, key, values, speeds)


def load_noise(path: Path) -> NoiseModel:
    """Read a ``noise.json``; raises :class:`NoiseError` (one line) when it is missing, of another format or version,
    or malformed."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NoiseError(f"no noise file at {path}: make one with `make baseline` on this machine") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(path, str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("format") != NOISE_FORMAT:
        raise _error(path, f"format is not {NOISE_FORMAT!r}")
    if doc.get("version") != NOISE_VERSION:
        raise _error(path, f"version {doc.get('version')!r}, this servingbench reads version {NOISE_VERSION}")
    machine = doc.get("machine")
    plan = doc.get("plan")
    figures = doc.get("figures")
    if not isinstance(machine, dict) or not isinstance(plan, dict) or not isinstance(figures, list) or not figures:
        raise _error(path, "needs 'machine' and 'plan' objects and a non-empty 'figures' list")
    entries = {(entry.config, entry.key): entry for entry in (_entry(raw, path) for raw in figures)}
    probe = doc.get("speed_probe")
    stale = None
    if any(entry.speeds for entry in entries.values()) and probe != SPEED_PROBE:
        stale = str(probe or "before/after the load, 20,000 iterations")  # the first probe wrote no kind
        entries = {item: replace(entry, speeds=()) for item, entry in entries.items()}
    created = tuple(str(item) for item in doc.get("created") or ())
    stored = doc.get("software")
    software: dict[str, Any] = stored if isinstance(stored, dict) else {}
    runs = min(entry.n for entry in entries.values())
    return NoiseModel(runs, Machine.of(_machine_env(machine)), plan, created, entries, software, path, stale)


def _machine_env(machine: Mapping[str, Any]) -> dict[str, Any]:
    """The stored machine in the shape of a bundle environment (so :meth:`Machine.of` reads both)."""
    return {
        "machine_id": machine.get("id"),
        "cpu_model": machine.get("cpu_model"),
        "logical_cpus": machine.get("logical_cpus"),
    }
