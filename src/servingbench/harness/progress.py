"""What the person at the terminal sees while a plan runs: one line per measured run, and the time left.

The time left learns from the runs already measured: the plan's estimate of the remaining work is scaled by how
long the finished work really took against its estimate (so a machine twice as slow as the estimate's constants
sees twice the time left after its first few runs, not "0s left" for its last thirty).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["Eta", "PlainReporter", "Reporter", "RichReporter", "format_seconds", "reporter_for"]

MIN_LEARNED_S = 10.0
"""Seconds of finished work before the measured pace replaces the plan's estimate (the first runs carry start-up)."""
RECENT_STEPS = 30
"""Pieces of finished work (runs, server starts) the pace is measured over."""


def format_seconds(seconds: float) -> str:
    """``12m05s``, ``45s``."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Eta:
    """Estimated seconds left: the estimate of the work not done yet, times the pace of the recent work (real seconds
    per estimated second over the last `RECENT_STEPS` pieces of work, so a block of slow runs after a block of fast
    ones soon shows in the time left)."""

    def __init__(self, total_estimate_s: float) -> None:
        self.total_estimate_s = max(0.0, total_estimate_s)
        self.done_estimate_s = 0.0
        self.started = time.monotonic()
        self._last = self.started
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_STEPS)

    def advance(self, estimate_s: float, now: float | None = None) -> None:
        """Some work estimated at ``estimate_s`` seconds is done."""
        now = time.monotonic() if now is None else now
        self._recent.append((estimate_s, now - self._last))
        self._last = now
        self.done_estimate_s += estimate_s
        self.total_estimate_s = max(self.total_estimate_s, self.done_estimate_s)

    def grow(self, estimate_s: float) -> None:
        """More work than planned (e.g. a repeated step)."""
        self.total_estimate_s += max(0.0, estimate_s)

    def seconds_left(self, now: float | None = None) -> float:
        elapsed = (time.monotonic() if now is None else now) - self.started
        remaining = self.total_estimate_s - self.done_estimate_s
        estimated = sum(item[0] for item in self._recent)
        if elapsed < MIN_LEARNED_S or estimated <= 0:
            return remaining
        return remaining * sum(item[1] for item in self._recent) / estimated


class Reporter(Protocol):
    """What the runner tells the person at the terminal."""

    def start(self, total_runs: int, total_estimate_s: float) -> None: ...
    def begin(self, description: str) -> None: ...
    def advance(self, estimate_s: float, line: str | None = None) -> None: ...
    def note(self, line: str) -> None: ...
    def stop(self) -> None: ...


class PlainReporter:
    """One plain line per run, with a count and the time left: readable in CI logs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done_runs = 0
        self.total_runs = 0
        self.eta = Eta(0.0)

    def start(self, total_runs: int, total_estimate_s: float) -> None:
        self.total_runs, self.eta = total_runs, Eta(total_estimate_s)
        self.console.print(
            f"{total_runs} runs planned, about {format_seconds(total_estimate_s)}", highlight=False, soft_wrap=True
        )

    def begin(self, description: str) -> None:
        pass

    def advance(self, estimate_s: float, line: str | None = None) -> None:
        self.eta.advance(estimate_s)
        if line is not None:
            self.done_runs += 1
            self.total_runs = max(self.total_runs, self.done_runs)
            prefix = f"[{self.done_runs}/{self.total_runs}, {format_seconds(self.eta.seconds_left())} left]"
            self.console.print(f"{prefix} {line}", highlight=False, markup=False, soft_wrap=True)

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        pass


class RichReporter:
    """A live progress bar (what runs now, runs done, time left) with one line per finished run above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[runs]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[left]} left"),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.done_runs = 0
        self.total_runs = 0
        self.eta = Eta(0.0)

    def start(self, total_runs: int, total_estimate_s: float) -> None:
        self.total_runs, self.eta = total_runs, Eta(total_estimate_s)
        self.progress.start()
        self.task = self.progress.add_task(
            "starting", total=max(total_estimate_s, 1.0), runs=f"0/{total_runs}", left=format_seconds(total_estimate_s)
        )

    def begin(self, description: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=description)

    def advance(self, estimate_s: float, line: str | None = None) -> None:
        self.eta.advance(estimate_s)
        if line is not None:
            self.done_runs += 1
            self.total_runs = max(self.total_runs, self.done_runs)
            self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if self.task is not None:
            self.progress.update(
                self.task,
                completed=self.eta.done_estimate_s,
                total=max(self.eta.total_estimate_s, 1.0),
                runs=f"{self.done_runs}/{self.total_runs}",
                left=format_seconds(self.eta.seconds_left()),
            )

    def note(self, line: str) -> None:
        self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        self.progress.stop()


def reporter_for(console: Console) -> Reporter:
    """A live bar on a terminal, plain lines elsewhere (CI logs, files)."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
