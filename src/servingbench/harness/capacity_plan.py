"""The plan behind ``servingbench capacity``: one server config, one model, a latency-vs-offered-rate curve per
arrival process (or fixed open-loop rates), run by the same runner and measure path as ``servingbench run``.

A closed-loop run with a few users comes first in every repetition: it gives the curve's grid its peak and, for a
server that serves one request at a time, the service time queueing theory needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from servingbench.harness.plan import BUILTIN_PLAN_SOURCE, Plan, _read_builtin, parse_plan

__all__ = ["SERVICE_PROBE_USERS", "CapacityRequest", "capacity_plan"]

SERVICE_PROBE_USERS = 4
"""Closed-loop users of the run before each curve: enough to keep a one-at-a-time server always busy."""
CONFIG_NAME = "config"
MODEL_NAME = "model"
PROBE_SCENARIO = "probe"


@dataclass(frozen=True)
class CapacityRequest:
    """What ``servingbench capacity`` was asked for (rates in req/s, times in seconds)."""

    framework: str
    server: str
    model: str
    arrivals: Sequence[str] = ("poisson",)
    route: str | None = None
    threads: int | None = None
    workers: int = 1
    endpoint: str = "/predict"
    slo_p99_ms: float = 50.0
    rates: Sequence[float] = ()
    points: int = 8
    repetitions: int = 1
    step_requests: int = 1000
    max_step_s: float = 10.0
    warmup_s: float = 1.0
    seed: int = 1
    traffic_rps: float = 0.0


def capacity_plan(request: CapacityRequest) -> Plan:
    """The plan for ``request`` (a ``PlanError`` names what is wrong, e.g. a server the framework cannot run on).
    With ``rates``, each arrival process is an open-loop scenario at those fixed rates instead of a curve."""
    config: dict[str, Any] = {"framework": request.framework, "server": request.server}
    if request.route is not None:
        config["route"] = request.route
    if request.threads is not None:
        config["threads"] = request.threads
    scenarios: dict[str, Any] = {
        PROBE_SCENARIO: {"endpoint": request.endpoint, "concurrency": [SERVICE_PROBE_USERS]},
    }
    for arrivals in request.arrivals:
        if request.rates:
            scenarios[f"open-{arrivals}"] = {
                "kind": "open",
                "endpoint": request.endpoint,
                "arrivals": arrivals,
                "rates": [float(rate) for rate in request.rates],
            }
        else:
            scenarios[f"capacity-{arrivals}"] = {"kind": "capacity", "endpoint": request.endpoint, "arrivals": arrivals}
    data = {
        **{key: value for key, value in _read_builtin().items() if key not in ("configs", "models", "scenarios")},
        "seed": request.seed,
        "workers": request.workers,
        "repetitions": request.repetitions,
        "slo_p99_ms": request.slo_p99_ms,
        "traffic_rps": request.traffic_rps,
        "capacity_points": request.points,
        "capacity_repetitions": request.repetitions,
        "capacity_extra_repetitions": 0,  # its curves are its repetitions
        "capacity_step_requests": request.step_requests,
        "capacity_max_step_s": request.max_step_s,
        "capacity_warmup_s": request.warmup_s,
        "duration_s": max(1.0, min(request.max_step_s, 5.0)),
        "configs": {CONFIG_NAME: config},
        "models": {MODEL_NAME: {"spec": request.model, "scenarios": list(scenarios)}},
        "scenarios": scenarios,
    }
    return parse_plan(data, preset="default", source=f"servingbench capacity ({BUILTIN_PLAN_SOURCE} knobs)")
