"""``servingbench run``: the fair, interleaved, repeated benchmark of a plan's server matrix."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from servingbench.commands import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING_VALID,
    EXIT_OK,
    EXIT_STATUS_TEXT,
    Subparsers,
    fail,
    parser_options,
)

__all__ = ["add", "any_valid", "report_quietly"]

MODEL_PLANS_DIR = "plans"  # under --out: the plans `run --model` writes
DESCRIPTION = """\
Run a plan: start every server config pinned to the server cores, drive each with Locust on the other cores, measure
every config in every repetition, interleaved, and write a results bundle (results/<UTC time>/, results/latest)
with its HTML report. Without --plan: the built-in plan (5 stacks; the fast, heavy and sleep10 models)."""
EPILOG = """\
examples:
  servingbench run                                 the built-in plan
  servingbench run --quick                         a smoke run (one repetition: no verdicts)
  servingbench run --model models/churn.skops      the built-in matrix on your imported model
  servingbench run --plan examples/framework-tax.toml
  servingbench run --target http://10.0.0.5:8000   measure a server you started yourself

presets (the plan's own estimate on 2 cores; the progress line learns the real pace):
{presets}

{exit_status}"""


PRESET_TEXT = {
    "quick": "one repetition of short windows, the fast model only: a smoke run, it gives no verdicts",
    "default": "10 repetitions (the capacity curve in 6): verdicts with intervals",
    "rigorous": "20 repetitions (10 curves), c1/c8/c32, long windows",
}


def _presets_text() -> str:
    from servingbench.harness.plan import PlanError, estimate_seconds, load_plan
    from servingbench.harness.progress import format_seconds

    lines = []
    for preset, text in PRESET_TEXT.items():
        try:
            about = f"about {format_seconds(estimate_seconds(load_plan(None, preset)))}"
        except PlanError:
            about = "estimate unavailable"
        lines.append(f"  --{preset:<9} {text} ({about})" if preset != "default" else f"  (default)   {text} ({about})")
    return "\n".join(lines)


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    epilog = EPILOG.format(presets=_presets_text(), exit_status=EXIT_STATUS_TEXT)
    p = sub.add_parser(
        "run", help="benchmark the server matrix of a plan: bundle and report", **parser_options(DESCRIPTION, epilog)
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--plan", type=Path, default=None, help="a plan TOML file (default: the built-in plan)")
    source.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="PATH",
        help="run the built-in matrix on this model file (an imported .skops, or a pickle with --model-sha256)",
    )
    p.add_argument("--model-sha256", default=None, metavar="HEX", help="the sha256 a --model pickle file must have")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick", dest="preset", action="store_const", const="quick", help="smoke run: one repetition, no verdicts"
    )
    preset.add_argument(
        "--rigorous", dest="preset", action="store_const", const="rigorous", help="20 repetitions, long windows"
    )
    p.set_defaults(preset="default")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
    p.add_argument(
        "--target", action="append", default=[], metavar="URL", help="measure a running server instead (repeatable)"
    )
    p.add_argument(
        "--load-workers", type=int, default=None, help="Locust worker processes (default: one per load core)"
    )
    p.add_argument(
        "--remote-load-workers",
        type=int,
        default=0,
        metavar="N",
        help="Locust workers on other machines (servingbench load-worker) to wait for",
    )
    p.add_argument("--master-bind", default="127.0.0.1", help="Locust master address, with remote workers")
    p.add_argument("--master-port", type=int, default=None, help="Locust master port, with remote workers (5557)")
    p.add_argument("--allow-shared-cores", action="store_true", help="run on one core (recorded as unfair)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument(
        "--locust-html", action="store_true", help="also keep Locust's own HTML report of every run (about 1 MB each)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from servingbench.harness import BenchmarkInterrupted, HarnessError, RemoteLoad, run_benchmark

    console = Console(stderr=False)
    remote = RemoteLoad(args.remote_load_workers, args.master_bind, args.master_port)
    try:
        bundle = run_benchmark(
            plan_path=_plan_for(args),
            preset=args.preset,
            out_root=args.out,
            targets=args.target,
            load_workers=args.load_workers,
            console=console,
            allow_shared_cores=args.allow_shared_cores,
            remote=remote if remote.workers or remote.bind != "127.0.0.1" else None,
            locust_html=args.locust_html,
        )
    except HarnessError as err:
        return fail(str(err))
    except BenchmarkInterrupted as stop:
        print(f"servingbench: interrupted; partial results kept in {stop.bundle_dir}", file=sys.stderr)
        report_quietly(stop.bundle_dir)
        return EXIT_INTERRUPTED
    from servingbench.reports import BundleError, print_summary, render_report

    try:
        print_summary(bundle, console)
        if not args.no_report:
            print(f"report: {render_report(bundle)}")
    except BundleError as err:
        return fail(str(err))
    if not any_valid(bundle):
        print("servingbench: nothing valid was measured: every run was invalid or failed (see the bundle)")
        return EXIT_NOTHING_VALID
    return EXIT_OK


def any_valid(bundle: Path) -> bool:
    """Whether the bundle holds at least one valid run."""
    document = json.loads((bundle / "results.json").read_text(encoding="utf-8"))
    return any(run.get("valid") for run in document.get("runs", []))


def _plan_for(args: argparse.Namespace) -> Path | None:
    """The plan to run: ``--plan``, or for ``--model`` one written under ``--out``/plans (raises HarnessError)."""
    from servingbench.harness import HarnessError, PlanError
    from servingbench.harness.plan import write_model_plan

    if args.model is None:
        if args.model_sha256:
            raise HarnessError("--model-sha256 goes with --model")
        plan: Path | None = args.plan
        return plan
    if args.target:
        raise HarnessError("--model starts its own servers; it does not go with --target")
    try:
        path = write_model_plan(args.model, args.out / MODEL_PLANS_DIR, sha256=args.model_sha256)
    except PlanError as err:
        raise HarnessError(str(err)) from None
    print(f"servingbench: plan for {args.model}: {path}", flush=True)
    return path


def report_quietly(bundle: Path) -> None:
    """Render what an interrupted run measured; a partial bundle that cannot be rendered is not an error."""
    from servingbench.reports import BundleError, render_report

    try:
        print(f"report (incomplete run): {render_report(bundle)}", file=sys.stderr)
    except (BundleError, ValueError) as err:
        print(f"servingbench: no report for the partial run: {err}", file=sys.stderr)
