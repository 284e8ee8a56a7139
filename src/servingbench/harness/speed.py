"""The machine's speed, measured in every run: a small fixed piece of interpreter work timed in CPU time on the
server's cores, every :data:`PROBE_INTERVAL_S` *while the load runs*.

On a shared VM the CPU's speed moves by +/-20 % within seconds and by up to 2x between phases minutes apart, and
each vCPU on its own (measured: the server's core running 1.8x faster for seconds while the other core's probe did
not move); every figure of a run moves with it (server CPU per request, throughput, latency). The probe does not
depend on the code being measured, so it can stand beside a figure as a covariate: the committed-baseline check
regresses each figure on it across the calibration runs and judges a new run against the figure *expected at the
speed it ran at* (:mod:`servingbench.gate.noise`).

Why during the load and on the server's core: a probe taken only before and after the load, on an idle core,
explained a third of the run-to-run variance in one phase (R² 0.32 over 20 runs); the same work sampled on the
server's core during the load (then 20,000 iterations every 0.5 s) correlated with server CPU per request at r =
0.89 over 16 runs; as built it explained R² 0.49 of 16 calibration runs (docs/bench-ci.md). An idle core
also reads about 10 % slower than a busy one (it runs cold), so idle samples would mix two things. The cost: one
sample of :data:`PROBE_ITERATIONS` (about 0.3-0.6 ms) every 0.1 s, under 1 % of the server's core (the memory
probe below adds about 2 %), the same for every
config and version measured. A sample's CPU time counts only the time it ran, so waiting behind the server does not
enter it: with a competing loop on the core at 50, 90 and 100 % duty (/work/bench/s6/small_exp.py), the reading
moved with the competing loop's own rate, the core's speed (3,040 us while the loop ran 33 M iterations in 6 s, 5,697
us at 21.9 M), not with the duty; only a near-idle core read about 10 % slower (it runs cold), and the load keeps
the server's core busy.

What it cannot show: a slowdown the interpreter loop does not feel (memory bandwidth, the network stack) is not in
it, and its absolute value means nothing across machines (the baseline check never compares two machines).

The memory probe beside it (opt-in: the plan's ``memory_probe_steps``, 0 in the built-in plan; ``memory_probe_us``):
the interpreter loop above keeps its few hundred bytes in the core's L1 cache, so a neighbour that contends for the
shared caches or memory does not slow it. It does slow a server: on the second 2-core VM (2026-12-04,
/work/bench/s14/probes.py and analyze.py, 186 windows of 2 s, FastAPI on uvicorn under wrk closed loop) throughput
moved 10 % between one-minute blocks while this loop read 215-216 us in every block; the server's CPU per request
over the windows correlated r = 0.61 with the loop (that from a few seconds of the slow phase) and r = 0.76 with a
pointer chase over 70 MB, whose residual after the loop still correlated r = 0.59. A set of three `make bench` runs
showed the same blind spot: one run's servers needed 33 % more CPU per request than another's at the same loop
reading. With the knob, each sample also times a chase of that many steps (:data:`MEMORY_PROBE_STEPS`, 5,000, is the
validated one), from index 0 every time, through a random cycle over :data:`MEMORY_PROBE_ITEMS` Python ints (built
once per process, before the first run): the same list slots and int objects at random addresses, about 640 kB of
cache lines at 5,000 steps, which the server's own work evicts between two samples, so each sample reloads them from
the shared cache or memory and reads how contended those are. At 5,000 steps it costs about 2.2 ms a sample on that
VM, so the two probes take about 2.5 % of the server's core, the same for every config. Its readings feed only a
what-if term of the capacity speed rule (:mod:`servingbench.reports.speed`), which on three `make bench` runs frozen
beforehand (set 12, docs/measurements.md) made runs agree worse than the loop alone; a probe the report does not use
should not take 2 % of the server's core, hence opt-in. The baseline check keeps the loop alone. What it cannot
show: its reading is partly the server's own doing (a busier server evicts more lines between two samples, so a
slower server at the same rate reads slower), an idle core keeps the lines cached and reads fast, and its absolute
value moves with the machine's cache sizes (compare it within a run, or between runs of one machine).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Collection
from functools import cache
from types import TracebackType
from typing import Any

import numpy as np

__all__ = [
    "MEMORY_PROBE",
    "MEMORY_PROBE_ITEMS",
    "MEMORY_PROBE_STEPS",
    "PROBE_INTERVAL_S",
    "PROBE_ITERATIONS",
    "SPEED_PROBE",
    "SpeedSampler",
    "memory_probe_kind",
    "prepare_memory_probe",
]

PROBE_ITERATIONS = 2_000
"""Loop iterations of one sample: about 0.3-0.6 ms of CPU on the 2-core VM."""
PROBE_INTERVAL_S = 0.1
"""Time between samples: a 0.5 s measured window gets about 5."""
SPEED_PROBE = f"load-{PROBE_ITERATIONS}it-{PROBE_INTERVAL_S}s"
"""The probe's kind, recorded with every bundle and calibration: values of two kinds are never fitted together (an
older probe ran 20,000 iterations on the idle core before and after the load)."""
MEMORY_PROBE_ITEMS = 2_000_000
"""Length of the memory probe's random cycle: a list of that many Python ints, about 70 MB."""
MEMORY_PROBE_STEPS = 5_000
"""Steps of the chase in one memory sample (always from index 0): about 2.2 ms under load on the second 2-core VM."""


