"""What a run and a server start cost on this machine, learned from the last bundle written here.

The first time estimate of a plan uses these when the latest bundle under the same results root came from the same
machine (hostname and CPU model); otherwise the constants measured when the plan's defaults were tuned. The progress
line then learns the pace of the run in progress (harness.progress).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servingbench.harness.bundle import LATEST_LINK, RESULTS_FILE
from servingbench.harness.plan import DEFAULT_WINDOW_SHARE, RUN_OVERHEAD_S, SERVER_START_OVERHEAD_S

__all__ = ["RunCosts", "learned_costs"]

MACHINE_KEYS = ("hostname", "cpu_model")

MIN_SAMPLES = 3


@dataclass(frozen=True)
class RunCosts:
    """Seconds a run costs beyond its warm-up and window, and seconds a server takes to start; ``source`` says
    where the figures come from."""

    run_overhead_s: float = RUN_OVERHEAD_S
    start_s: float = SERVER_START_OVERHEAD_S
    window_share: float = DEFAULT_WINDOW_SHARE
    """How much of its cap a closed-loop window sized by request count used (its median)."""
    source: str = "the plan's constants"


def _median(values: list[float], default: float) -> float:
    return statistics.median(values) if len(values) >= MIN_SAMPLES else default


def learned_costs(out_root: Path, environment: Mapping[str, Any]) -> RunCosts:
    """The costs measured by the latest bundle under ``out_root`` if it ran on this machine, else the constants."""
    try:
        document = json.loads((out_root / LATEST_LINK / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RunCosts()
    before = document.get("environment", {}) if isinstance(document, dict) else {}
    if any(before.get(key) != environment.get(key) for key in MACHINE_KEYS):
        return RunCosts()
    overheads = [
        float(run["wall_s"]) - float(run.get("warmup_s") or 0.0) - float(run.get("duration_s") or 0.0)
        for run in document.get("runs", [])
        if isinstance(run.get("wall_s"), int | float) and run.get("status") == "ok"
    ]
    starts = [
        float(session["start_s"])
        for session in document.get("sessions", [])
        if isinstance(session.get("start_s"), int | float)
    ]
    cap = (document.get("plan") or {}).get("duration_s")
    shares = [
        min(1.0, float(run["duration_s"]) / float(cap))
        for run in document.get("runs", [])
        if run.get("kind") == "closed"
        and isinstance(run.get("duration_s"), int | float)
        and isinstance(cap, int | float)
    ]
    if len(overheads) < MIN_SAMPLES and len(starts) < MIN_SAMPLES:
        return RunCosts()
    return RunCosts(
        run_overhead_s=max(0.0, _median(overheads, RUN_OVERHEAD_S)),
        start_s=_median(starts, SERVER_START_OVERHEAD_S),
        window_share=_median(shares, DEFAULT_WINDOW_SHARE),
        source=f"measured by {document.get('created', 'the last run')} on this machine",
    )
