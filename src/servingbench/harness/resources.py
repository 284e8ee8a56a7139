"""Resource use of a server's process tree (master plus workers), measured with psutil.

CPU is counted as user + system seconds of every live process in the tree plus the CPU of children they
already reaped, so a worker that exits and is reaped by its master mid-window still counts, once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil

__all__ = [
    "BYTES_PER_MB",
    "MemorySample",
    "ServerMonitor",
    "WindowUsage",
    "process_tree",
    "sample_memory",
    "tree_cpu_seconds",
]

BYTES_PER_MB = 1024 * 1024


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants; empty when ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, including reaped children) used so far by the tree rooted at ``pid``."""
    return sum(_cpu_seconds(process) for process in process_tree(pid))


@dataclass(frozen=True)
class MemorySample:
    """Memory of a server tree in MB. Workers are the leader's children, or the leader itself when it has none."""

    rss_mb_total: float
    rss_mb_per_worker: tuple[float, ...]
    pss_mb_per_worker: tuple[float, ...] | None


def _workers(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return root.children(recursive=False) or [root]
    except psutil.Error:
        return []


def _rss_mb(process: psutil.Process) -> float | None:
    try:
        return float(process.memory_info().rss) / BYTES_PER_MB
    except psutil.Error:
        return None


def _pss_mb(process: psutil.Process) -> float | None:
    """PSS (shared pages split between the processes sharing them) where the platform reports it."""
    try:
        pss = getattr(process.memory_full_info(), "pss", None)
    except (psutil.Error, OSError):
        return None
    return None if pss is None else float(pss) / BYTES_PER_MB


def sample_memory(pid: int) -> MemorySample | None:
    """RSS of the whole tree and RSS/PSS per worker, in MB; ``None`` when the tree is gone."""
    total = [rss for rss in (_rss_mb(process) for process in process_tree(pid)) if rss is not None]
    workers = _workers(pid)
    per_worker = [rss for rss in (_rss_mb(process) for process in workers) if rss is not None]
    if not total or not per_worker:
        return None
    pss = [_pss_mb(process) for process in workers]
    pss_values = None if any(value is None for value in pss) else tuple(value for value in pss if value is not None)
    return MemorySample(sum(total), tuple(per_worker), pss_values)


@dataclass(frozen=True)
class WindowUsage:
    """What a server used during one measured window: CPU seconds, and memory sampled at the window's end."""

    cpu_s: float
    memory: MemorySample | None


class ServerMonitor:
    """Measures one server tree over a window: call :meth:`window_start`, then :meth:`window_end`.

    Both are cheap and safe to call from the load generator's callbacks; errors reading a process are ignored.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start_cpu_s: float | None = None
        self._usage: WindowUsage | None = None

    def window_start(self) -> None:
        self._start_cpu_s = tree_cpu_seconds(self.pid)
        self._usage = None

    def window_end(self) -> None:
        if self._start_cpu_s is None:
            return
        cpu_s = max(0.0, tree_cpu_seconds(self.pid) - self._start_cpu_s)
        memory = None
        with contextlib.suppress(psutil.Error):
            memory = sample_memory(self.pid)
        self._usage = WindowUsage(cpu_s, memory)

    @property
    def usage(self) -> WindowUsage | None:
        """The last completed window, or ``None`` if no window both started and ended."""
        return self._usage
