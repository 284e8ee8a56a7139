"""The machine's speed, measured in every run: a fixed piece of interpreter work timed in CPU time on the server's
cores, just before and just after the run's load.

On a shared VM the CPU's speed moves by +/-20 % within seconds and by 10-20 % between runs minutes apart; every
figure of a run moves with it (server CPU per request, throughput, latency). The probe does not depend on the code
being measured, so it can stand beside a figure as a covariate: the committed-baseline check regresses each figure
on it across the calibration runs and judges a new run against the figure *expected at the speed it ran at*
(:mod:`servingbench.gate.noise`). Measured over 16 A/A runs of the CI plan: the probe's run-level value correlated
with server CPU per request at r = 0.89 and took its run-to-run sd from 9.4 % to 4.5 % (docs/bench-ci.md).

What it cannot show: a slowdown the interpreter loop does not feel (memory bandwidth, the network stack) is not in
it, and its absolute value means nothing across machines (the baseline check never compares two machines).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Collection

__all__ = ["PROBE_ITERATIONS", "PROBE_SAMPLES", "probe_speed_us", "run_speed_us"]

PROBE_ITERATIONS = 20_000
"""Loop iterations of one sample: about 2.5-5 ms of CPU on the 2-core VM, short enough to leave the run alone."""
PROBE_SAMPLES = 3
"""Samples per probe; the run's value is the median of the samples before and after its load."""


def _work(iterations: int) -> int:
    """Fixed interpreter work of the kind a web framework does: dict stores, int-to-str, small arithmetic."""
    table: dict[int, int] = {}
    total = 0
    for index in range(iterations):
        table[index & 255] = index
        total += len(str(index))
    return total


def _samples(iterations: int, samples: int, out: list[float]) -> None:
    for _ in range(samples):
        start = time.thread_time_ns()
        _work(iterations)
        out.append((time.thread_time_ns() - start) / 1_000.0)


def probe_speed_us(
    cpus: Collection[int], *, iterations: int = PROBE_ITERATIONS, samples: int = PROBE_SAMPLES
) -> list[float]:
    """CPU microseconds of ``samples`` runs of the fixed work, in a short-lived thread pinned to ``cpus`` (the
    caller's own affinity is untouched). Empty when the platform cannot pin a thread or ``cpus`` is empty."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return []
    out: list[float] = []
    failed: list[OSError] = []

    def pinned() -> None:
        try:
            os.sched_setaffinity(0, set(cpus))  # pid 0: the calling thread only
        except OSError as exc:
            failed.append(exc)
            return
        _samples(iterations, samples, out)

    thread = threading.Thread(target=pinned, name="servingbench-speed-probe", daemon=True)
    thread.start()
    thread.join()
    return [] if failed else out


def run_speed_us(before: Collection[float], after: Collection[float]) -> float | None:
    """A run's speed probe: the median of its samples before and after the load (``None`` without samples)."""
    values = [*before, *after]
    return round(statistics.median(values), 1) if values else None
