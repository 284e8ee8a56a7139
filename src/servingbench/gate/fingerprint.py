"""Like with like: which machine a bundle ran on, and which plan it measured.

A committed baseline is compared only with a run on the machine that made it (``environment.machine_id``, a hash of
the machine-id, CPU model and CPU count), measuring the same plan. Python and package versions are deliberately not
part of either: a dependency bump is a change the gate judges, and the summary lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Machine",
    "machine_mismatch",
    "plan_identity",
    "plan_mismatch",
    "software_changes",
]

# Plan knobs that change what a run measures (the seed only reorders configs; the preset name is applied already).
PLAN_KNOBS = (
    "workers",
    "server_cpus",
    "blas_threads",
    "warmup_s",
    "duration_s",
    "window_requests",
    "min_duration_s",
    "repetitions",
    "error_rate_limit",
    "min_requests",
    "restart_every",
)
# Knobs newer than stored baselines, part of the identity only when set (off, the identity is the one stored before
# they existed): the memory probe takes a share of the server's core.
OPTIONAL_PLAN_KNOBS = ("memory_probe_steps",)
CONFIG_FIELDS = ("framework", "server", "route", "threads")
SOFTWARE_KEYS = ("python", "python_implementation")


@dataclass(frozen=True)
class Machine:
    """Where a bundle ran: ``id`` is ``environment.machine_id`` (``None`` for a machine without a machine-id, or a
    bundle written before the field existed)."""

    id: str | None
    cpu_model: str | None
    logical_cpus: int | None

    @classmethod
    def of(cls, environment: Mapping[str, Any]) -> Machine:
        cpus = environment.get("logical_cpus")
        model = environment.get("cpu_model")
        ident = environment.get("machine_id")
        return cls(
            ident if isinstance(ident, str) and ident else None,
            model if isinstance(model, str) else None,
            cpus if isinstance(cpus, int) and not isinstance(cpus, bool) else None,
        )

    def describe(self) -> str:
        return f"{self.id or 'no machine id'} ({self.cpu_model or 'unknown CPU'}, {self.logical_cpus or '?'} CPUs)"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "cpu_model": self.cpu_model, "logical_cpus": self.logical_cpus}


def machine_mismatch(baseline: Machine, current: Machine) -> str | None:
    """Why the two machines cannot be compared, or ``None`` when they are the same machine."""
    if baseline.id is None:
        return "the baseline records no machine identity (made before machine ids, or on a machine without one)"
    if current.id is None:
        return "this machine has no stable identity (no /etc/machine-id), so it cannot be the baseline's"
    if baseline.id != current.id:
        return f"the baseline was made on machine {baseline.describe()}, this run is on {current.describe()}"
    return None


def _spec_identity(spec: object) -> object:
    """A model spec as the plan means it: a file by its name (checkouts live in different directories)."""
    if isinstance(spec, str) and ("/" in spec or "\\" in spec):
        return Path(spec).name
    return spec


def plan_identity(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for two runs to measure the same thing: the knobs, the distinct server configs (an A/B run
    has two identical ones, named base and head), the models and the scenarios."""
    configs = plan.get("configs") or {}
    launches = {
        tuple((name, entry.get(name)) for name in CONFIG_FIELDS)
        for entry in configs.values()
        if isinstance(entry, dict)
    }
    models = plan.get("models") or {}
    knobs = {name: plan.get(name) for name in PLAN_KNOBS}
    knobs.update({name: value for name in OPTIONAL_PLAN_KNOBS if (value := plan.get(name))})
    return {
        "knobs": knobs,
        "configs": sorted(repr(launch) for launch in launches),
        "models": {
            name: {"spec": _spec_identity(entry.get("spec")), "scenarios": entry.get("scenarios")}
            for name, entry in sorted(models.items())
            if isinstance(entry, dict)
        },
        "scenarios": plan.get("scenarios") or {},
    }


def plan_mismatch(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The parts of the plan identity that differ (e.g. "knobs.repetitions: 20 vs 10"), or ``None``."""
    differences = []
    for part in ("knobs", "configs", "models", "scenarios"):
        old, new = baseline.get(part), current.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(set(old) | set(new), key=str)
            differences += [
                f"{part}.{key}: {old.get(key)!r} vs {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)
            ]
        else:
            differences.append(f"{part}: {old!r} vs {new!r}")
    return "; ".join(differences) or None


def software_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Python and package versions that differ between two environments, as "name old -> new"."""
    changes = [
        f"{key} {baseline.get(key)} -> {current.get(key)}"
        for key in SOFTWARE_KEYS
        if baseline.get(key) != current.get(key)
    ]
    old, new = baseline.get("packages") or {}, current.get("packages") or {}
    if isinstance(old, dict) and isinstance(new, dict):
        changes += [
            f"{name} {old.get(name)} -> {new.get(name)}"
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)
        ]
    return changes
