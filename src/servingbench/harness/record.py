"""The record of one measured run: built in one place (:func:`servingbench.harness.measure.measure`), typed, and
turned into the bundle's ``runs[]`` entry by :meth:`RunRecord.to_json` (docs/results-format.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from servingbench.harness.loadgen import LoadResult
from servingbench.harness.resources import WindowUsage
from servingbench.units import US_PER_S

__all__ = ["CPU_DECIMALS", "RunIdentity", "RunRecord", "RunStatus", "StepVerdict"]

RunStatus = Literal["ok", "failed", "interrupted"]
"""``ok``: the load ran (the run may still be invalid); ``failed``: it could not run or its server died;
``interrupted``: Ctrl-C during it."""
CPU_DECIMALS = 3
MB_DECIMALS = 1
CPU_US_DECIMALS = 1


@dataclass(frozen=True)
class RunIdentity:
    """What a run is: which server config, model and load shape, in which repetition and server start."""

    id: str
    order: int
    config: str
    framework: str | None
    server: str | None
    route: str | None
    workers: int | None
    threads: int | None
    model: str
    model_spec: str | None
    scenario: str
    kind: str
    endpoint: str
    batch_size: int
    concurrency: int | None
    target_rps: float | None
    repetition: int
    session: str
    warmup_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config": self.config,
            "framework": self.framework,
            "server": self.server,
            "route": self.route,
            "workers": self.workers,
            "threads": self.threads,
            "model": self.model,
            "model_spec": self.model_spec,
            "scenario": self.scenario,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "target_rps": self.target_rps,
            "repetition": self.repetition,
            "order": self.order,
            "session": self.session,
            "warmup_s": self.warmup_s,
        }


@dataclass(frozen=True)
class StepVerdict:
    """A capacity-curve step's judgement against the SLO: which curve it belongs to, whether it met the SLO, why not,
    and whether only the load generator failed (then it says nothing about the server)."""

    curve: str
    ok: bool
    reason: str | None
    generator_limited: bool = False


@dataclass(frozen=True)
class RunRecord:
    """One run: its identity, how it went (``status``, the validity ``problems``), the load result and the server's
    usage over the measured window, and the machine-speed probe during it (``speed_probe_us``, CPU microseconds of a
    fixed piece of work on the server's cores: higher is a slower machine; ``memory_probe_us`` the same for a chase
    through memory, when the plan's ``memory_probe_steps`` turns it on). ``valid`` only when it ran and no gate found
    a problem."""

    identity: RunIdentity
    status: RunStatus = "ok"
    problems: tuple[str, ...] = ()
    result: LoadResult | None = None
    usage: WindowUsage | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    log_tail: str | None = None
    notes: tuple[str, ...] = ()
    step: StepVerdict | None = None
    wall_s: float | None = None
    speed_probe_us: float | None = None
    memory_probe_us: float | None = None

    @property
    def valid(self) -> bool:
        return self.status == "ok" and self.result is not None and not self.problems

    @property
    def invalid_reason(self) -> str | None:
        return "; ".join(self.problems) or None

    @property
    def requests(self) -> int:
        return self.result.requests if self.result else 0

    @property
    def rps(self) -> float | None:
        return self.result.rps if self.result else None

    def failed(self, reason: str, *, status: RunStatus = "failed", log_tail: str | None = None) -> RunRecord:
        """This record marked as not measured (or not finished) for ``reason``."""
        return replace(self, status=status, problems=(reason,), log_tail=log_tail or self.log_tail)

    def with_step(self, step: StepVerdict) -> RunRecord:
        """This record as a capacity-curve step; a step that only measured the generator is not a valid run."""
        problems = self.problems
        if step.generator_limited and step.reason and not problems:
            problems = (step.reason,)
        return replace(self, step=step, problems=problems)

    def to_json(self, *, relative_to: Path) -> dict[str, Any]:
        """The bundle's ``runs[]`` entry; artefact paths relative to the bundle directory ``relative_to``."""
        entry: dict[str, Any] = {
            **self.identity.to_json(),
            "duration_s": None,
            "requests": 0,
            "errors": 0,
            "rps": None,
        }
        artifacts = {name: _relative(path, relative_to) for name, path in self.artifacts.items()}
        if self.result is not None:
            load = self.result.to_json(relative_to=relative_to)
            artifacts = {**load.pop("artifacts"), **artifacts}
            entry.update(load)
        entry.update(_usage_json(self.usage, self.requests))
        entry.update(
            valid=self.valid,
            invalid_reason=self.invalid_reason,
            status=self.status,
            log_tail=self.log_tail,
            artifacts=artifacts,
            wall_s=None if self.wall_s is None else round(self.wall_s, CPU_DECIMALS),
            speed_probe_us=self.speed_probe_us,
            memory_probe_us=self.memory_probe_us,
        )
        if self.notes:
            entry["notes"] = list(self.notes)
        if self.step is not None:
            entry.update(search=self.step.curve, step_ok=self.step.ok, step_reason=self.step.reason)
        return entry


def _relative(path: Path, root: Path) -> str:
    """An artefact's path relative to the bundle directory (as written in the bundle), with forward slashes."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _usage_json(usage: WindowUsage | None, requests: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "server_cpu_s": None,
        "server_cpu_us_per_request": None,
        "server_rss_mb": None,
        "server_rss_mb_per_worker": None,
        "server_pss_mb_per_worker": None,
    }
    if usage is None:
        return entry
    entry["server_cpu_s"] = round(usage.cpu_s, CPU_DECIMALS)
    if requests > 0:
        entry["server_cpu_us_per_request"] = round(usage.cpu_s * US_PER_S / requests, CPU_US_DECIMALS)
    if usage.memory is not None:
        memory = usage.memory
        entry["server_rss_mb"] = round(memory.rss_mb_total, MB_DECIMALS)
        entry["server_rss_mb_per_worker"] = [round(value, MB_DECIMALS) for value in memory.rss_mb_per_worker]
        pss = memory.pss_mb_per_worker
        entry["server_pss_mb_per_worker"] = None if pss is None else [round(value, MB_DECIMALS) for value in pss]
    return entry
