"""Capacity as a measured curve: latency against offered rate on a grid of rates shared by every config, and the
capacity at the SLO read off a monotone fit of it. Pure functions over measured values; the runner does the I/O.

Per model the grid is fixed once (:func:`rate_grid`, from the configs' closed-loop peaks); per repetition each config
climbs it (:func:`next_rate`): from about half its own peak upwards while it meets the SLO, downwards first if it
does not, stopping after a gross failure or two failures in a row; then, where a passing and a failing rate bracket
the SLO wider than the plan's resolution, it measures their geometric midpoint until they do not. Each step is an
open-loop run judged by :func:`judge_step` (the stability rule); :func:`fit_capacity` fits p99 as a non-decreasing
function of the rate (isotonic regression on log p99) and returns where it crosses the SLO, or that the crossing lies
below the lowest rate measured or above the highest (censored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from hdrh.histogram import HdrHistogram
from sklearn.isotonic import IsotonicRegression

from servingbench.harness.loadgen import LoadResult
from servingbench.loadtests.openloop import OpenLoopCounts
from servingbench.units import US_PER_MS

__all__ = [
    "GENERATOR_LIMIT",
    "MAX_ABOVE_GRID",
    "MAX_BELOW_GRID",
    "CurveFit",
    "CurvePoint",
    "StepJudgement",
    "bracket",
    "fit_capacity",
    "inflight_cap",
    "is_midpoint",
    "judge_step",
    "next_rate",
    "rate_grid",
]

STEP_LAG_SHARE_OF_SLO = 0.1
"""A step's load generator kept its schedule when its p99 send lag is within this share of the SLO (5 ms at 50 ms):
lateness adds at most the lag to the corrected latency, so a lag of a tenth of the SLO cannot flip a verdict."""
GROSS_FAILURE_FACTOR = 4.0
"""A step whose p99 is over this many times the SLO, or that dropped or failed requests, is far past capacity: the
climb stops there (higher rates would only build a longer backlog)."""
FAILURES_TO_STOP = 2
"""Failures in a row that stop a climb (one failure near the knee may be noise; the fit decides)."""
GENERATOR_LIMIT = "load generator"
"""Why a curve stopped below the server's capacity when the rates above failed only because the generator lagged."""
MIN_INFLIGHT_CAP = 64
"""Smallest in-flight cap of a step (requests outstanding at once, over all load processes)."""
INFLIGHT_HEADROOM = 4.0
"""A step's in-flight cap is this multiple of rate x SLO: by Little's law a run meeting its SLO keeps about
rate x mean latency <= rate x SLO requests in flight, so hitting 4 times that means the step had failed anyway."""
GRID_LOW_FRACTION = 0.5
"""The grid starts at this fraction of the lowest closed-loop peak of the configs..."""
GRID_HIGH_FRACTION = 1.5
"""...and ends at this multiple of the highest (an open loop with many connections can pass a closed loop's peak)."""
START_FRACTION = 0.5
"""Each config's climb starts at the first grid rate at or above this fraction of its own closed-loop peak."""
RATE_DIGITS = 3
"""Significant digits of a grid rate."""
MAX_ABOVE_GRID = 3
"""A config that meets the SLO at the top of the grid climbs on, by the grid's own ratio, at most this many rates
further (the grid came from closed-loop peaks measured once, perhaps in a slow moment of the machine)..."""
MAX_BELOW_GRID = 3
"""...and one that fails at the bottom steps down, by the same ratio, at most this many rates below it (a server
serving one request at a time meets a p99 target well below half its closed-loop peak)."""
Censored = Literal["below", "above"]


def inflight_cap(rate: float, slo_p99_ms: float) -> int:
    """The in-flight cap of a step at ``rate`` requests/s (see `INFLIGHT_HEADROOM`)."""
    return max(MIN_INFLIGHT_CAP, math.ceil(rate * slo_p99_ms / US_PER_MS * INFLIGHT_HEADROOM))


def _rounded(rate: float) -> float:
    return float(f"{rate:.{RATE_DIGITS}g}")


