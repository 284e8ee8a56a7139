"""The fairness rules a benchmark applied, in words: every report lists them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from servingbench.harness.cpus import CpuAllocation
from servingbench.harness.curve import GRID_HIGH_FRACTION, GRID_LOW_FRACTION, START_FRACTION
from servingbench.harness.measure import GENERATOR_SATURATION_PCT
from servingbench.harness.plan import FIRST_STEP_WARMUP_FACTOR, Plan

if TYPE_CHECKING:
    from servingbench.harness.runner import Target

__all__ = ["fairness_rules"]


def fairness_rules(plan: Plan, allocation: CpuAllocation, targets: Sequence[Target], target_mode: bool) -> list[str]:
    """The rules of this benchmark, one sentence each, in the order a reader checks them."""
    rules = _target_rules(allocation) if target_mode else _server_rules(plan, allocation, targets)
    rules.append(
        f"a warm-up of {plan.warmup_s:g} s before every measured window (of at most {plan.duration_s:g} s), discarded"
    )
    rules.append(_interleaving_rule(plan))
    if any(scenario.kind == "capacity" for scenario in plan.scenarios):
        rules.append(_capacity_rule(plan))
    rules.append(
        f"a run is invalid when the load generator used more than {GENERATOR_SATURATION_PCT:g}% of its cores, "
        f"the error rate passed {plan.error_rate_limit:.1%}, fewer than {plan.min_requests} requests were measured, "
        "or the server died"
    )
    return rules


def _target_rules(allocation: CpuAllocation) -> list[str]:
    rules = [f"load generator pinned to CPUs {list(allocation.load)}"]
    rules.extend(rule for rule in allocation.fairness_rules() if allocation.shared)
    rules.append(
        "target mode: servers started outside the harness; no pinning, worker, thread or BLAS control, "
        "no server CPU or memory figures"
    )
    return rules


def _server_rules(plan: Plan, allocation: CpuAllocation, targets: Sequence[Target]) -> list[str]:
    rules = list(allocation.fairness_rules())
    configs = [target.config for target in targets if target.config is not None]
    rules.append(f"equal worker processes: {plan.workers} for every config")
    rules.append(f"BLAS/OpenMP threads: {plan.blas_threads} in every worker")
    rules.append("FastAPI's default route is def (thread pool); async def runs as its own labelled config")
    inflight = ", ".join(f"{t.name} {t.config.inflight_per_worker()}" for t in targets if t.config)
    rules.append(f"in-flight requests per worker: {inflight}")
    closing = [t.name for t in targets if t.config and not t.config.keepalive()]
    rules.append(
        "connections kept alive, except on: " + (", ".join(closing) or "none") + " (a new connection per request)"
    )
    rules.append("production servers only: " + ", ".join(sorted({config.server for config in configs})))
    return rules


def _interleaving_rule(plan: Plan) -> str:
    restart = (
        f"every config's server is restarted every {plan.restart_every} repetitions"
        if plan.restart_every
        else "every config's server is started once per model and serves all its repetitions"
    )
    return (
        f"configs interleaved: each of {plan.repetitions} repetitions measures every config on every scenario, in an "
        f"order shuffled per repetition and scenario (seed {plan.seed}), so the configs of one repetition are "
        f"measured seconds apart and compare as pairs; {restart}"
        + (
            f"; then {extra} more repetitions measure the capacity curves only, interleaved the same way"
            if (extra := plan.total_repetitions - plan.repetitions)
            else ""
        )
    )


def _capacity_rule(plan: Plan) -> str:
    return (
        f"capacity at p99 <= {plan.slo_p99_ms:g} ms: open-loop arrivals on a seeded schedule, each request timed from "
        "its intended send time, on a grid of offered rates shared by every config (from "
        f"{GRID_LOW_FRACTION:g} x the lowest to {GRID_HIGH_FRACTION:g} x the highest closed-loop peak); each config "
        f"climbs it from {START_FRACTION:g} x its own peak in every repetition; each step warms up "
        f"{plan.capacity_warmup_s:g} s ({FIRST_STEP_WARMUP_FACTOR:g} x that on a curve's first step) and measures "
        f"about {plan.capacity_step_requests} requests (at most {plan.capacity_max_step_s:g} s); a step passes when "
        "p99 meets the SLO, "
        f"the error rate is not over {plan.error_rate_limit:.1%}, no arrival is dropped at the in-flight cap and the "
        "load generator keeps its schedule (p99 send lag within a tenth of the SLO); a step the generator could not "
        "keep is re-run, never counted as the server's; after a failed step the server must drain before anything "
        "else runs (its CPU quiet, no request waiting at its socket, its probe answered in time); the capacity is "
        "where a monotone fit of p99 against the offered rate crosses the SLO"
        + (
            f", after midpoints between the rates around it until a passing and a failing one are within "
            f"{plan.capacity_resolution:.0%}"
            if plan.capacity_resolution > 0
            else ""
        )
    )
