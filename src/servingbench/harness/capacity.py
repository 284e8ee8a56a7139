"""Capacity at a latency target: the highest open-loop arrival rate at which one server config meets its SLO.

`search_capacity` drives any `measure(rate) -> CapacityStep` function: it brackets the capacity by raising (or
lowering) the rate from a start (from a measured closed-loop peak: by 1.25 first, then by 2; from a guess: by 2),
then bisects (geometrically) until the bracket is within a relative tolerance, and confirms the answer by measuring
it once more. A step passes only if (the stability rule) its corrected p99 is at most the SLO, its error rate is
not over the limit, no arrival was dropped at the in-flight cap, and the load generator kept its schedule (small
send lag, not saturated). A measure raises `SearchStopped` to end a search early (the search returns what it
measured). `measure_with_locust` is the ready-made measure (open-loop Locust runs via `run_load`);
`CapacityResult.to_json` is the results bundle's `capacity` entry. `main` runs one search from the command line,
starting the server itself or against `--target`, and prints the queueing-theory value beside the measured one:

    python -m servingbench.harness.capacity --framework flask --server gunicorn-sync \\
        --model synthetic:sleep_ms=10 --arrivals poisson constant --server-cpus 0 --load-cpus 1
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from hdrh.histogram import HdrHistogram

from servingbench.harness.loadgen import LoadgenError, LoadResult, run_load
from servingbench.harness.queueing import dd1_capacity_rps, md1_rate_for_quantile
from servingbench.harness.resources import tree_cpu_seconds
from servingbench.loadtests.openloop import ARRIVAL_PROCESSES, DEFAULT_ARRIVALS, ArrivalProcess, OpenLoopCounts
from servingbench.loadtests.scenarios import LoadSpec
from servingbench.servers.registry import FRAMEWORKS, SERVERS

__all__ = [
    "DEFAULT_MAX_ERROR_RATE",
    "DEFAULT_SLO_P99_MS",
    "CapacityResult",
    "CapacityStep",
    "Measure",
    "SearchInterrupted",
    "SearchSettings",
    "SearchStopped",
    "StepSettings",
    "estimate_search_s",
    "inflight_cap",
    "judge_step",
    "main",
    "measure_with_locust",
    "partial_result",
    "saturation_problems",
    "search_capacity",
    "settings_from_peak",
    "step_spec",
    "theory_rps",
    "wait_until_idle",
]

DEFAULT_SLO_P99_MS = 50.0
"""The latency target: p99 of the corrected latency (from the intended send time), milliseconds."""
DEFAULT_MAX_ERROR_RATE = 0.01
"""A step passes only with fewer than 1% failed requests."""
DEFAULT_START_RPS = 10.0
"""First rate tried, requests/s, when neither a start rate nor a measured closed-loop peak is known."""
DEFAULT_TOLERANCE = 0.05
"""Stop bisecting when the highest failing rate is within 5% of the highest passing one."""
DEFAULT_MAX_STEPS = 14
"""At most this many measured steps per search (bracketing, bisection and confirmations together)."""
DEFAULT_MIN_RPS = 1.0
"""Halving below this rate gives up: capacity None (not even a trickle meets the SLO)."""
DEFAULT_MAX_RPS = 100_000.0
"""Doubling past this rate gives up: capacity is at least the last passing rate (the search did not converge)."""
DEFAULT_GROWTH = 2.0
"""Bracketing multiplies the rate by this while it passes (halving stays halving): 2 from a guess."""
PEAK_START_FRACTION = 0.8
"""From a measured closed-loop peak, the search starts at this fraction of it: with an SLO far above the service
time, capacity sits close to the peak (M/D/1 at 50 ms and a 1 ms service time: 0.96 of it)..."""
PEAK_GROWTH = 1.25
"""...and raises the rate by this factor, so the first bracket is [0.8, 1.0] x peak rather than [0.8, 1.6]. It
never doubles past a peak: a step at twice a server's capacity leaves a backlog and a heap that the next steps
measure, while a peak the server passes is rarely far below its capacity (a closed loop of 32 users)."""
RATE_DIGITS = 6
"""Significant digits of the rates the search asks for (bisection would otherwise ask for 121.60000000000001)."""
STEP_LAG_SHARE_OF_SLO = 0.1
"""A step's load generator kept its schedule when its p99 send lag is within this share of the SLO (5 ms at 50 ms).