def rate_grid(
    peaks: Sequence[float],
    *,
    points: int,
    extra: Sequence[float] = (),
    low_fraction: float = GRID_LOW_FRACTION,
    high_fraction: float = GRID_HIGH_FRACTION,
) -> tuple[float, ...]:
    """The offered rates (req/s, ascending, 3 significant digits) every config's curve is measured on: ``points``
    rates spaced geometrically from ``low_fraction`` x the lowest of ``peaks`` to ``high_fraction`` x the highest,
    plus ``extra`` rates (e.g. the traffic the user expects). ValueError without a positive peak or for points < 2."""
    usable = [peak for peak in peaks if peak > 0 and math.isfinite(peak)]
    if not usable:
        raise ValueError("a rate grid needs at least one positive closed-loop peak")
    if points < 2:
        raise ValueError(f"a rate grid needs at least 2 points, got {points}")
    low, high = low_fraction * min(usable), high_fraction * max(usable)
    ratio = (high / low) ** (1.0 / (points - 1))
    rates = {_rounded(low * ratio**index) for index in range(points)}
    rates |= {_rounded(rate) for rate in extra if rate > 0}
    return tuple(sorted(rates))


@dataclass(frozen=True)
class StepJudgement:
    """A step's verdict under the stability rule. ``p99_ms`` is corrected (from the intended send times),
    ``service_p99_ms`` from the actual sends. ``generator_limited``: it failed only because the load generator fell
    behind (then it says nothing about the server); ``gross``: it failed far past capacity."""

    rate: float
    ok: bool
    p99_ms: float | None
    service_p99_ms: float | None
    error_rate: float | None
    reason: str | None
    generator_limited: bool
    gross: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _p99_ms(histogram: HdrHistogram) -> float | None:
    return histogram.get_value_at_percentile(99.0) / US_PER_MS if histogram.get_total_count() else None


def _lag_problems(counts: OpenLoopCounts | None, slo_p99_ms: float) -> list[str]:
    lag_ms = None if counts is None else counts.send_lag_p99_ms
    limit_ms = STEP_LAG_SHARE_OF_SLO * slo_p99_ms
    if lag_ms is None or lag_ms <= limit_ms:
        return []
    return [f"load generator fell behind: p99 send lag {lag_ms:.1f} ms over {limit_ms:g} ms (a tenth of the SLO)"]


def judge_step(
    rate: float,
    result: LoadResult,
    *,
    slo_p99_ms: float,
    max_error_rate: float,
    min_requests: int,
    generator_problems: Sequence[str] = (),
) -> StepJudgement:
    """Judge an open-loop ``result`` at offered ``rate``: ok iff the corrected p99 is within the SLO, the error rate
    not over ``max_error_rate``, no arrival was dropped at the in-flight cap, the generator kept its schedule (small
    send lag, and no ``generator_problems`` such as CPU saturation), and at least ``min_requests`` were measured.

    A failure is the server's when it stands whatever the generator did: drops, errors, or a p99 over the SLO even
    counted from the actual sends. Too few requests is no verdict on either (it fails, not generator-limited).
    """
    p99_ms = _p99_ms(result.histograms.total)
    service_p99_ms = _p99_ms(result.histograms.total_uncorrected)
    error_rate = result.errors / result.requests if result.requests else None
    counts = result.open_loop
    generator = [*_lag_problems(counts, slo_p99_ms), *generator_problems]
    server: list[str] = []
    gross = False
    if p99_ms is None or error_rate is None:
        server.append("no request measured")
    else:
        if p99_ms > slo_p99_ms:
            over = f"p99 {p99_ms:.1f} ms over the SLO {slo_p99_ms:g} ms"
            servers_own = not generator or service_p99_ms is None or service_p99_ms > slo_p99_ms
            (server if servers_own else generator).append(over)
            gross = servers_own and p99_ms > GROSS_FAILURE_FACTOR * slo_p99_ms
        if error_rate > max_error_rate:
            server.append(f"error rate {error_rate:.1%} over {max_error_rate:.0%}")
            gross = True
    drops = [] if counts is None else counts.drop_problems()
    gross = gross or bool(drops)
    server += drops
    if result.requests < min_requests:
        server.append(f"too few requests to judge ({result.requests} < {min_requests})")
    problems = [*server, *generator]
    return StepJudgement(
        rate=rate,
        ok=not problems,
        p99_ms=None if p99_ms is None else round(p99_ms, 3),
        service_p99_ms=None if service_p99_ms is None else round(service_p99_ms, 3),
        error_rate=None if error_rate is None else round(error_rate, 6),
        reason="; ".join(problems) or None,
        generator_limited=bool(generator) and not server,
        gross=gross,
    )


