"""Capacity at a reference speed: the same curves, each repetition's capacity scaled to the speed its server core
would have had at the reference probe reading (by default the run's own fast speed).

Why: on a shared VM the server core's speed moves by up to 1.6x within seconds and between phases minutes apart
(:mod:`servingbench.harness.speed`), and a CPU-bound server's capacity moves with it. Within one run every config
meets the same phases (the repetitions are interleaved), so comparisons in a run are fair; but a capacity in req/s
measured in the machine's fast phase and one measured in its slow phase differ by the speed, not the code, and two
`make bench` runs an hour apart disagree by that much. Every capacity step records the speed probe sampled on the
server's core during its window (``Run.speed_probe_us``: CPU microseconds of fixed interpreter work, higher is
slower), so each curve has the speed it ran at.

The model: ``capacity = k * probe ** -b``. ``b`` is fitted on the run's own curves (pooled within each config, so
the differences between configs do not enter it): log capacity against log probe, centred per config, least squares.
A CPU-bound server has ``b`` near 1 (twice as slow a core, half the requests); a server that waits (``sleep``, I/O)
near 0; a capacity at a p99 target can fall faster than the core's speed, because the slow phase also stalls. The
exponent applied is the fit clipped to [0, :data:`MAX_EXPONENT`]: the upper clip guards against a wild fit, below 0
has no physical meaning.

The reference (the report's rule, :data:`DEFAULT_RULE`) is the run's own fast speed: the :data:`REFERENCE_QUANTILE`
of all its probe readings. Why not a fixed reading: until 2026-12-04 it was 500 us, the middle of the first 2-core
VM's phases (350 to 650 us), and a second machine twice as fast read 205 to 440 us. There every figure was an
extrapolation by a factor of about 0.3, which multiplied each run's exponent error, and three sets of three `make
bench` runs disagreed at the reference speed by up to 51.5, 32.6 and 31.5 % of their median (as measured 25.9, 24.3
and 14.0 %). The run's own 10th percentile read 214 to 219 us in all twelve runs (its fast phase, which every run
visited while the share of the slow phase ran from 0.12 to 0.56), and lies within the speeds the curves ran at on
any machine. What it cannot do: a run that never left the machine's slow phase is stated at that speed, so two runs
compare at their own references only when those agree; the text says so, and `scripts/capacity_reproducibility.py
--shared-reference` brings runs to one reference. Under this rule those three sets and a fourth, measured after the
rule was frozen, disagree by up to 12.4, 15.4, 8.8 and 15.4 % (a fifth, with 14 curves a run, 18.4 %): a config's
curves spread by 0.11 to 0.23 (sd of log) at one speed there, and a run that never entered the slow phase came out
higher for every config, which the probe does not read (docs/measurements.md, sets 10 and 11).

Why the fit is not corrected for the noise in the curves' probes (:attr:`SpeedRule.noise_correction`, off by
default): a curve's probe (the median of its steps' readings) measures the speed that set its capacity with an
error, which pulls a least-squares slope towards 0 by the reliability ratio; dividing by an estimate of it (1 minus
the steps' noise over the curves' spread within configs, floored at :data:`MIN_RELIABILITY`) brought the first
VM's five sets from 10.6-20.7 % to 10.5-17.0 %. On the second machine it over-corrected: the reliability read 0.50
to 0.67, a curve's steps there often straddle the two phases (real speed changes, which the estimate takes for
noise), and curves that stayed in one phase gave an elasticity of about 0.77 where the corrected exponents read
0.94 to 1.50. Without it, at a reference inside the machine's speeds, set 9 agreed within 8.8 % (docs/measurements.md).
The estimate is kept behind the rule for what-ifs.

The memory term (:attr:`SpeedRule.memory`): a what-if, off in the report's rule. The probe above is an interpreter
loop whose data stay in the core's L1 cache, so it does not feel a neighbour that contends for the shared caches. A
server does: in set 11 (three `make bench` runs an hour apart) one run's servers needed up to 33 % more CPU per
request than another's at the same probe reading, and came out 7 to 25 % lower for every config at the reference
speed. A plan with ``memory_probe_steps`` (5000 validated) records a memory probe on every run (``memory_probe_us``,
a chase through memory timed on the server's core, :mod:`servingbench.harness.speed`), and with the term the model
becomes ``capacity = k * probe ** -b * memory ** -c``: both slopes fitted jointly (least squares centred per config,
the error cluster-robust over repetitions), each clipped to [0, :data:`MAX_EXPONENT`], the memory probe's reference
its own :data:`REFERENCE_QUANTILE` of the run's readings. It is left out, and the text says why, when the bundle has
no readings of a chase kind, a fitted curve lacks one, the memory probe hardly moved, or the two probes moved only
together (the design's condition number over :data:`MAX_CONDITION`). Why it is not the report's rule: in set 12,
frozen beforehand (docs/measurements.md), it gave 19.0 % where the loop alone gave 14.7 % on the same three runs;
the memory slopes fitted per run read -1.34, -3.17 and -2.92 (standard errors 0.37 to 0.76), so the term added the
fit's noise where it was to remove the run's. Over 2-s windows of one server the chase tracks throughput better than
the loop (r 0.76 against 0.61); over one run's 45 curves, each a few steps at rates that load the core differently,
its slope is not pinned down.

Each repetition's capacity (or its censoring bound) becomes ``capacity * (probe / reference) ** b`` (times the memory
term's factor where there is one). A config's
figure at the reference speed is the geometric mean of those values with the t interval on their logs
(:func:`~servingbench.reports.stats.log_mean_interval`), not their median: what is left once the speed is taken out
is a spread of 10-20 % around a value, where the median of 9 uses about two thirds of the information; over seven
`make bench` runs the geometric mean moved 0.068 (sd of log, rms over configs) between runs, the median 0.079
(docs/measurements.md). A config with a censored repetition keeps the median with the censored interval, as its
measured figure has. The verdicts and the order stay on the measured values: within a run the configs meet the same
phases (interleaved), and a comparison there needs no correction that would add the exponent's error and the probe's
own noise to it.

No adjustment (the figures stay as measured, and the report says why) when the bundle's probe is of a kind without a
reference, when fewer than :data:`MIN_CURVES` curves have both a capacity and a probe, or when the probe moved too
little within configs (:data:`MIN_LOG_SPREAD`) to say how capacity follows it.

What it cannot show: the reference is a reading of this probe, not a machine; "capacity at the reference speed" is
a normalised figure, not what the machine serves at every moment (the as-measured figure is, in that run). A
slowdown the interpreter loop does not feel (memory bandwidth, the network stack) is not corrected. The exponent
rests on one run's spread of speeds. The interval of a config's geometric mean at the reference speed carries its
standard error (:func:`exponent_log_se`): an error e in the exponent moves every repetition of a config by e times
its log(probe / reference) alike, so the repetitions' spread cannot show it; it is added in quadrature, and grows
with how far from the reference speed the config's curves ran (a run in the machine's fast phase, far from the
reference, gets a wider interval than one that ran near it). The exponent is also the one that best removes the
spread between repetitions, so the t part of that interval is a little narrower than an independent one would be. A
config whose figure is the median (a censored repetition) has the censored interval without that term. The error is
the fit's (over the reliability, where the correction is on), also where the exponent applied is clipped: at 1.5
the gap between the fit and the clip is not counted; at 0 the figure is the one measured and its interval is still
widened. Curves censored (no capacity value) do not enter the fit. The uncorrected fit is attenuated by the noise in
the curves' probes (a slightly low exponent); near a reference within the machine's speeds that moves a figure by
the attenuation times a small log(probe / reference).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from statistics import median, variance

import numpy as np

from ..harness.speed import SPEED_PROBE
from .bundle import CapacityResult, Run

__all__ = [
    "DEFAULT_RULE",
    "MAX_CONDITION",
    "MAX_EXPONENT",
    "MEMORY_PROBE_PREFIX",
    "MIN_CURVES",
    "MIN_LOG_SPREAD",
    "MIN_RELIABILITY",
    "PROBE_KINDS",
    "REFERENCE_QUANTILE",
    "MemoryTerm",
    "SpeedAdjustment",
    "SpeedRule",
    "adjusted",
    "curve_probe",
    "exponent_log_se",
    "probe_readings",
    "reference_probe",
    "speed_adjustment",
]

PROBE_KINDS = frozenset({SPEED_PROBE})
"""The probe kinds whose readings the adjustment understands (a bundle with another, or none, is shown as measured)."""
MEMORY_PROBE_PREFIX = "chase-"
"""The memory probe kinds the memory term reads: any chase (its readings are compared within a run only)."""
MAX_CONDITION = 1e6
"""The joint fit refuses a design whose condition number is over this: the two probes moved together (one slope
cannot be told from the other), and the first probe alone is fitted."""
REFERENCE_QUANTILE = 0.1
"""The reference speed is this quantile of the run's own probe readings: the machine's fast phase in that run, so
the reference lies within the speeds the curves ran at on any machine. Over twelve `make bench` runs of the second
machine it read 214 to 219 us (±1.2 %) while the share of readings in the slow phase ran from 0.12 to 0.56."""
MIN_CURVES = 8
"""Curves with a capacity and a probe, across configs, below which no exponent is fitted."""
MIN_LOG_SPREAD = 0.03
"""Standard deviation of log probe within configs (about 3 %) below which the probe moved too little to fit."""
MIN_RELIABILITY = 0.5
"""The smallest reliability ratio the fitted slope is divided by: a cap on the correction (at most twice the fit).
A ratio estimated lower rests mostly on the noise estimate itself; the 1.5 clip on the exponent still applies. On
eighteen `make bench` runs the estimates ranged from 0.59 to 0.88."""
MAX_EXPONENT = 1.5
"""The largest exponent applied. 1 is capacity in proportion to the core's speed; the p99 capacity of the fast model
fell faster than that in one run (-1.26 +/- 0.23), and clipping it at 1 left two of that run's configs 14 and 19 %
below the median of four runs at the reference speed (every config within 14 % unclipped), so the guard sits above
what was measured."""


@dataclass(frozen=True)
class SpeedRule:
    """How capacities are brought to a reference speed: ``reference_us`` (a probe reading, us), or None for the run's
    own :data:`REFERENCE_QUANTILE` of its readings; ``noise_correction``: divide the fitted slope by the reliability
    of the curves' probes (off by default: on the second machine it over-corrected, see the module's docstring);
    ``memory``: a second term on the memory probe (``memory_probe_us``, at the run's own quantile of its readings),
    fitted jointly with the first, where every fitted curve has a reading of a known kind."""

    reference_us: float | None = None
    noise_correction: bool = False
    memory: bool = False

    def __post_init__(self) -> None:
        if self.reference_us is not None and not (math.isfinite(self.reference_us) and self.reference_us > 0.0):
            raise ValueError(f"a reference speed is a positive probe reading in us, got {self.reference_us!r}")
        if self.noise_correction and self.memory:
            # The reliability ratio is the first probe's alone; with a second regressor the attenuation of each
            # slope is not that ratio, and the memory slope's would need its own.
            raise ValueError("the noise correction is for the first probe alone: not with the memory term")


DEFAULT_RULE = SpeedRule()
"""The report's rule."""


def _reading(run: Run, memory: bool) -> float | None:
    """The run's probe reading (us), or its memory probe's; None when it has none that is positive."""
    probe = run.memory_probe_us if memory else run.speed_probe_us
    return probe if probe is not None and probe > 0.0 else None


def probe_readings(runs: Iterable[Run], *, memory: bool = False) -> list[float]:
    """The probe readings (us) of the ``runs`` that recorded one: closed-loop runs and curve steps alike;
    ``memory``: the memory probe's."""
    return [probe for run in runs if (probe := _reading(run, memory)) is not None]


def reference_probe(runs: Iterable[Run], quantile: float = REFERENCE_QUANTILE, *, memory: bool = False) -> float | None:
    """The ``quantile`` (linear between order statistics) of the :func:`probe_readings` of ``runs`` (every run of a
    bundle); None without a reading."""
    readings = probe_readings(runs, memory=memory)
    return float(np.quantile(readings, quantile)) if readings else None


@dataclass(frozen=True)
class MemoryTerm:
    """The rule's second term: capacity also times ``(memory probe / reference_us) ** exponent``, the exponent the
    joint fit's (``slope``, ``slope_se``; ``covariance`` with the first term's slope, both cluster-robust) clipped to
    [0, :data:`MAX_EXPONENT`]; ``readings``: how many readings the run's own reference is the quantile of."""

    reference_us: float
    exponent: float
    slope: float
    slope_se: float | None
    covariance: float | None
    readings: int


@dataclass(frozen=True)
class SpeedAdjustment:
    """How a capacity view's figures were brought to the reference speed, or why they were not.

    ``exponent``: the ``b`` applied (0 when not ``applied``); ``slope``/``slope_se``: the fitted d log capacity / d
    log probe (negative when a slower core serves less) and its standard error; ``curves``: the curves the fit used;
    ``probe_median``, ``probe_low``, ``probe_high``: the curves' probes (us); ``reason``: why nothing was applied.
    """

    kind: str
    reference_us: float
    exponent: float
    slope: float | None
    slope_se: float | None
    curves: int
    probe_median: float | None
    probe_low: float | None
    probe_high: float | None
    reason: str | None = None
    reliability: float = 1.0
    """The reliability ratio the fitted slope was divided by (1: no correction for the probe's noise)."""
    own_reference: bool = False
    """True when ``reference_us`` is the run's own :data:`REFERENCE_QUANTILE` of its probe readings."""
    readings: int = 0
    """How many probe readings the run's own reference was taken from (0 for a fixed reference)."""
    memory: MemoryTerm | None = None
    """The second term, on the memory probe; None when the rule has none or the curves lack its readings."""
    memory_reason: str | None = None
    """Why the rule's memory term was not fitted (None when it was, or the rule has none)."""

    @property
    def reference_text(self) -> str:
        """The reference speed in words."""
        if self.own_reference:
            return (
                f"this run's fast speed (speed probe {self.reference_us:.0f} us, the {REFERENCE_QUANTILE:.0%} "
                f"quantile of its {self.readings} probe readings; kind {self.kind})"
            )
        return f"the reference machine speed (speed probe {self.reference_us:.0f} us, kind {self.kind})"

    @property
    def exponent_se(self) -> float | None:
        """The standard error of the exponent before its clip: the fit's, divided by the reliability ratio."""
        return None if self.slope_se is None else self.slope_se / self.reliability

    @property
    def applied(self) -> bool:
        """True when the view's capacities are at the reference speed."""
        return self.reason is None

    def factor(self, probe_us: float, memory_us: float | None = None) -> float:
        """What a capacity measured at ``probe_us`` (and ``memory_us``, where the rule has a memory term) is
        multiplied by; without ``memory_us``, the first term's factor alone."""
        factor = (probe_us / self.reference_us) ** self.exponent
        if self.memory is not None and memory_us is not None:
            factor *= (memory_us / self.memory.reference_us) ** self.memory.exponent
        return float(factor)

    @property
    def text(self) -> str:
        """One sentence for the report."""
        if self.probe_median is None:
            return "No capacity curve has a speed probe: no capacity at a reference speed."
        seen = (
            f"the curves ran at a speed probe median {self.probe_median:.0f} us "
            f"(from {self.probe_low:.0f} to {self.probe_high:.0f} us; higher is slower)"
        )
        fit = (
            f"; fitted d log capacity / d log probe {self.slope:.2f} (standard error {self.slope_se:.2f}, "
            f"repetitions as clusters) over {self.curves} curves"
            if self.slope is not None and self.slope_se is not None
            else ""
        )
        if not self.applied:
            return f"No capacity at a reference speed: {self.reason}; {seen}{fit}."
        corrected = (
            f"; divided by {self.reliability:.2f}, the reliability of the curves' probes (1 minus their steps' noise "
            "over their spread within configs)"
            if self.reliability != 1.0
            else ""
        )
        own = (
            " Another run of this machine is stated at its own fast speed: set the two side by side when their "
            "references agree, or bring both to one reference with scripts/capacity_reproducibility.py "
            "--shared-reference."
            if self.own_reference
            else ""
        )
        return (
            f"Capacity at {self.reference_text}: each repetition's capacity times (its curve's probe / "
            f"{self.reference_us:.0f} us) ^ {self.exponent:.2f}{self.memory_text}; {seen}{fit}{corrected}; applied "
            f"clipped to [0, {MAX_EXPONENT:g}]. Each config's figure is "
            "the geometric mean of its repetitions with a t interval that also carries the exponent's standard "
            "error times how far from the reference its curves ran (the median with its censored interval where a "
            "repetition is censored). It is the figure to set beside another run of this machine (the as-measured "
            "one moves with the machine's phase). The verdicts, the order, the chart and the per-rate table are on "
            "the capacities as measured: within a run the configs meet the same phases, interleaved."
            + own
            + (f" {outside}" if (outside := self.extrapolation) else "")
        )

    @property
    def memory_text(self) -> str:
        """The memory term in words (a clause after the first term), or why the rule's memory term is not there."""
        term = self.memory
        if term is None:
            return f" (no memory term: {self.memory_reason})" if self.memory_reason else ""
        error = f", standard error {term.slope_se:.2f}" if term.slope_se is not None else ""
        return (
            f" times (its curve's memory probe / {term.reference_us:.0f} us) ^ {term.exponent:.2f} (the memory probe, "
            f"a chase through memory that feels the shared caches' contention the first probe does not; reference "
            f"the {REFERENCE_QUANTILE:.0%} quantile of its {term.readings} readings; fitted jointly with the first "
            f"term, d log capacity / d log memory probe {term.slope:.2f}{error})"
        )

    @property
    def extrapolation(self) -> str | None:
        """When the reference lies outside every speed the curves ran at: a sentence saying the figure is an
        extrapolation and how much an error of 0.1 in the exponent moves it; ``None`` otherwise."""
        low, high, middle = self.probe_low, self.probe_high, self.probe_median
        if not self.applied or low is None or high is None or middle is None or low <= self.reference_us <= high:
            return None
        distance = abs(math.log(middle / self.reference_us))
        return (
            f"The reference ({self.reference_us:.0f} us) lies outside every speed these curves ran at ({low:.0f} to "
            f"{high:.0f} us): each figure at the reference speed is an extrapolation, by a factor of about "
            f"{self.factor(middle):.2f}"
            + (" from the speed probe's term" if self.memory is not None else "")
            + ", and an error of 0.1 in the exponent moves it by about "
            f"{math.expm1(0.1 * distance):.0%}. On a machine this far from the reference, runs disagree at the "
            "reference speed by more than as measured when their fitted exponents differ (docs/measurements.md)."
        )


def curve_probe(result: CapacityResult, runs: Mapping[str, Run], *, memory: bool = False) -> float | None:
    """The speed a curve ran at: the median probe of its counted steps' runs (the server's own steps: not one the
    load generator could not keep, nor an invalid run); ``memory``: the memory probe's; ``None`` when none has one."""
    probes = _step_probes(result, runs, memory=memory)
    return median(probes) if probes else None


def _step_probes(result: CapacityResult, runs: Mapping[str, Run], *, memory: bool = False) -> list[float]:
    """The probe readings of a curve's counted steps (us); ``memory``: the memory probe's."""
    return [
        probe
        for step in result.steps
        if step.counted(runs)
        and (run := runs.get(step.run or "")) is not None
        and (probe := _reading(run, memory)) is not None
    ]


def _probe_noise(readings: Sequence[float]) -> float | None:
    """The variance of a curve's log probe (the median of its steps' ``readings``) as a measurement of the speed that
    set its capacity: the variance of the log readings over their count, times pi/2 (the large-sample variance of a
    median against a mean; with two readings the median is their mean, factor 1). ``None`` below two readings. For
    3 to 5 readings pi/2 overstates a median's variance by up to about a third; the default plan's curves have more
    steps than that."""
    if len(readings) < 2:
        return None
    logs = [math.log(probe) for probe in readings]
    return variance(logs) / len(logs) * (1.0 if len(logs) == 2 else math.pi / 2.0)


Point = tuple[int, float, float]  # repetition, probe (us), capacity (req/s)


def _fit(points: Mapping[str, Sequence[Point]]) -> tuple[float, float | None, int, float]:
    """Least-squares slope of log capacity on log probe, centred per config: (slope, its standard error with the
    repetitions as clusters, points, within-config sd of log probe). Configs with one point add nothing. The curves
    of one repetition ran minutes apart at most and may share the machine's phase, so their residuals are not taken
    as independent: the error is the cluster-robust (sandwich) one over repetitions."""
    rows: list[tuple[int, float, float]] = []
    groups = 0
    for mine in points.values():
        if len(mine) < 2:
            continue
        groups += 1
        logs = [(rep, math.log(probe), math.log(value)) for rep, probe, value in mine]
        mx = sum(x for _, x, _ in logs) / len(logs)
        my = sum(y for _, _, y in logs) / len(logs)
        rows += [(rep, x - mx, y - my) for rep, x, y in logs]
    n = len(rows)
    sxx = sum(x * x for _, x, _ in rows)
    if n == 0 or sxx <= 0.0:
        return 0.0, None, n, 0.0
    slope = sum(x * y for _, x, y in rows) / sxx
    scores: dict[int, float] = {}
    for rep, x, y in rows:
        scores[rep] = scores.get(rep, 0.0) + x * (y - slope * x)
    clusters = len(scores)
    se = None
    if clusters > 1 and n - groups - 1 > 0:
        small_sample = clusters / (clusters - 1)
        se = math.sqrt(small_sample * sum(score * score for score in scores.values())) / sxx
    return slope, se, n, math.sqrt(sxx / max(n - groups, 1))


MemoryPoint = tuple[int, float, float, float]  # repetition, probe (us), memory probe (us), capacity (req/s)


@dataclass(frozen=True)
class _JointDesign:
    """The joint fit's data, centred per config as :func:`_fit` centres its own: ``x`` the (log probe, log memory
    probe) rows, ``y`` log capacity, ``reps`` each row's repetition, ``groups`` the configs (each costs a degree of
    freedom)."""

    reps: list[int]
    x: np.ndarray
    y: np.ndarray
    groups: int

    @classmethod
    def of(cls, points: Mapping[str, Sequence[MemoryPoint]]) -> _JointDesign:
        reps: list[int] = []
        rows: list[np.ndarray] = []
        groups = 0
        for mine in points.values():
            if len(mine) < 2:
                continue
            groups += 1
            logs = np.log(np.array([(probe, memory, value) for _, probe, memory, value in mine], dtype=np.float64))
            rows.append(logs - logs.mean(axis=0))
            reps += [rep for rep, *_ in mine]
        centred = np.concatenate(rows) if rows else np.zeros((0, 3))
        return cls(reps, centred[:, :2], centred[:, 2], groups)

    def spread(self, column: int) -> float:
        """The standard deviation of one regressor within configs (its log; 0 probe, 1 memory probe)."""
        return math.sqrt(float(self.x[:, column] @ self.x[:, column]) / max(len(self.y) - self.groups, 1))

    def fit(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Least squares of ``y`` on ``x``: the two slopes and their covariance, cluster-robust over repetitions
        (None with one repetition, or too few points). Raises ``np.linalg.LinAlgError`` when the two probes do not
        move independently (the design's condition number over :data:`MAX_CONDITION`)."""
        x, y = self.x, self.y
        if len(y) < 3 or np.linalg.cond(x.T @ x) > MAX_CONDITION:
            raise np.linalg.LinAlgError("the two probes did not move independently")
        inverse = np.linalg.inv(x.T @ x)
        slopes = inverse @ x.T @ y
        residuals = y - x @ slopes
        scores: dict[int, np.ndarray] = {}
        for rep, row, residual in zip(self.reps, x, residuals, strict=True):
            scores[rep] = scores.get(rep, np.zeros(2)) + row * residual
        clusters = len(scores)
        if clusters < 2 or len(y) - self.groups - 2 <= 0:
            return slopes, None
        meat = sum(np.outer(score, score) for score in scores.values())
        return slopes, clusters / (clusters - 1) * inverse @ meat @ inverse


def _memory_term(
    points: Mapping[str, Sequence[Point]],
    memories: Mapping[tuple[str, int], float],
    runs: Mapping[str, Run],
    kind: object,
    rule: SpeedRule,
) -> tuple[MemoryTerm | None, float | None, float | None, str | None]:
    """The joint fit's memory term, the first term's slope and its standard error from the same fit, or why there
    is no memory term (None, None, None, reason). No reason and no term: the rule has none."""
    if not rule.memory:
        return None, None, None, None
    if not isinstance(kind, str) or not kind.startswith(MEMORY_PROBE_PREFIX):
        return None, None, None, "this bundle has no memory probe readings of a known kind"
    fitted = {config: mine for config, mine in points.items() if len(mine) >= 2}
    if any((config, rep) not in memories for config, mine in fitted.items() for rep, _, _ in mine):
        return None, None, None, "a fitted curve has no memory probe reading"
    design = _JointDesign.of(
        {
            config: [(rep, probe, memories[(config, rep)], value) for rep, probe, value in mine]
            for config, mine in fitted.items()
        }
    )
    # Within configs, as the first probe's spread is read: each server evicts the caches by its own amount, so the
    # memory probe's level differs between configs, which says nothing of how capacity follows it.
    if design.spread(1) < MIN_LOG_SPREAD / 3.0:
        return None, None, None, "the memory probe hardly moved"
    try:
        slopes, covariance = design.fit()
    except np.linalg.LinAlgError:
        return None, None, None, "the two probes did not move independently"
    readings = probe_readings(runs.values(), memory=True)
    term = MemoryTerm(
        reference_us=float(np.quantile(readings, REFERENCE_QUANTILE)),
        exponent=min(max(-float(slopes[1]), 0.0), MAX_EXPONENT),
        slope=float(slopes[1]),
        slope_se=None if covariance is None else math.sqrt(covariance[1, 1]),
        covariance=None if covariance is None else float(covariance[0, 1]),
        readings=len(readings),
    )
    return term, float(slopes[0]), None if covariance is None else math.sqrt(covariance[0, 0]), None


def speed_adjustment(
    by_config: Mapping[str, Sequence[CapacityResult]],
    runs: Mapping[str, Run],
    kind: object,
    rule: SpeedRule = DEFAULT_RULE,
    memory_kind: object = None,
) -> SpeedAdjustment | None:
    """The adjustment for one capacity view's curves under ``rule``; ``runs`` are all the bundle's runs (the run's own
    reference is taken over them, so every view of a bundle has the same). ``None`` when the bundle's probe is of a
    kind the adjustment does not know (an older kind, or none recorded): such bundles are shown as measured, as they
    always were."""
    if not isinstance(kind, str) or kind not in PROBE_KINDS:
        return None
    own = rule.reference_us is None
    found = reference_probe(runs.values()) if own else rule.reference_us
    reference = found if found is not None else math.nan
    count = len(probe_readings(runs.values())) if own else 0
    identity = partial(SpeedAdjustment, own_reference=own, readings=count)
    probes: list[float] = []
    points: dict[str, list[Point]] = {}
    noises: dict[str, list[float]] = {}
    memories: dict[tuple[str, int], float] = {}
    for config, results in by_config.items():
        for result in results:
            readings = _step_probes(result, runs)
            if not readings:
                continue
            probe = median(readings)  # the curve's probe, as curve_probe reads it
            probes.append(probe)
            value = result.measured_rps
            if value is not None and value > 0.0:
                points.setdefault(config, []).append((result.repetition, probe, value))
                if rule.memory and (memory_us := curve_probe(result, runs, memory=True)) is not None:
                    memories[(config, result.repetition)] = memory_us
                if (noise := _probe_noise(readings)) is not None:
                    noises.setdefault(config, []).append(noise)
    if not probes:
        return identity(kind, reference, 0.0, None, None, 0, None, None, None, "no curve has a speed probe")
    slope, se, used, spread = _fit(points)
    seen = (median(probes), min(probes), max(probes))
    reason = None
    if used < MIN_CURVES:
        reason = (
            f"{used} curves with a capacity and a probe (in configs with two or more), fewer than {MIN_CURVES} to fit "
            "how capacity follows speed"
        )
    elif spread < MIN_LOG_SPREAD:
        reason = (
            f"the probe moved too little within configs ({spread:.1%} sd, under {MIN_LOG_SPREAD:.0%}) to fit how "
            "capacity follows speed"
        )
    if reason is not None:
        return identity(kind, reference, 0.0, slope if used else None, se, used, *seen, reason=reason)
    memory, joint_slope, joint_se, memory_reason = _memory_term(points, memories, runs, memory_kind, rule)
    if memory is not None and joint_slope is not None:
        slope, se = joint_slope, joint_se  # the first term's slope, fitted jointly with the memory term
    reliability = 1.0
    if rule.noise_correction:
        # The noise is averaged over the curves the fit used (configs with two or more), as the spread is.
        fitted = [noise for config, mine in noises.items() if len(points.get(config, ())) >= 2 for noise in mine]
        reliability = _reliability(fitted, spread)
    exponent = min(max(-slope / reliability, 0.0), MAX_EXPONENT)
    return identity(
        kind,
        reference,
        exponent,
        slope,
        se,
        used,
        *seen,
        reliability=reliability,
        memory=memory,
        memory_reason=memory_reason,
    )


def _reliability(noises: Sequence[float], spread: float) -> float:
    """1 minus the mean noise variance of the curves' log probes over their variance within configs (``spread``
    squared), in [:data:`MIN_RELIABILITY`, 1]; 1 when no curve has two readings to tell its noise."""
    if not noises or spread <= 0.0:
        return 1.0
    return min(max(1.0 - (sum(noises) / len(noises)) / (spread * spread), MIN_RELIABILITY), 1.0)


def exponent_log_se(results: Sequence[CapacityResult], runs: Mapping[str, Run], speed: SpeedAdjustment) -> float:
    """The standard error (log scale) that one config's geometric mean at the reference speed carries from the
    exponent: its standard error (the fit's over the reliability ratio) times |mean log(probe / reference)| over the
    config's curves with a capacity and a probe (the curves its geometric mean is over). 0 when nothing was applied
    or the fit has no error (one repetition)."""
    if not speed.applied or (exponent_se := speed.exponent_se) is None:
        return 0.0
    probed = [
        (probe, result)
        for result in results
        if (value := result.measured_rps) is not None
        and value > 0.0
        and (probe := curve_probe(result, runs)) is not None
    ]
    if not probed:
        return 0.0
    first = sum(math.log(probe / speed.reference_us) for probe, _ in probed) / len(probed)
    term = speed.memory
    if term is None or term.slope_se is None or term.covariance is None:
        return abs(first) * exponent_se
    # Both slopes' errors, and their covariance, move the mean log offset d0 * b0 + d1 * b1.
    memory_offsets = [
        math.log(memory / term.reference_us)
        for _, result in probed
        if (memory := curve_probe(result, runs, memory=True)) is not None
    ]
    second = sum(memory_offsets) / len(memory_offsets) if memory_offsets else 0.0
    cross = 2.0 * first * second * term.covariance / speed.reliability
    return math.sqrt(max(first * first * exponent_se**2 + second * second * term.slope_se**2 + cross, 0.0))


def adjusted(
    by_config: Mapping[str, Sequence[CapacityResult]], runs: Mapping[str, Run], speed: SpeedAdjustment
) -> dict[str, list[CapacityResult] | None]:
    """Every curve with its capacity and censoring bound at the reference speed. A config with a curve that has a
    figure (a capacity or a bound) but no probe gets ``None``: its figure at the reference speed would rest on other
    repetitions than its measured one. Curves without a figure (not measured) are kept as they are."""
    out: dict[str, list[CapacityResult] | None] = {}
    for config, results in by_config.items():
        mine: list[CapacityResult] = []
        out[config] = mine
        for result in results:
            if result.outcome == "not measured":
                mine.append(result)
                continue
            probe = curve_probe(result, runs)
            memory = curve_probe(result, runs, memory=True) if speed.memory is not None else None
            if probe is None or (speed.memory is not None and memory is None):
                out[config] = None
                break
            factor = speed.factor(probe, memory)
            mine.append(
                replace(
                    result,
                    capacity_rps=None if result.capacity_rps is None else result.capacity_rps * factor,
                    bound_rps=None if result.bound_rps is None else result.bound_rps * factor,
                )
            )
    return out