def memory_probe_kind(steps: int) -> str:
    """The memory probe's kind for chases of ``steps`` steps, recorded with every bundle that has its readings
    (``environment.memory_probe``)."""
    return f"chase-{steps}of{MEMORY_PROBE_ITEMS}-{PROBE_INTERVAL_S}s"


MEMORY_PROBE = memory_probe_kind(MEMORY_PROBE_STEPS)
"""The kind of the validated chase (the plan knob ``memory_probe_steps = 5000``)."""


@cache
def _cycle(items: int) -> list[int]:
    """A random cyclic permutation of ``range(items)`` as a list (``cycle[i]`` is the next index), seeded so every run
    chases the same cycle; built once per process and length."""
    order = np.random.default_rng(20261204).permutation(items)
    successor = np.empty(items, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    return successor.tolist()


def prepare_memory_probe() -> None:
    """Build the memory probe's cycle now (once per process): a benchmark with the memory probe calls this before its
    first run, so the build is not inside that run's time or on its server's core."""
    _cycle(MEMORY_PROBE_ITEMS)


def _chase(cycle: list[int], steps: int) -> int:
    """Follow ``cycle`` for ``steps`` steps from index 0 (the same slots every sample): each step waits for the last,
    so no two loads overlap."""
    index = 0
    for _ in range(steps):
        index = cycle[index]
    return index


def _timed(work: Callable[..., int], *args: Any) -> tuple[float, float]:
    """Run ``work(*args)`` and return (monotonic time at its end, the thread's CPU microseconds it took)."""
    start = time.thread_time_ns()
    work(*args)
    used = (time.thread_time_ns() - start) / 1_000.0
    return time.monotonic(), used


def _work(iterations: int) -> int:
    """Fixed interpreter work of the kind a web framework does: dict stores, int-to-str, small arithmetic."""
    table: dict[int, int] = {}
    total = 0
    for index in range(iterations):
        table[index & 255] = index
        total += len(str(index))
    return total


class SpeedSampler:
    """Samples the fixed work every ``interval_s`` in a daemon thread pinned to ``cpus`` (the caller's own affinity
    is untouched), from entering the context to leaving it; :meth:`window_start` / :meth:`window_end` mark the
    measured window, whose samples make the run's value. Without ``cpus``, or when the platform cannot pin a
    thread, it takes no samples. With ``memory_steps`` (0 by default: none), each sample also times the memory chase,
    that many steps over a cycle of ``memory_items``, whose window median is ``value(memory=True)``."""

    def __init__(
        self,
        cpus: Collection[int],
        *,
        iterations: int | None = None,
        interval_s: float | None = None,
        memory_steps: int | None = None,
        memory_items: int | None = None,
    ) -> None:
        self.cpus = frozenset(cpus)
        self.iterations = PROBE_ITERATIONS if iterations is None else iterations
        self.interval_s = PROBE_INTERVAL_S if interval_s is None else interval_s
        self.memory_steps = 0 if memory_steps is None else memory_steps
        self.memory_items = MEMORY_PROBE_ITEMS if memory_items is None else memory_items
        self._samples: list[tuple[float, float]] = []  # (monotonic time at the end of the sample, CPU us)
        self._memory: list[tuple[float, float]] = []  # the same for the memory chase
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window: list[float] = []
        self.error: OSError | None = None

    def __enter__(self) -> SpeedSampler:
        if self.cpus and hasattr(os, "sched_setaffinity"):
            if self.memory_steps > 0:
                _cycle(self.memory_items)  # once per process (a benchmark builds it before its first run)
            self._thread = threading.Thread(target=self._loop, name="servingbench-speed-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        try:
            os.sched_setaffinity(0, set(self.cpus))  # pid 0: the calling thread only
        except OSError as exc:
            self.error = exc
            return
        cycle = _cycle(self.memory_items) if self.memory_steps > 0 else []  # built by __enter__ already
        while not self._stop.wait(self.interval_s):
            self._samples.append(_timed(_work, self.iterations))
            if cycle:
                self._memory.append(_timed(_chase, cycle, self.memory_steps))

    def window_start(self) -> None:
        self._window = [time.monotonic()]

    def window_end(self) -> None:
        if len(self._window) == 1:
            self._window.append(time.monotonic())

    @property
    def samples(self) -> list[float]:
        """Every sample's CPU microseconds, in order."""
        return [used for _, used in list(self._samples)]

    def window_samples(self, *, memory: bool = False) -> list[float]:
        """The samples that ended inside the measured window (from its start on when it never closed); none when no
        window was marked: samples of the warm-up or the drain, on a core going idle, would mix two things.
        ``memory``: the memory chase's samples instead of the loop's."""
        samples = list(self._memory if memory else self._samples)
        if not self._window:
            return []
        start = self._window[0]
        end = self._window[1] if len(self._window) == 2 else float("inf")
        return [used for at, used in samples if start <= at <= end]

    def value(self, *, memory: bool = False) -> float | None:
        """The run's probe: the median of the window's samples; ``None`` without any. ``memory``: the memory
        probe's."""
        values = self.window_samples(memory=memory)
        return round(statistics.median(values), 1) if values else None