@dataclass(frozen=True)
class CurvePoint:
    """One measured step of a curve: the offered rate, its corrected p99 (ms), whether it met the SLO, and why not.
    After a failed step the server is drained before the next: ``drain_s`` is how long that took, ``drain_backlog``
    the most requests seen waiting at the server's socket meanwhile (None where not checked or not readable)."""

    rate: float
    p99_ms: float | None
    ok: bool
    generator_limited: bool = False
    gross: bool = False
    run: str | None = None
    reason: str | None = None
    drain_s: float | None = None
    drain_backlog: int | None = None
    midpoint: bool = False
    """A rate measured to narrow the SLO crossing (`capacity_resolution`): the curve's own, never a grid rate."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def next_rate(
    grid: Sequence[float],
    points: Sequence[CurvePoint],
    *,
    peak: float | None,
    must: Sequence[float] = (),
    resolution: float = 0.0,
) -> float | None:
    """The next rate a config's climb measures in this repetition, or None when its curve is done.

    It starts at the first grid rate at or above `START_FRACTION` x its own ``peak`` (the lowest without one) and
    climbs while steps pass; it stops after a gross failure or `FAILURES_TO_STOP` failures in a row. Past the top of
    the grid it climbs on by the grid's ratio, at most `MAX_ABOVE_GRID` rates. If its first rate fails, it steps
    down the grid until a rate passes, and below the grid by the same ratio, at most `MAX_BELOW_GRID` rates. Rates in
    ``must`` (the traffic the user expects) are measured too, when below the lowest failure. A generator-limited
    step does not count: its rate comes up again (the caller decides when to give up on the generator).

    When the climb is done, and the highest passing rate and the lowest failing rate above it (:func:`bracket`) are
    more than ``resolution`` apart (a ratio over 1 + ``resolution``; 0: never), it measures their geometric midpoint
    (3 significant digits), and again in the narrower bracket, until they are within it: the fit interpolates the
    crossing between the measured rates around it, and a midpoint halves that span. The built-in plan leaves it off:
    on the second 2-core VM one midpoint per curve (three `make bench` runs, about +90 s each) left the spread between a
    config's curves as it was (within-run sd of log capacity, mean over the configs: 0.172 with it, 0.171 with the
    midpoints dropped from the same curves): there the crossing's noise is the machine's, not the grid's
    (docs/measurements.md).
    """
    counted = [point for point in points if not point.generator_limited]
    if not counted:
        return grid[_start_index(grid, peak)]
    lowest, highest = min(point.rate for point in counted), max(point.rate for point in counted)
    if not counted[0].ok:
        if not any(point.ok for point in counted):
            lower = [rate for rate in grid if rate < lowest]
            if lower:
                return lower[-1]
            below = sum(rate < grid[0] for rate in measured_rates(counted))
            if len(grid) >= 2 and below < MAX_BELOW_GRID:
                return _rounded(lowest * grid[0] / grid[1])
    elif not _climb_over(counted):
        higher = [rate for rate in grid if rate > highest]
        if higher:
            return higher[0]
        if (
            max(counted, key=lambda point: point.rate).ok  # the highest rate measured passed (not a rate below it)
            and len(grid) >= 2
            and sum(rate > grid[-1] for rate in measured_rates(counted)) < MAX_ABOVE_GRID
        ):
            return _rounded(highest * grid[-1] / grid[-2])
    measured = {point.rate for point in counted}
    top = min((point.rate for point in counted if not point.ok), default=math.inf)
    pending = [rate for rate in sorted(must) if rate not in measured and rate < top]
    if pending:
        return pending[0]
    return _midpoint(counted, resolution)


def bracket(points: Sequence[CurvePoint]) -> tuple[float, float] | None:
    """The rates around the SLO crossing: the highest that passed and the lowest above it that failed, over the steps
    that measured the server (generator-limited ones left out); None without both."""
    counted = [point for point in points if not point.generator_limited]
    passed = max((point.rate for point in counted if point.ok), default=None)
    if passed is None:
        return None
    failed = min((point.rate for point in counted if not point.ok and point.rate > passed), default=None)
    return None if failed is None else (passed, failed)


def is_midpoint(grid: Sequence[float], points: Sequence[CurvePoint], rate: float) -> bool:
    """Whether :func:`next_rate` chose ``rate`` as a midpoint: it lies strictly inside the :func:`bracket` of the
    steps measured so far and is not a grid rate (a climb, a descent or the expected traffic never measures inside a
    bracket off the grid; the expected traffic is on it)."""
    around = bracket(points)
    return around is not None and around[0] < rate < around[1] and rate not in grid


def _midpoint(points: Sequence[CurvePoint], resolution: float) -> float | None:
    """The geometric midpoint of the :func:`bracket` when it is wider than ``resolution`` and the midpoint, rounded,
    is a rate not measured yet strictly inside it; None otherwise (so refining ends: each midpoint halves the
    bracket's log width, and rounding to 3 digits ends it at the latest when the bracket is 0.1 % wide)."""
    around = bracket(points)
    if resolution <= 0.0 or around is None:
        return None
    low, high = around
    if high / low <= 1.0 + resolution:
        return None
    middle = _rounded(math.sqrt(low * high))
    return middle if low < middle < high and middle not in measured_rates(points) else None


def measured_rates(points: Sequence[CurvePoint]) -> set[float]:
    """The offered rates of ``points``."""
    return {point.rate for point in points}


def _start_index(grid: Sequence[float], peak: float | None) -> int:
    if peak is None or peak <= 0:
        return 0
    floor = START_FRACTION * peak
    return next((index for index, rate in enumerate(grid) if rate >= floor * (1 - 1e-9)), len(grid) - 1)


def _climb_over(points: Sequence[CurvePoint]) -> bool:
    """The climb stops after a gross failure, or `FAILURES_TO_STOP` failures in a row above the last pass."""
    ordered = sorted(points, key=lambda point: point.rate)
    highest_pass = max((point.rate for point in ordered if point.ok), default=-math.inf)
    above = [point for point in ordered if point.rate > highest_pass]
    return any(point.gross for point in above) or len(above) >= FAILURES_TO_STOP


@dataclass(frozen=True)
class CurveFit:
    """Where the fitted p99 curve crosses the SLO: ``capacity_rps``, or None with ``censored`` saying the crossing
    lies ``below`` the lowest rate measured (nothing met the SLO) or ``above`` the highest (a lower bound: every rate
    measured met it). ``fitted`` pairs each measured rate with its fitted p99 (ms)."""

    capacity_rps: float | None
    censored: Censored | None
    fitted: tuple[tuple[float, float], ...]
    bound_rps: float | None = None
    """For a censored fit, the rate it is censored at: the lowest rate measured (below) or the highest (above)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity_rps": None if self.capacity_rps is None else round(self.capacity_rps, 3),
            "censored": self.censored,
            "bound_rps": self.bound_rps,
            "fitted": [[rate, round(p99, 3)] for rate, p99 in self.fitted],
        }


def _effective_p99(point: CurvePoint, slo_p99_ms: float) -> float:
    """The p99 the fit sees: a failure for errors or drops counts as past the SLO even if its p99 was not."""
    ceiling = GROSS_FAILURE_FACTOR * slo_p99_ms
    if point.p99_ms is None:
        return ceiling if not point.ok else slo_p99_ms
    if not point.ok and point.p99_ms <= slo_p99_ms:
        return max(ceiling, point.p99_ms)
    return point.p99_ms


def fit_capacity(points: Sequence[CurvePoint], slo_p99_ms: float) -> CurveFit:
    """Fit log p99 as a non-decreasing function of the offered rate (isotonic regression; repeated rates are
    averaged) over the steps that measured the server (generator-limited ones left out), and read off the rate
    where the fit crosses the SLO, interpolating linearly in log p99 between the grid rates around the crossing."""
    usable = sorted((point for point in points if not point.generator_limited), key=lambda point: point.rate)
    if not usable:
        return CurveFit(None, None, ())
    rates = np.array([point.rate for point in usable], dtype=np.float64)
    logs = np.log([max(_effective_p99(point, slo_p99_ms), 1e-3) for point in usable])
    fitted_logs = IsotonicRegression(increasing=True).fit_transform(rates, logs)
    unique = sorted(dict(zip(rates.tolist(), fitted_logs.tolist(), strict=True)).items())
    fitted = tuple((rate, math.exp(value)) for rate, value in unique)
    target = math.log(slo_p99_ms)
    if unique[0][1] > target:
        return CurveFit(None, "below", fitted, bound_rps=unique[0][0])
    crossing = next((index for index, (_, value) in enumerate(unique) if value > target), None)
    if crossing is None:
        return CurveFit(None, "above", fitted, bound_rps=unique[-1][0])
    (low_rate, low_value), (high_rate, high_value) = unique[crossing - 1], unique[crossing]
    share = (target - low_value) / (high_value - low_value)
    return CurveFit(low_rate + share * (high_rate - low_rate), None, fitted)
