"""CPU allocation: which cores the server gets and which the load generator gets, never the same ones.

The usable cores are the process affinity, cut down to the cgroup CPU quota (v2 ``cpu.max``, or v1
``cpu.cfs_quota_us``) rounded down: a 1.5-CPU quota on 4 cores leaves 1 core that can run at full speed.
The parsing and allocation functions are pure; :func:`detect_cpus` reads the machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CGROUP_ROOT",
    "DEFAULT_SERVER_CPUS",
    "CpuAllocation",
    "CpuAllocationError",
    "allocate_cpus",
    "detect_cpus",
    "parse_cfs_quota",
    "parse_cpu_max",
    "read_cpu_quota",
    "usable_cpus",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
DEFAULT_SERVER_CPUS = 1
MIN_LOAD_CPUS = 1
# A quota of 1.9999 CPUs is 2 CPUs up to the kernel's period rounding.
QUOTA_EPSILON = 1e-6
SHARED_CORES_RULE = "VIOLATED: server and load generator share cores (--allow-shared-cores); results are not fair"


class CpuAllocationError(Exception):
    """The machine has too few usable cores for a fair run. ``str(err)`` is one line with the fix."""


@dataclass(frozen=True)
class CpuAllocation:
    """Cores for the server (``server``) and the load generator (``load``); disjoint unless ``shared``."""

    affinity: tuple[int, ...]
    quota: float | None
    usable: tuple[int, ...]
    server: tuple[int, ...]
    load: tuple[int, ...]
    shared: bool = False

    def to_json(self) -> dict[str, Any]:
        """The fields ``results.json`` keeps under ``environment``."""
        return {
            "affinity": list(self.affinity),
            "usable_cpus": list(self.usable),
            "cpu_quota": self.quota,
            "server_cpus": list(self.server),
            "load_cpus": list(self.load),
            "shared_cores": self.shared,
        }

    def fairness_rules(self) -> list[str]:
        """Human-readable rules this allocation applied (or broke)."""
        if self.shared:
            return [SHARED_CORES_RULE]
        return [
            f"every server config pinned to the same CPUs {list(self.server)}; "
            f"the load generator pinned to the other CPUs {list(self.load)}"
        ]


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"150000 100000"`` -> 1.5); ``None`` for ``max`` or junk."""
    parts = text.split()
    if len(parts) not in (1, 2) or parts[0] == "max":
        return None
    period = parts[1] if len(parts) == 2 else "100000"
    return _ratio(parts[0], period)


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; ``None`` when unlimited (-1)."""
    return _ratio(quota_text.strip(), period_text.strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def usable_cpus(affinity: Iterable[int], quota: float | None) -> tuple[int, ...]:
    """The cores that can run at once: ``affinity`` sorted, cut to ``floor(quota)`` (at least 1) when a quota is set."""
    cores = tuple(sorted(set(affinity)))
    if quota is None:
        return cores
    return cores[: max(1, math.floor(quota + QUOTA_EPSILON))]


def allocate_cpus(
    affinity: Iterable[int],
    quota: float | None,
    *,
    server_cpus: int = DEFAULT_SERVER_CPUS,
    allow_shared: bool = False,
) -> CpuAllocation:
    """Give the first ``server_cpus`` usable cores to the server and the rest to the load generator.

    Raises :class:`CpuAllocationError` when fewer than ``server_cpus + 1`` cores are usable, unless
    ``allow_shared``: then both sides get every usable core and the allocation is marked ``shared``.
    """
    affinity = tuple(sorted(set(affinity)))
    usable = usable_cpus(affinity, quota)
    if len(usable) >= server_cpus + MIN_LOAD_CPUS:
        return CpuAllocation(affinity, quota, usable, usable[:server_cpus], usable[server_cpus:])
    if allow_shared:
        return CpuAllocation(affinity, quota, usable, usable[:server_cpus], usable, shared=True)
    quota_note = f", cgroup quota {quota:g} CPUs" if quota is not None else ""
    raise CpuAllocationError(
        f"only {len(usable)} usable CPU(s) (affinity {list(affinity)}{quota_note}); the server needs {server_cpus} "
        f"and the load generator at least {MIN_LOAD_CPUS} more. Run on more cores, lower server_cpus, "
        "or pass --allow-shared-cores (the results are then marked unfair)"
    )


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and cgroup v1 ``cpu`` controller path, from ``/proc/self/cgroup``."""
    v2: str | None = None
    v1: str | None = None
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, path: str | None) -> list[Path]:
    """``root/path`` and every directory above it up to ``root`` (limits nest: the tightest one wins)."""
    parts = [part for part in (path or "").split("/") if part]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def read_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest cgroup CPU quota over this process's cgroup and its ancestors, in CPUs; ``None`` if unlimited."""
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    for directory in _ancestors(root, v2_path):
        text = _read(directory / "cpu.max")
        quota = parse_cpu_max(text) if text is not None else None
        if quota is not None:
            quotas.append(quota)
    for directory in _ancestors(root / "cpu", v1_path):
        quota_text, period_text = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
        quota = parse_cfs_quota(quota_text, period_text) if quota_text and period_text else None
        if quota is not None:
            quotas.append(quota)
    return min(quotas) if quotas else None


NO_PINNING = (
    "servingbench pins the server and the load generator to separate cores, which needs Linux "
    "(sched_setaffinity); on macOS or Windows, run it in the containers (docs/containers.md)"
)


def detect_cpus(*, server_cpus: int = DEFAULT_SERVER_CPUS, allow_shared: bool = False) -> CpuAllocation:
    """Allocate this machine's usable cores (affinity of this process and the cgroup quota).

    Raises :class:`CpuAllocationError` (one line) where CPU pinning does not exist (not Linux)."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        raise CpuAllocationError(NO_PINNING)
    return allocate_cpus(os.sched_getaffinity(0), read_cpu_quota(), server_cpus=server_cpus, allow_shared=allow_shared)