Judged at the SLO's scale, not the microsecond scale of a fixed-rate open-loop run (`openloop.LATE_TOLERANCE_MS`):
lateness adds at most the lag to the corrected latency and shifts sends by at most that much, so a lag of a tenth
of the SLO can neither flip a verdict on p99 nor smooth away the bursts that fill a queue over tens of ms. A fixed
count of late sends per run (seen at window start) would otherwise void short steps at low rates."""
GENERATOR_LIMIT = "load generator"
"""`CapacityResult.limited_by` when the rates above the capacity failed only because the generator fell behind."""

MIN_STEP_REQUESTS = 2000
"""A step runs long enough for about this many requests, so its p99 rests on ~20 samples above it..."""
MIN_STEP_DURATION_S = 5.0
"""...but at least this many seconds (fast rates)..."""
MAX_STEP_DURATION_S = 30.0
"""...and at most this many (slow rates: 30 s at 56 /s is still ~1700 requests)."""
STEP_WARMUP_S = 2.0
"""Seconds of each step run and discarded: the queue reaches its steady state in far less below capacity."""
STEP_OVERHEAD_S = 6.0
"""Seconds a step costs beyond warm-up and window: Locust start and stop, the drain, the idle check (measured)."""
MIN_INFLIGHT_CAP = 64
"""Smallest in-flight cap of a step (requests outstanding at once, over all load processes)."""
INFLIGHT_HEADROOM = 4.0
"""A step's in-flight cap is this multiple of rate x SLO: by Little's law a run meeting its SLO keeps about
rate x mean latency <= rate x SLO requests in flight, so hitting 4 times that means the step had failed anyway."""
IDLE_LATENCY_MS = 50.0
"""Between steps, a server the harness did not start counts as idle again once GET /healthz answers within this
many milliseconds (a weak signal: an async server interleaves the probe with its backlog)."""
IDLE_CPU_SHARE = 0.1
"""Between steps, a server the harness started counts as drained once its process tree uses less than this share
of one core over `IDLE_SAMPLES` intervals of `IDLE_INTERVAL_S` in a row: a server still working off the previous
step's backlog burns CPU, and a step started on it would measure the backlog (seen: every step after an overload
failing at rates that had passed, because /healthz answered in time while thousands of requests were queued)."""
IDLE_INTERVAL_S = 0.1
IDLE_SAMPLES = 2
IDLE_TIMEOUT_S = 60.0
IDLE_POLL_S = 0.1
HEALTH_PATH = "/healthz"
US_PER_MS = 1000.0
SERVICE_PROBE_USERS = 4
"""Closed-loop users of the service-time probe: enough to keep a one-at-a-time server always busy."""
SERVICE_PROBE_S = 5.0
GENERATOR_SATURATION_PCT = 90.0
"""Load generator CPU (% of its cores) above which a run is invalid and a step fails on the generator's account."""
PAYLOAD_ROW = [round(0.1 * i, 1) for i in range(10)]
"""`main`'s request row: 10 features, as the default and synthetic models take."""


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class CapacityStep:
    """One rate tried: `rate` offered (requests/s), `ok` if it met the SLO under the stability rule, `reason` why not.

    `p99_ms` is the corrected p99; `achieved_rps`, `late`, `dropped` come from the open-loop run; `run` is the
    bundle's run id when the step was recorded as a run.
    """

    rate: float
    ok: bool
    p99_ms: float | None
    error_rate: float | None
    achieved_rps: float | None = None
    late: int | None = None
    dropped: int | None = None
    requests: int = 0
    reason: str | None = None
    run: str | None = None
    generator_limited: bool = False
    """It failed only because the load generator fell behind (late sends, CPU saturation), not the server."""

    def to_json(self) -> dict[str, Any]:
        """The bundle's `capacity[].steps[]` entry."""
        return asdict(self)


Measure = Callable[[float], CapacityStep]
"""Measures one offered rate (requests/s) and judges it; raises `SearchStopped` to end the search."""


