"""``servingbench capacity``: one server config's latency-vs-offered-rate curve and its capacity at the SLO."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from servingbench import commands
from servingbench.commands import Subparsers

__all__ = ["add", "curve_lines"]

DESCRIPTION = """\
Measure one server config's latency against offered open-loop rate (each request timed from its intended send time,
no coordinated omission) on a grid of rates, and its capacity where a monotone fit of p99 crosses the SLO; queueing
theory (M/D/1 for Poisson arrivals, D/D/1 for constant spacing) stands beside a server that serves one request at a
time. It is a one-config plan run by the same runner and measure path as servingbench run, so it writes a bundle
with its report; --rates runs fixed open-loop rates instead (to check the load generator)."""
EPILOG = f"""\
examples:
  servingbench capacity --framework flask --server gunicorn-sync --model synthetic:sleep_ms=10 \\
      --arrivals poisson constant --repetitions 5           the queueing-theory check
  servingbench capacity --framework fastapi --server uvicorn --model fast --slo-ms 20 --traffic-rps 300
  servingbench capacity --framework fastapi --model fast --rates 500 1000 1500 --json

{commands.EXIT_STATUS_TEXT}"""


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from servingbench.servers.registry import FRAMEWORKS, SERVERS

    p = sub.add_parser(
        "capacity",
        help="p99 against offered open-loop rate for one server config, and its capacity at the SLO",
        **commands.parser_options(DESCRIPTION, EPILOG),
    )
    p.add_argument("--framework", choices=tuple(FRAMEWORKS), default="flask", help="the framework")
    p.add_argument("--server", choices=tuple(SERVERS), default="gunicorn-sync", help="the server kind")
    p.add_argument("--route", default=None, help="route style, where the framework has one (FastAPI: def, async)")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per worker, for a server with a thread knob (default 40)"
    )
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--model", default="synthetic:sleep_ms=10", help="fast | heavy | PATH | synthetic:...")
    p.add_argument("--endpoint", default="/predict", choices=("/predict",), help="the endpoint posted to")
    p.add_argument(
        "--arrivals",
        nargs="+",
        choices=("poisson", "constant"),
        default=["poisson"],
        help="arrival process of each curve: poisson (independent clients) or constant spacing",
    )
    p.add_argument("--slo-ms", type=float, default=50.0, help="the p99 target, ms")
    p.add_argument("--points", type=int, default=8, help="rates on the grid")
    p.add_argument("--repetitions", type=int, default=1, help="curves per arrival process (5+ for an interval)")
    p.add_argument("--step-requests", type=int, default=2000, help="requests in a step's window")
    p.add_argument("--max-step-s", type=float, default=10.0, help="the longest a step's window runs, s")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=2.0,
        help="open-loop warm-up before each step's window (3 x on the curve's first), s",
    )
    p.add_argument("--traffic-rps", type=float, default=0.0, help="the traffic you expect, req/s, measured too")
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=(),
        help="no curve: run these fixed open-loop rates (checks the generator: offered vs achieved, send lag)",
    )
    p.add_argument("--seed", type=int, default=1, help="seeds the arrival schedules")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
    p.add_argument("--json", action="store_true", help="print the curves (or the fixed-rate runs) as JSON on stdout")
    p.add_argument("--allow-shared-cores", action="store_true", help="run on one core (recorded as unfair)")
    p.set_defaults(func=_capacity)


def _capacity(args: argparse.Namespace) -> int:
    from rich.console import Console

    from servingbench.commands.run import any_valid
    from servingbench.harness import BenchmarkInterrupted, HarnessError, PlanError, run_benchmark
    from servingbench.harness.capacity_plan import CapacityRequest, capacity_plan

    request = CapacityRequest(
        framework=args.framework,
        server=args.server,
        model=args.model,
        arrivals=tuple(args.arrivals),
        route=args.route,
        threads=args.threads,
        workers=args.workers,
        endpoint=args.endpoint,
        slo_p99_ms=args.slo_ms,
        rates=tuple(args.rates),
        points=args.points,
        repetitions=args.repetitions,
        step_requests=args.step_requests,
        max_step_s=args.max_step_s,
        warmup_s=args.warmup_s,
        seed=args.seed,
        traffic_rps=args.traffic_rps,
    )
    console = Console(stderr=args.json)  # with --json, stdout carries the JSON alone
    try:
        bundle = run_benchmark(
            plan_path=capacity_plan(request),
            preset="default",
            out_root=args.out,
            targets=[],
            load_workers=None,
            console=console,
            allow_shared_cores=args.allow_shared_cores,
        )
    except (HarnessError, PlanError) as err:
        return commands.fail(str(err))
    except BenchmarkInterrupted as stop:
        print(f"servingbench: interrupted; partial results kept in {stop.bundle_dir}", file=sys.stderr)
        return commands.EXIT_INTERRUPTED
    document = json.loads((bundle / "results.json").read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(_json(document, bundle), indent=1))
    else:
        from servingbench.reports import print_summary, render_report

        print("\n".join(curve_lines(document)))
        print_summary(bundle, console)
        print(f"report: {render_report(bundle)}")
    return commands.EXIT_OK if any_valid(bundle) else commands.EXIT_NOTHING_VALID


def _json(document: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """The curves (with their steps) or, for --rates, each fixed-rate run's offered and achieved figures."""
    keys = ("id", "scenario", "target_rps", "offered_rps", "achieved_rps", "send_lag_p99_ms", "late", "dropped")
    runs = [
        {**{key: run.get(key) for key in keys}, "latency_ms": run.get("latency_ms"), "valid": run.get("valid")}
        for run in document.get("runs", [])
        if run.get("kind") == "open"
    ]
    return {"bundle": str(bundle), "capacity": document.get("capacity", []), "open_loop_runs": runs}


def curve_lines(document: dict[str, Any]) -> list[str]:
    """Every curve of a bundle document: its steps (rate, p99, verdict) and the capacity read off it."""
    lines: list[str] = []
    for entry in document.get("capacity", []):
        theory = entry.get("theory_rps")
        beside = f"; {entry['theory']} {theory:.1f} req/s" if theory else ""
        slo = f"SLO p99 <= {entry['slo_p99_ms']:g} ms{beside}"
        lines += [f"{entry['scenario']} ({entry['arrivals']}), rep {entry['repetition'] + 1}, {slo}"]
        lines.append(f"{'rate/s':>9} {'p99 ms':>9}  verdict")
        for step in entry["steps"]:
            p99 = "-" if step["p99_ms"] is None else f"{step['p99_ms']:.1f}"
            verdict = "meets the SLO" if step["ok"] else f"fails: {step['reason']}"
            lines.append(f"{step['rate']:9.1f} {p99:>9}  {verdict}")
        found = entry.get("capacity_rps")
        if found is not None:
            gap = f" ({found / theory - 1:+.1%} against theory)" if theory else ""
            lines.append(f"capacity {found:.1f} req/s{gap}\n")
        else:
            where = f"{entry.get('censored')} {entry.get('bound_rps'):g} req/s" if entry.get("censored") else "none"
            lines.append(f"capacity: {where} ({entry['stop_reason']})\n")
    return lines
