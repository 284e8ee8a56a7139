"""When a run's measurement window opens and closes: fixed in advance, or at a request count within a cap.

Pure logic on numbers (epoch seconds, counts); the Locust processes apply it (`locust_process.py`). A run opens at
`opened_at`; its window starts `warmup_s` later. Then:

- no `target_requests`: the window lasts `duration_s` (`ended_by` "duration");
- a target, open loop: the harness knows the rate, so the window is sized in advance to `target / rate` seconds,
  at least `min_duration_s`, at most the cap `duration_s` ("target", or "cap" when `target / rate` reaches it);
- a target, closed loop: the rate is not known in advance, so the end is decided while the run goes: the process
  that owns the run counts the requests that started in the window (its own, or what the workers report every
  `END_POLL_S`) and ends the window at the first check that finds `target` of them, or at `min_duration_s` if
  that comes later ("target"); at the cap if the count never gets there ("cap"). Every counted request started
  before the end, so a window ended by its target holds at least `target` requests; it holds a few more (those
  started between reaching the target and the check that saw it: about one poll interval's worth for a local
  process, up to two with workers, whose counts arrive every `END_POLL_S`). Workers hold back the requests that
  start after `min_duration_s` until the end reaches them, so none that started after it is ever recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from servingbench.loadtests.recorder import Window
from servingbench.loadtests.scenarios import LoadSpec

__all__ = ["END_POLL_S", "END_REASONS", "EndReason", "WindowPlan"]

EndReason = Literal["duration", "target", "cap"]
END_REASONS: tuple[EndReason, ...] = get_args(EndReason)
END_POLL_S = 0.02
"""Seconds between two checks of a closed-loop run's request count against its target (and between two progress
reports of a worker): bounds how far past the target a window can run."""


@dataclass(frozen=True)
class WindowPlan:
    """The window of one run: it starts at `start`; ends at `fixed_end` when that is known in advance, otherwise
    (closed loop with a target) as `decide` says, never before `min_end` nor after `cap_end`. Epoch seconds."""

    start: float
    cap_end: float
    min_end: float
    target: int | None = None
    fixed_end: float | None = None
    fixed_reason: EndReason | None = None

    @classmethod
    def for_spec(cls, spec: LoadSpec, *, opened_at: float) -> WindowPlan:
        """The plan of `spec`'s window for a run that opens (starts its users) at `opened_at`."""
        start = opened_at + spec.warmup_s
        cap_end = start + spec.duration_s
        min_end = start + (spec.min_duration_s or 0.0)
        target = spec.target_requests
        if target is None:
            return cls(start, cap_end, cap_end, None, cap_end, "duration")
        if spec.kind == "open" and spec.rate:
            wanted = target / spec.rate
            if wanted >= spec.duration_s:
                return cls(start, cap_end, min_end, target, cap_end, "cap")
            return cls(start, cap_end, min_end, target, max(start + wanted, min_end), "target")
        return cls(start, cap_end, min_end, target)

    @property
    def dynamic(self) -> bool:
        """Whether the end is decided during the run (closed loop with a target)."""
        return self.fixed_end is None

    @property
    def provisional(self) -> Window:
        """The window as known at the start: up to the fixed end, or up to the cap while the end is undecided."""
        return Window(self.start, self.cap_end if self.fixed_end is None else self.fixed_end)

    def decide(self, *, now: float, started: int) -> tuple[float, EndReason] | None:
        """The end of a dynamic window and why, given `started` requests counted in it by `now` (epoch seconds);
        None while undecided. A fixed window answers its fixed end."""
        if self.fixed_end is not None and self.fixed_reason is not None:
            return self.fixed_end, self.fixed_reason
        if self.target is not None and started >= self.target:
            return min(max(now, self.min_end), self.cap_end), "target"
        if now >= self.cap_end:
            return self.cap_end, "cap"
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (for the run message to workers)."""
        return {
            "start": self.start,
            "cap_end": self.cap_end,
            "min_end": self.min_end,
            "target": self.target,
            "fixed_end": self.fixed_end,
            "fixed_reason": self.fixed_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowPlan:
        """Inverse of `to_json`."""
        reason = data.get("fixed_reason")
        if reason is not None and reason not in END_REASONS:
            raise ValueError(f"unknown window end reason {reason!r}")
        return cls(
            start=float(data["start"]),
            cap_end=float(data["cap_end"]),
            min_end=float(data["min_end"]),
            target=None if data.get("target") is None else int(data["target"]),
            fixed_end=None if data.get("fixed_end") is None else float(data["fixed_end"]),
            fixed_reason=reason,
        )