class SearchStopped(Exception):
    """Raised by a `Measure` to end its search now (the server died, it never drained): `reason` is why, `step`
    (optional) the step measured before it, kept in the result. `search_capacity` returns what was measured."""

    def __init__(self, reason: str, step: CapacityStep | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.step = step


@dataclass(frozen=True)
class SearchSettings:
    """How the rate is searched; rates in requests/s, `tolerance` relative (0.05 = 5%)."""

    start_rps: float = DEFAULT_START_RPS
    tolerance: float = DEFAULT_TOLERANCE
    max_steps: int = DEFAULT_MAX_STEPS
    min_rps: float = DEFAULT_MIN_RPS
    max_rps: float = DEFAULT_MAX_RPS
    confirm: bool = True
    growth: float = DEFAULT_GROWTH
    """Factor of every raise, and of the first step down, while bracketing (later steps down halve)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_rps <= self.start_rps <= self.max_rps:
            raise ValueError("need 0 < min_rps <= start_rps <= max_rps")
        if not self.growth > 1:
            raise ValueError(f"growth must be > 1, got {self.growth}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.max_steps < 2:
            raise ValueError(f"max_steps must be >= 2, got {self.max_steps}")


@dataclass(frozen=True)
class StepSettings:
    """How long each step runs: long enough for `min_requests` within [`min_duration_s`, `max_duration_s`] seconds,
    after `warmup_s` seconds discarded."""

    min_requests: int = MIN_STEP_REQUESTS
    min_duration_s: float = MIN_STEP_DURATION_S
    max_duration_s: float = MAX_STEP_DURATION_S
    warmup_s: float = STEP_WARMUP_S

    def duration_s(self, rate: float) -> float:
        """Measured seconds of a step at `rate` requests/s."""
        return min(self.max_duration_s, max(self.min_duration_s, self.min_requests / rate))


def estimate_search_s(settings: SearchSettings | None = None, step: StepSettings | None = None) -> float:
    """Worst-case wall-clock seconds of one search: every step used, each as long as a step can be."""
    settings, step = settings or SearchSettings(), step or StepSettings()
    return settings.max_steps * (step.warmup_s + step.max_duration_s + STEP_OVERHEAD_S)


@dataclass(frozen=True)
class CapacityResult:
    """The outcome of one search: `capacity_rps` (None if no rate passed) and every step in the order measured.

    `converged` is False when the search stopped before its bracket was within tolerance and confirmed
    (`stop_reason` says why); the capacity is then a lower bound.
    """

    slo_p99_ms: float
    capacity_rps: float | None
    steps: tuple[CapacityStep, ...]
    converged: bool
    stop_reason: str
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS

    @property
    def limited_by(self) -> str | None:
        """`GENERATOR_LIMIT` when every step that failed above the capacity failed only for the generator's sake:
        the server's own capacity is then higher than measured (a lower bound). None otherwise."""
        floor = -math.inf if self.capacity_rps is None else self.capacity_rps
        above = [step for step in self.steps if not step.ok and step.rate > floor]
        return GENERATOR_LIMIT if above and all(step.generator_limited for step in above) else None

    def to_json(self, *, config: str, model: str, repetition: int) -> dict[str, Any]:
        """The results bundle's `capacity` entry (docs/results-format.md)."""
        return {
            "config": config,
            "model": model,
            "repetition": repetition,
            "slo_p99_ms": self.slo_p99_ms,
            "arrivals": self.arrivals,
            "capacity_rps": None if self.capacity_rps is None else round(self.capacity_rps, 3),
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "limited_by": self.limited_by,
            "steps": [step.to_json() for step in self.steps],
        }


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search: `result` holds what it measured (not converged, a lower bound)."""

    def __init__(self, result: CapacityResult) -> None:
        super().__init__(result.stop_reason)
        self.result = result


# ---- the search ----


@dataclass
class _Search:
    measure: Measure
    settings: SearchSettings
    steps: list[CapacityStep] = field(default_factory=list)

    def probe(self, rate: float) -> bool:
        step = self.measure(rate)
        self.steps.append(step)
        return step.ok

    @property
    def budget_left(self) -> bool:
        return len(self.steps) < self.settings.max_steps


def search_capacity(
    measure: Measure,
    settings: SearchSettings | None = None,
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS,
) -> CapacityResult:
    """The highest rate (requests/s) `measure` passes, found by bracketing then bisection (see the module docstring).

    `slo_p99_ms` and `arrivals` are only recorded in the result (the measure applies them). Assumes that passing
    is monotone in the rate; a confirmation that fails lowers the bracket's top to that rate and the search goes on.
    """
    search = _Search(measure, settings or SearchSettings())
    try:
        return _search(search, slo_p99_ms, arrivals)
    except SearchStopped as stop:
        steps = [*search.steps, *([stop.step] if stop.step else [])]
        return partial_result(steps, stop.reason, slo_p99_ms=slo_p99_ms, arrivals=arrivals)
    except KeyboardInterrupt:
        interrupted = partial_result(search.steps, "interrupted (Ctrl-C)", slo_p99_ms=slo_p99_ms, arrivals=arrivals)
        raise SearchInterrupted(interrupted) from None


def _search(search: _Search, slo_p99_ms: float, arrivals: ArrivalProcess) -> CapacityResult:
    settings = search.settings

    def done(capacity: float | None, converged: bool, reason: str) -> CapacityResult:
        return CapacityResult(slo_p99_ms, capacity, tuple(search.steps), converged, reason, arrivals)

    bracket = _bracket(search)
    while not isinstance(bracket, str):
        low, high = _bisect(search, *bracket)
        if high / low > 1 + settings.tolerance:
            return done(low, False, f"step budget ({settings.max_steps}) spent before the bracket closed")
        if not settings.confirm:
            return done(low, True, "bracket within tolerance")
        if not search.budget_left:
            return done(low, False, f"step budget ({settings.max_steps}) spent before the confirmation")
        if search.probe(low):
            return done(low, True, "bracket within tolerance, capacity confirmed")
        lower = _highest_pass(search.steps, below=low)
        bracket = (lower, low) if lower is not None else _halve_until_pass(search, low)
    return done(_highest_consistent_pass(search.steps), False, bracket)


def _bracket(search: _Search) -> tuple[float, float] | str:
    """(a passing rate, a failing rate at most `growth` times it, or twice it when halving), or why there is none."""
    settings = search.settings
    rate = settings.start_rps
    if not search.probe(rate):
        return _halve_until_pass(search, rate)
    while True:
        higher = _rounded(rate * settings.growth)
        if higher > settings.max_rps:
            return f"every rate passed up to the maximum {settings.max_rps:g} /s"
        if not search.budget_left:
            return f"step budget ({settings.max_steps}) spent while raising the rate"
        if not search.probe(higher):
            return rate, higher
        rate = higher


def _halve_until_pass(search: _Search, failing: float) -> tuple[float, float] | str:
    """Step down from `failing` until a rate passes: first by `growth` (near a measured peak, or just under a rate
    whose confirmation failed, the capacity is close), then by halving."""
    settings = search.settings
    rate, factor = failing, settings.growth
    while True:
        if rate <= settings.min_rps:
            return f"no rate passed down to the minimum {settings.min_rps:g} /s"
        if not search.budget_left:
            return f"step budget ({settings.max_steps}) spent while halving"
        lower = _rounded(max(rate / factor, settings.min_rps))
        factor = max(factor, DEFAULT_GROWTH)
        if search.probe(lower):
            return lower, rate
        rate = lower


def _bisect(search: _Search, low: float, high: float) -> tuple[float, float]:
    """Narrow (passing, failing) geometrically until within tolerance or out of steps."""
    while high / low > 1 + search.settings.tolerance and search.budget_left:
        middle = _rounded(math.sqrt(low * high))
        low, high = (middle, high) if search.probe(middle) else (low, middle)
    return low, high


def _rounded(rate: float) -> float:
    return float(f"{rate:.{RATE_DIGITS}g}")


def _highest_consistent_pass(steps: Sequence[CapacityStep]) -> float | None:
    """The highest passing rate with no failure measured at or below it."""
    lowest_failure = min((step.rate for step in steps if not step.ok), default=math.inf)
    return _highest_pass(steps, below=lowest_failure)


def _highest_pass(steps: Sequence[CapacityStep], *, below: float = math.inf) -> float | None:
    passing = [step.rate for step in steps if step.ok and step.rate < below]
    return max(passing, default=None)


def partial_result(
    steps: Sequence[CapacityStep], reason: str, *, slo_p99_ms: float, arrivals: ArrivalProcess
) -> CapacityResult:
    """The result of a search cut short (`reason`, e.g. the server died): the highest passing rate with no failure
    at or below it, as a lower bound (`converged` False)."""
    return CapacityResult(slo_p99_ms, _highest_consistent_pass(steps), tuple(steps), False, reason, arrivals)


def settings_from_peak(
    peak_rps: float | None, *, start_rps: float | None, tolerance: float, max_steps: int
) -> SearchSettings:
    """Search settings for one server: from `start_rps` if given (doubling), else from the closed-loop `peak_rps`
    measured on the same server (`PEAK_START_FRACTION`, `PEAK_GROWTH`), else from `DEFAULT_START_RPS` (doubling)."""
    growth = DEFAULT_GROWTH
    if start_rps is not None:
        start = start_rps
    elif peak_rps is not None and peak_rps > 0:
        start, growth = peak_rps * PEAK_START_FRACTION, PEAK_GROWTH
    else:
        start = DEFAULT_START_RPS
    start = _rounded(min(max(start, DEFAULT_MIN_RPS), DEFAULT_MAX_RPS))
    return SearchSettings(start_rps=start, tolerance=tolerance, max_steps=max_steps, growth=growth)


# ---- judging a step ----


def judge_step(
    rate: float,
    result: LoadResult,
    *,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    run: str | None = None,
    invalid_reasons: Sequence[str] = (),
) -> CapacityStep:
    """Judge an open-loop `result` at offered `rate`: ok iff corrected p99 <= `slo_p99_ms`, error rate not over
    `max_error_rate`, no arrival dropped at the in-flight cap, the generator kept its schedule (small send lag), and
    no `invalid_reasons` (the caller's gates on the generator, e.g. its CPU saturation).

    The generator kept its schedule when its p99 send lag is within `STEP_LAG_SHARE_OF_SLO` of the SLO. A failure is
    the server's when it stands whatever the generator did: drops, errors, or a p99 over the SLO even when counted
    from the actual sends (uncorrected). A step that failed only on the generator's account is `generator_limited`:
    its verdict says nothing about the server.
    """
    p99_ms = _p99_ms(result.histograms.total)
    service_p99_ms = _p99_ms(result.histograms.total_uncorrected)
    error_rate = result.errors / result.requests if result.requests else None
    counts = result.open_loop
    generator = [*_lag_problems(counts, slo_p99_ms), *invalid_reasons]
    server: list[str] = []
    if p99_ms is None or error_rate is None:
        server.append("no request measured")
    else:
        if p99_ms > slo_p99_ms:
            over = f"p99 {p99_ms:.1f} ms over the SLO {slo_p99_ms:g} ms"
            # Sent late, a request's service time alone still counts from its actual send: over the SLO even so,
            # the failure is the server's (late sending only ever made the load gentler).
            servers_own = not generator or service_p99_ms is None or service_p99_ms > slo_p99_ms
            (server if servers_own else generator).append(over)
        if error_rate > max_error_rate:
            server.append(f"error rate {error_rate:.1%} over {max_error_rate:.0%}")
    server += [] if counts is None else counts.drop_problems()
    problems = [*server, *generator]
    return CapacityStep(
        rate=rate,
        ok=not problems,
        p99_ms=None if p99_ms is None else round(p99_ms, 3),
        error_rate=None if error_rate is None else round(error_rate, 6),
        achieved_rps=None if result.achieved_rps is None else round(result.achieved_rps, 3),
        late=None if counts is None else counts.late,
        dropped=None if counts is None else counts.dropped,
        requests=result.requests,
        reason="; ".join(problems) or None,
        run=run,
        generator_limited=bool(generator) and not server,
    )


def saturation_problems(generator_cpu_pct: float | None) -> list[str]:
    """Why the load generator measured itself rather than the server: its CPU (% of its cores) over the limit."""
    if generator_cpu_pct is None or generator_cpu_pct <= GENERATOR_SATURATION_PCT:
        return []
    return [f"load generator saturated ({generator_cpu_pct:.0f}% CPU > {GENERATOR_SATURATION_PCT:.0f}% of its cores)"]


def _p99_ms(histogram: HdrHistogram) -> float | None:
    return histogram.get_value_at_percentile(99.0) / US_PER_MS if histogram.get_total_count() else None


def _lag_problems(counts: OpenLoopCounts | None, slo_p99_ms: float) -> list[str]:
    lag_ms = None if counts is None else counts.send_lag_p99_ms
    limit_ms = STEP_LAG_SHARE_OF_SLO * slo_p99_ms
    if lag_ms is None or lag_ms <= limit_ms:
        return []
    return [f"load generator fell behind: p99 send lag {lag_ms:.1f} ms over {limit_ms:g} ms (a tenth of the SLO)"]


def inflight_cap(rate: float, slo_p99_ms: float) -> int:
    """The in-flight cap of a step at `rate` requests/s (see `INFLIGHT_HEADROOM`)."""
    return max(MIN_INFLIGHT_CAP, math.ceil(rate * slo_p99_ms / US_PER_MS * INFLIGHT_HEADROOM))


def step_spec(
    *,
    base_url: str,
    endpoint: str,
    payload: bytes,
    rate: float,
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS,
    seed: int,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    step: StepSettings | None = None,
    allow_remote: bool = False,
) -> LoadSpec:
    """The open-loop `LoadSpec` of one step at `rate` requests/s (duration, warm-up and in-flight cap chosen here)."""
    step = step or StepSettings()
    return LoadSpec(
        base_url=base_url,
        endpoint=endpoint,
        payload=payload,
        kind="open",
        users=inflight_cap(rate, slo_p99_ms),
        rate=rate,
        arrivals=arrivals,
        warmup_s=step.warmup_s,
        duration_s=step.duration_s(rate),
        seed=seed,
        allow_remote=allow_remote,
    )


def wait_until_idle(
    base_url: str,
    *,
    pid: int | None = None,
    threshold_ms: float = IDLE_LATENCY_MS,
    timeout_s: float = IDLE_TIMEOUT_S,
) -> bool:
    """Wait until the previous step's backlog is gone: the server tree rooted at `pid` (when given) uses under
    `IDLE_CPU_SHARE` of a core for `IDLE_SAMPLES` intervals in a row, and then GET /healthz answers within
    `threshold_ms`. Both are needed: an async server's backlog shows in its CPU (it answers the probe between queued
    requests), a sync worker's or a sleeping model's in the probe (working off its queue burns little CPU). False if
    that did not happen within `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    if pid is not None and not _wait_until_cpu_idle(pid, deadline):
        return False
    return _wait_until_answering(base_url, threshold_ms, deadline)


def _wait_until_answering(base_url: str, threshold_ms: float, deadline: float) -> bool:
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            with _OPENER.open(base_url + HEALTH_PATH, timeout=max(0.1, deadline - time.monotonic())) as response:
                response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            time.sleep(IDLE_POLL_S)
            continue
        if (time.perf_counter() - start) * US_PER_MS <= threshold_ms:
            return True
        time.sleep(IDLE_POLL_S)
    return False


def _wait_until_cpu_idle(pid: int, deadline: float) -> bool:
    quiet = 0
    try:
        used = tree_cpu_seconds(pid)
        while time.monotonic() < deadline:
            time.sleep(IDLE_INTERVAL_S)
            now = tree_cpu_seconds(pid)
            quiet = quiet + 1 if now - used < IDLE_CPU_SHARE * IDLE_INTERVAL_S else 0
            if quiet >= IDLE_SAMPLES:
                return True
            used = now
    except psutil.Error:
        return False  # the server is gone: the caller finds out whether it died
    return False


def measure_with_locust(
    *,
    base_url: str,
    endpoint: str,
    payload: bytes,
    out_dir: Path,
    cpus: Sequence[int] | None,
    workers: int = 1,
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS,
    seed: int = 0,
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    step: StepSettings | None = None,
    allow_remote: bool = False,
    pid: int | None = None,
) -> Measure:
    """A `Measure` that runs each step with `run_load` (Locust output in `out_dir/step-NN-<rate>/`), waits for the
    server to be idle afterwards (by its CPU when its `pid` is given), and judges it; a step whose load generator
    fails is a failed step."""
    counter = iter(range(1_000_000))

    def measure(rate: float) -> CapacityStep:
        index = next(counter)
        spec = step_spec(
            base_url=base_url,
            endpoint=endpoint,
            payload=payload,
            rate=rate,
            arrivals=arrivals,
            seed=seed + index,
            slo_p99_ms=slo_p99_ms,
            step=step,
            allow_remote=allow_remote,
        )
        try:
            result = run_load(spec, out_dir=out_dir / f"step-{index:02d}-{rate:g}", cpus=cpus, workers=workers)
        except LoadgenError as exc:
            reason = f"load generator failed: {str(exc).splitlines()[0]}"
            return CapacityStep(rate=rate, ok=False, p99_ms=None, error_rate=None, reason=reason)
        finally:
            wait_until_idle(base_url, pid=pid)
        reasons = saturation_problems(result.generator_cpu_pct)
        return judge_step(rate, result, slo_p99_ms=slo_p99_ms, max_error_rate=max_error_rate, invalid_reasons=reasons)

    return measure


# ---- command line ----


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Capacity at a p99 latency target (open loop).")
    p.add_argument("--target", help="base URL of a running server (default: start one from the options below)")
    p.add_argument("--framework", choices=tuple(FRAMEWORKS), default="flask")
    p.add_argument("--server", choices=tuple(SERVERS), default="gunicorn-sync")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--model", default="synthetic:sleep_ms=10")
    p.add_argument("--endpoint", default="/predict")
    p.add_argument("--arrivals", nargs="+", choices=ARRIVAL_PROCESSES, default=[DEFAULT_ARRIVALS])
    p.add_argument("--slo-ms", type=float, default=DEFAULT_SLO_P99_MS, help="p99 target, ms (default 50)")
    p.add_argument("--start-rps", type=float, default=None, help="first rate (default: 0.8 x the closed-loop peak)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    p.add_argument("--min-step-requests", type=int, default=MIN_STEP_REQUESTS)
    p.add_argument("--max-step-s", type=float, default=MAX_STEP_DURATION_S)
    p.add_argument("--server-cpus", default="0", help="CPU ids for the server, e.g. 0 or 0,1")
    p.add_argument("--load-cpus", default="1", help="CPU ids for Locust")
    p.add_argument("--load-workers", type=int, default=1, help="Locust worker processes (1: one local process)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="output directory (default results/capacity-<UTC time>)")
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=None,
        help="no search: run these open-loop rates and print "
        "offered vs achieved, late and send lag (checks the generator)",
    )
    p.add_argument("--duration-s", type=float, default=None, help="with --rates: measured seconds per rate")
    return p


def _cpus(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _probe_service(base_url: str, endpoint: str, payload: bytes, out_dir: Path, cpus: list[int]) -> dict[str, float]:
    """Closed-loop probe of a one-at-a-time server: service time = 1 / peak throughput (it never idles), seconds;
    also the Server-Timing predict p50 and the peak rate."""
    spec = LoadSpec(
        base_url=base_url,
        endpoint=endpoint,
        payload=payload,
        kind="closed",
        users=SERVICE_PROBE_USERS,
        warmup_s=STEP_WARMUP_S,
        duration_s=SERVICE_PROBE_S,
        seed=0,
        allow_remote=True,
    )
    result = run_load(spec, out_dir=out_dir / "service-probe", cpus=cpus)
    wait_until_idle(base_url)
    predict = result.histograms.predict
    return {
        "peak_rps": result.rps,
        "service_s": 1.0 / result.rps,
        "predict_p50_ms": predict.get_value_at_percentile(50.0) / US_PER_MS if predict.get_total_count() else math.nan,
    }


def theory_rps(arrivals: ArrivalProcess, service_s: float, slo_p99_ms: float) -> tuple[str, float]:
    """Queueing theory's capacity of one server with a fixed service time `service_s` (seconds): with Poisson
    arrivals the M/D/1 rate whose p99 time in system is `slo_p99_ms`, with constant spacing 1 / service time (D/D/1).
    Returns (model name, requests/s)."""
    if arrivals == "constant":
        return "D/D/1", dd1_capacity_rps(service_s=service_s)
    return "M/D/1", md1_rate_for_quantile(target_s=slo_p99_ms / US_PER_MS, service_s=service_s)


def _print_result(result: CapacityResult, theory_rps: float) -> None:
    print(f"\n{result.arrivals} arrivals, SLO p99 <= {result.slo_p99_ms:g} ms")
    print(f"{'rate/s':>9} {'ok':>3} {'p99 ms':>8} {'err':>6} {'achieved':>9} {'late':>5} {'drop':>5}  reason")
    for s in result.steps:
        p99 = "-" if s.p99_ms is None else f"{s.p99_ms:.1f}"
        err = "-" if s.error_rate is None else f"{s.error_rate:.2%}"
        achieved = "-" if s.achieved_rps is None else f"{s.achieved_rps:.1f}"
        print(
            f"{s.rate:9.2f} {'yes' if s.ok else 'no':>3} {p99:>8} {err:>6} {achieved:>9} {s.late!s:>5} "
            f"{s.dropped!s:>5}  {s.reason or ''}"
        )
    if result.capacity_rps is None:
        print(f"capacity: none ({result.stop_reason}); theory {theory_rps:.1f} /s")
        return
    gap = (result.capacity_rps / theory_rps - 1) * 100
    print(
        f"capacity {result.capacity_rps:.1f} /s ({result.stop_reason}); theory {theory_rps:.1f} /s; "
        f"measured vs theory {gap:+.1f}%"
    )


def _sweep(args: argparse.Namespace, base_url: str, out_dir: Path) -> list[dict[str, Any]]:
    """Fixed open-loop rates: how well the generator keeps its schedule (achieved vs offered, late, send lag)."""
    payload = json.dumps({"features": PAYLOAD_ROW}).encode()
    step = StepSettings()
    if args.duration_s:
        step = replace(step, min_duration_s=args.duration_s, max_duration_s=args.duration_s)
    print(
        f"{'arrivals':>8} {'rate/s':>8} {'offered':>8} {'achieved':>9} {'ratio':>6} {'late%':>6} {'lag p99':>8} "
        f"{'drop':>5} {'p50 ms':>7} {'p99 ms':>7} {'p99 unc':>8} {'gen cpu':>7}"
    )
    rows = []
    for arrivals in args.arrivals:
        for rate in args.rates:
            spec = step_spec(
                base_url=base_url,
                endpoint=args.endpoint,
                payload=payload,
                rate=rate,
                arrivals=arrivals,
                seed=args.seed,
                slo_p99_ms=args.slo_ms,
                step=step,
                allow_remote=bool(args.target),
            )
            result = run_load(
                spec, out_dir=out_dir / f"{arrivals}-{rate:g}", cpus=_cpus(args.load_cpus), workers=args.load_workers
            )
            wait_until_idle(base_url)
            row = _sweep_row(arrivals, rate, result)
            rows.append(row)
            print(
                f"{arrivals:>8} {rate:8.1f} {row['offered_rps']:8.1f} {row['achieved_rps']:9.1f} "
                f"{row['achieved_over_offered']:6.3f} {row['late_pct']:6.2f} {row['send_lag_p99_ms']!s:>8} "
                f"{row['dropped']:>5} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['p99_uncorrected_ms']:8.2f} "
                f"{row['generator_cpu_pct']:6.0f}%"
            )
    return rows


def _sweep_row(arrivals: ArrivalProcess, rate: float, result: LoadResult) -> dict[str, Any]:
    counts = result.open_loop
    if counts is None or result.offered_rps is None or result.achieved_rps is None or not result.requests:
        raise LoadgenError("an open-loop run came back without its open-loop counts")
    histograms = result.histograms
    return {
        "arrivals": arrivals,
        "rate": rate,
        "offered_rps": result.offered_rps,
        "achieved_rps": result.achieved_rps,
        "achieved_over_offered": result.achieved_rps / result.offered_rps,
        "late_pct": 100.0 * counts.late / result.requests,
        "send_lag_p99_ms": counts.send_lag_p99_ms,
        "dropped": counts.dropped,
        "p50_ms": histograms.total.get_value_at_percentile(50.0) / US_PER_MS,
        "p99_ms": histograms.total.get_value_at_percentile(99.0) / US_PER_MS,
        "p99_uncorrected_ms": histograms.total_uncorrected.get_value_at_percentile(99.0) / US_PER_MS,
        "generator_cpu_pct": result.generator_cpu_pct,
        "problems": result.generator_problems(),
    }


def _run(args: argparse.Namespace, base_url: str, out_dir: Path, pid: int | None = None) -> list[dict[str, Any]]:
    if args.rates:
        return _sweep(args, base_url, out_dir)
    payload = json.dumps({"features": PAYLOAD_ROW}).encode()
    load_cpus = _cpus(args.load_cpus)
    probe = _probe_service(base_url, args.endpoint, payload, out_dir, load_cpus)
    print(
        f"service time {probe['service_s'] * US_PER_MS:.3f} ms (1 / closed-loop peak {probe['peak_rps']:.1f} /s);"
        f" server predict p50 {probe['predict_p50_ms']:.3f} ms"
    )
    settings = settings_from_peak(
        probe["peak_rps"], start_rps=args.start_rps, tolerance=args.tolerance, max_steps=args.max_steps
    )
    step = replace(StepSettings(), min_requests=args.min_step_requests, max_duration_s=args.max_step_s)
    entries = []
    for arrivals in args.arrivals:
        measure = measure_with_locust(
            base_url=base_url,
            endpoint=args.endpoint,
            payload=payload,
            out_dir=out_dir / arrivals,
            cpus=load_cpus,
            workers=args.load_workers,
            arrivals=arrivals,
            seed=args.seed,
            slo_p99_ms=args.slo_ms,
            step=step,
            allow_remote=bool(args.target),
            pid=pid,
        )
        result = search_capacity(measure, settings, slo_p99_ms=args.slo_ms, arrivals=arrivals)
        _, theory = theory_rps(arrivals, probe["service_s"], args.slo_ms)
        _print_result(result, theory)
        entry = result.to_json(config=f"{args.framework}-{args.server}", model=args.model, repetition=0)
        entries.append({**entry, "theory_rps": round(theory, 3), **{f"probe_{k}": v for k, v in probe.items()}})
    return entries


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m servingbench.harness.capacity") -> int:
    """Run capacity searches (one per `--arrivals`), or a `--rates` sweep, and write `capacity.json` to `--out`."""
    args = _parser(prog).parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = args.out or Path("results") / f"capacity-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.target:
        entries = _run(args, args.target.rstrip("/"), out_dir)
    else:
        entries = _with_server(args, out_dir)
    key = "sweep" if args.rates else "capacity"
    (out_dir / "capacity.json").write_text(json.dumps({key: entries}, indent=2), encoding="utf-8")
    print(f"\nwrote {out_dir / 'capacity.json'}")
    return 0


def _with_server(args: argparse.Namespace, out_dir: Path) -> list[dict[str, Any]]:
    from servingbench.harness.processes import free_port, running_server
    from servingbench.servers.launch import ServerConfig, launch_command

    config = ServerConfig(args.framework, args.server, args.workers)
    port = free_port()
    command = launch_command(config, host="127.0.0.1", port=port, model=args.model)
    log = out_dir / "server.log"
    with running_server(command.argv, command.env, port=port, log_path=log, cpus=_cpus(args.server_cpus)) as server:
        print(f"server: {config.label()} serving {args.model} at {server.base_url}, pinned to {args.server_cpus}")
        return _run(args, server.base_url, out_dir, pid=server.pid)


if __name__ == "__main__":
    sys.exit(main())
