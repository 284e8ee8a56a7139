"""A server frozen for a second mid-run: open-loop latency shows the stall in every request scheduled during it,
closed-loop latency only in the request that was in flight (coordinated omission).

The margins are huge on purpose: this is a property of the measurement, not a timing benchmark.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from servingbench.harness.loadgen import LoadResult, run_load
from servingbench.harness.processes import ServerProcess
from servingbench.loadtests import LoadSpec

from .conftest import LOAD_CPUS, PAYLOAD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STALL_AFTER_S = 1.5
"""Seconds into the measurement window at which the server is frozen (SIGSTOP to its process group)..."""
STALL_S = 1.0
"""...for this long (then SIGCONT)."""
WINDOW_S = 5.0
WARMUP_S = 1.0
CLOSED_USERS = 1
SLOW_MS = 500.0
"""A request at least this slow was caught by the stall (the server answers in ~6 ms otherwise)."""
US_PER_MS = 1000


class Freezer:
    """Freezes the server's process group for `STALL_S`, `STALL_AFTER_S` after the window opens, in a thread."""

    def __init__(self, server: ServerProcess) -> None:
        self._pgid = server.pid
        self._thread = threading.Thread(target=self._stall, name="freezer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _stall(self) -> None:
        time.sleep(STALL_AFTER_S)
        os.killpg(self._pgid, signal.SIGSTOP)
        try:
            time.sleep(STALL_S)
        finally:
            os.killpg(self._pgid, signal.SIGCONT)

    def join(self) -> None:
        self._thread.join()


def _run(server: ServerProcess, out_dir: Path, **load: object) -> LoadResult:
    spec = LoadSpec(
        base_url=server.base_url,
        endpoint="/predict",
        payload=PAYLOAD,
        warmup_s=WARMUP_S,
        duration_s=WINDOW_S,
        seed=5,
        **load,  # type: ignore[arg-type]
    )
    freezer = Freezer(server)
    try:
        return run_load(spec, out_dir=out_dir, cpus=LOAD_CPUS, on_window_start=freezer.start)
    finally:
        freezer.join()


def _slow_count(histogram: HdrHistogram) -> int:
    """Requests at or over `SLOW_MS`."""
    fast = 0
    for item in histogram.get_recorded_iterator():
        if item.value_iterated_to < SLOW_MS * US_PER_MS:
            fast = item.total_count_to_this_value
    total: int = histogram.get_total_count()
    return total - fast


def _p99_ms(histogram: HdrHistogram) -> float:
    return float(histogram.get_value_at_percentile(99.0)) / US_PER_MS


def test_open_loop_shows_the_stall_that_closed_loop_hides(sleepy_server: ServerProcess, tmp_path: Path) -> None:
    closed = _run(sleepy_server, tmp_path / "closed", kind="closed", users=CLOSED_USERS)
    rate = closed.rps  # the same average rate, the stall included
    opened = _run(sleepy_server, tmp_path / "open", kind="open", users=10 * round(rate * STALL_S) + 100, rate=rate)

    # Closed loop: the stall reaches the latency only through the request in flight when it hit.
    assert 1 <= _slow_count(closed.histograms.total) <= 2 * CLOSED_USERS
    assert closed.histograms.total.get_max_value() >= SLOW_MS * US_PER_MS

    # Open loop: every request due in the first half of the stall waited at least SLOW_MS (~rate/2 of them).
    assert opened.open_loop is not None and opened.open_loop.dropped == 0
    assert _slow_count(opened.histograms.total) >= 0.1 * rate * STALL_S
    assert _p99_ms(opened.histograms.total) >= SLOW_MS / 2
