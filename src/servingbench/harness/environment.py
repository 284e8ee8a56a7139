"""The environment a benchmark ran in: hardware, OS, Python, package versions, git revision, load.

Recorded in every results bundle so two bundles can be told apart (``fingerprint``) and a reader can judge
whether a result applies to their machine. ``machine_id`` names the machine itself (not its software), so the CI gate
compares a run with a committed baseline only on the machine that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from servingbench.harness.cpus import CpuAllocation
from servingbench.harness.speed import SPEED_PROBE, memory_probe_kind
from servingbench.servers.registry import stack_packages

__all__ = [
    "PACKAGES",
    "collect_environment",
    "cpu_model",
    "fingerprint",
    "git_revision",
    "load_average",
    "machine_id",
    "package_versions",
]

PACKAGES = ("servingbench", *stack_packages(), "locust", "hdrhistogram", "psutil", "scikit-learn", "numpy", "scipy")
# The versions that change what is measured; the rest are recorded but do not change the fingerprint.
FINGERPRINT_PACKAGES = (*stack_packages(), "scikit-learn")
CPUINFO = Path("/proc/cpuinfo")
# systemd's and D-Bus's per-installation identifier: stable across reboots, different on every VM and runner.
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
MACHINE_ID_CHARS = 16  # hex digits kept of the identity hash: enough to tell machines apart, short enough to read
GIT_TIMEOUT_S = 5.0
SOURCE_DIR = Path(__file__).resolve().parent


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU model name (``/proc/cpuinfo``), else what :func:`platform.processor` says, else ``"unknown"``."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _read_machine_id(files: tuple[Path, ...]) -> str | None:
    for path in files:
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text:
            return text
    return None


def machine_id(files: tuple[Path, ...] = MACHINE_ID_FILES, cpuinfo: Path = CPUINFO) -> str | None:
    """A stable identity of this machine: the sha256 (first 16 hex digits) of its machine-id, CPU model and logical
    CPU count; ``None`` when it has no machine-id (e.g. a container without one), since a hostname alone is not
    stable. The machine-id itself is never recorded, only the hash."""
    raw = _read_machine_id(files)
    if raw is None:
        return None
    key = f"{raw}\n{cpu_model(cpuinfo)}\n{os.cpu_count()}"
    return hashlib.sha256(key.encode()).hexdigest()[:MACHINE_ID_CHARS]


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def git_revision(source_dir: Path = SOURCE_DIR) -> tuple[str | None, bool | None]:
    """The commit of the benchmarked code and whether tracked files differ from it; ``(None, None)`` outside git."""
    revision = _git(["rev-parse", "HEAD"], source_dir)
    if revision is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], source_dir)
    return revision, None if status is None else bool(status)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def fingerprint(environment: dict[str, Any]) -> str:
    """sha256 hex of what makes results comparable: CPU model, usable CPUs, kernel, Python, key package versions."""
    packages = environment.get("packages", {})
    key = {
        "cpu_model": environment.get("cpu_model"),
        "usable_cpus": len(environment.get("usable_cpus", [])),
        "kernel": environment.get("kernel"),
        "python": environment.get("python"),
        "packages": {name: packages.get(name) for name in FINGERPRINT_PACKAGES},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def collect_environment(allocation: CpuAllocation, *, blas_threads: int, memory_probe_steps: int = 0) -> dict[str, Any]:
    """The ``environment`` object of ``results.json`` (``load_avg_after`` is filled in when the run ends)."""
    revision, dirty = git_revision()
    environment: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "machine_id": machine_id(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        **allocation.to_json(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_revision": revision,
        "git_dirty": dirty,
        "load_avg_before": load_average(),
        "load_avg_after": None,
        "blas_threads": blas_threads,
        "speed_probe": SPEED_PROBE,  # the kind of every run's speed_probe_us (harness/speed.py)
    }
    if memory_probe_steps > 0:  # the kind of every run's memory_probe_us (the plan's memory_probe_steps)
        environment["memory_probe"] = memory_probe_kind(memory_probe_steps)
    environment["fingerprint"] = fingerprint(environment)
    return environment
