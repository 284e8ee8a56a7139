"""The ``servingbench`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 2
MODEL_PLANS_DIR = "plans"  # under --out: the plans `run --model` writes


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _fail(message: str) -> int:
    print(f"servingbench: error: {message}", file=sys.stderr)
    return EXIT_ERROR


# -- serve ------------------------------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one adapter under a production server, in the foreground")
    from servingbench.servers.registry import FRAMEWORKS, SERVERS

    p.add_argument("framework", choices=tuple(FRAMEWORKS))
    p.add_argument("--server", choices=tuple(SERVERS))
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="gunicorn-gthread threads per worker (default 40)")
    p.add_argument("--route", default=None, help="route style where the framework offers one (FastAPI: def or async)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="fast", help="fast | heavy | PATH | synthetic:cpu_us=N | synthetic:sleep_ms=N")
    p.add_argument("--models-dir", type=Path, default=None, help="where default models live (default ./models)")
    p.add_argument("--blas-threads", type=int, default=1, help="BLAS/OpenMP threads per worker (default 1)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickle/joblib model (needs --pickle-sha256)")
    p.add_argument("--pickle-sha256", default=None, help="the sha256 a pickle/joblib model file must have")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from servingbench.servers.launch import ServerConfig, default_server, launch_command, server_versions
    from servingbench.shared_model import ModelError, PredictService, Settings, SettingsError

    server = args.server or default_server(args.framework)
    try:
        config = ServerConfig(args.framework, server, args.workers, args.threads, args.route)
        models_dir = str((args.models_dir or Settings().resolved_models_dir()).resolve())
        settings = Settings(
            model=args.model,
            models_dir=models_dir,
            blas_threads=args.blas_threads,
            route=config.route_style,
            allow_pickle=args.allow_pickle,
            pickle_sha256=args.pickle_sha256,
        )
        # Load (and verify) the model here first, so a bad model stops us before any server binds a port.
        core = PredictService.from_settings(settings)
    except (ValueError, ModelError, SettingsError) as err:
        return _fail(str(err))
    command = launch_command(config, host=args.host, port=args.port, model=args.model, settings=settings)
    versions = " ".join(f"{k}={v}" for k, v in server_versions().items())
    print(f"servingbench: serving {core.info.name} ({core.info.sha256[:12]}) with {config.label()}", flush=True)
    print(f"servingbench: versions: {versions}", flush=True)
    print(f"servingbench: exec: {command.shell()}", flush=True)
    # exec: the server's own master then owns the workers and stops every one on SIGINT/SIGTERM.
    os.execve(command.argv[0], command.argv, command.env)
    return EXIT_OK  # pragma: no cover - execve does not return


# -- train ------------------------------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train the default models (fast, heavy) into the models directory")
    p.add_argument("--models-dir", type=Path, default=None, help="default: $SERVINGBENCH_MODELS_DIR or ./models")
    p.add_argument("--force", action="store_true", help="retrain even if the files exist")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from servingbench.shared_model.models import default_models_dir, train_default_models

    for path in train_default_models(args.models_dir or default_models_dir(), force=args.force):
        print(path)
    return EXIT_OK


# -- import-model -----------------------------------------------------------------------------------------------
def _add_import_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from servingbench.shared_model.columns import OUTPUT_METHODS
    from servingbench.shared_model.samples import DEFAULT_SAMPLE_ROWS, MAX_SAMPLE_ROWS

    p = sub.add_parser(
        "import-model",
        help="import your model file (.joblib, .pkl, .skops) as a verified .skops with its manifest",
        description="Check, inspect and re-save a model file as .skops with its input schema, output and sample rows; "
        "the last line printed is the path of the imported file.",
    )
    p.add_argument("path", type=Path, help="the model file: .joblib, .pkl, .pickle or .skops")
    p.add_argument("--sha256", default=None, help="the file's sha256 (required for .joblib/.pkl: checked first)")
    p.add_argument("--sample", type=Path, default=None, help="CSV or Parquet file of real input rows for the load")
    p.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help=f"rows kept from --sample or drawn from the model (default {DEFAULT_SAMPLE_ROWS}, at most "
        f"{MAX_SAMPLE_ROWS})",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="allow a type outside scikit-learn, numpy and scipy, e.g. mypkg.features.Cleaner (repeatable)",
    )
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--output", choices=OUTPUT_METHODS, default="predict", help="what a request answers")
    p.add_argument("--models-dir", type=Path, default=None, help="default: $SERVINGBENCH_MODELS_DIR or ./models")
    p.set_defaults(func=_import_model)


def _import_model(args: argparse.Namespace) -> int:
    from servingbench.shared_model import ModelError
    from servingbench.shared_model.importer import import_model
    from servingbench.shared_model.models import default_models_dir
    from servingbench.shared_model.samples import MAX_SAMPLE_ROWS

    if not 1 <= args.sample_rows <= MAX_SAMPLE_ROWS:
        return _fail(f"--sample-rows must be 1..{MAX_SAMPLE_ROWS}, got {args.sample_rows}")
    try:
        result = import_model(
            args.path,
            models_dir=args.models_dir or default_models_dir(),
            sha256=args.sha256,
            sample=args.sample,
            trust=args.trust,
            name=args.name,
            output=args.output,
            max_rows=args.sample_rows,
        )
    except ModelError as err:
        return _fail(str(err))
    for note in result.notes:
        print(f"servingbench: {note}")
    print(result.path)
    return EXIT_OK


# -- run --------------------------------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="benchmark the server matrix of a plan and write a results bundle and report")
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
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick", help="smoke run (< 2 min)")
    preset.add_argument("--rigorous", dest="preset", action="store_const", const="rigorous", help="longer, tighter")
    p.set_defaults(preset="default")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results)")
    p.add_argument("--target", action="append", default=[], metavar="URL", help="measure a running server instead")
    p.add_argument("--load-workers", type=int, default=None, help="Locust worker processes (default: one a core)")
    p.add_argument(
        "--remote-load-workers",
        type=int,
        default=0,
        metavar="N",
        help="Locust workers on other machines (servingbench load-worker) to wait for (default 0)",
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
        plan_path = _plan_for(args)
        bundle = run_benchmark(
            plan_path=plan_path,
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
        return _fail(str(err))
    except BenchmarkInterrupted as stop:
        print(f"servingbench: interrupted; partial results kept in {stop.bundle_dir}", file=sys.stderr)
        _report_quietly(stop.bundle_dir)
        return 130
    from servingbench.reports import BundleError, print_summary, render_report

    try:
        print_summary(bundle, console)
        if not args.no_report:
            print(f"report: {render_report(bundle)}")
    except BundleError as err:
        return _fail(str(err))
    return EXIT_OK


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


def _report_quietly(bundle: Path) -> None:
    """Render what an interrupted run measured; a partial bundle that cannot be rendered is not an error."""
    from servingbench.reports import BundleError, render_report

    try:
        print(f"report (incomplete run): {render_report(bundle)}", file=sys.stderr)
    except (BundleError, ValueError) as err:
        print(f"servingbench: no report for the partial run: {err}", file=sys.stderr)


# -- report, compare ---------------------------------------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="(re)render DIR/index.html from a results bundle")
    p.add_argument("bundle", type=Path, nargs="?", default=Path("results/latest"), help="default: results/latest")
    p.set_defaults(func=_report)
    c = sub.add_parser("compare", help="compare two results bundles (B against A) into one HTML page")
    c.add_argument("baseline", type=Path)
    c.add_argument("current", type=Path)
    c.add_argument("--out", type=Path, default=None, help="default: CURRENT/compare.html")
    c.set_defaults(func=_compare)


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from servingbench.reports import BundleError, print_summary, render_report

    try:
        path = render_report(args.bundle)
        print_summary(args.bundle, Console())
        print(path)
    except BundleError as err:
        return _fail(str(err))
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from servingbench.reports import BundleError, compare_bundles

    try:
        print(compare_bundles(args.baseline, args.current, args.out or args.current))
    except BundleError as err:
        return _fail(str(err))
    return EXIT_OK


# -- load-worker, capacity --------------------------------------------------------------------------------------
def _add_load_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from servingbench.harness import distributed

    p = sub.add_parser("load-worker", help=distributed.HELP, description=distributed.HELP)
    distributed.add_arguments(p)
    p.set_defaults(func=distributed.run_from_args)


def _add_capacity(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from servingbench.servers.registry import FRAMEWORKS, SERVERS

    p = sub.add_parser(
        "capacity",
        help="p99 against offered open-loop rate for one server config, and its capacity at the SLO",
        description="Measure one server config's latency-vs-offered-rate curve (open loop, each request timed from "
        "its intended send time) and the capacity where it crosses the p99 SLO, with queueing theory beside it "
        "where it applies. The same runner and measure path as `servingbench run`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--framework", choices=tuple(FRAMEWORKS), default="flask", help="the framework")
    p.add_argument("--server", choices=tuple(SERVERS), default="gunicorn-sync", help="the server kind")
    p.add_argument("--route", default=None, help="route style, where the framework has one (FastAPI: def, async)")
    p.add_argument("--threads", type=int, default=None, help="threads per worker, for servers with a thread knob")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--model", default="synthetic:sleep_ms=10", help="fast | heavy | PATH | synthetic:...")
    p.add_argument("--endpoint", default="/predict", choices=("/predict",), help="the endpoint posted to")
    p.add_argument("--arrivals", nargs="+", choices=("poisson", "constant"), default=["poisson"], help="arrivals")
    p.add_argument("--slo-ms", type=float, default=50.0, help="the p99 target, ms")
    p.add_argument("--points", type=int, default=8, help="rates on the grid")
    p.add_argument("--repetitions", type=int, default=1, help="curves per arrival process (5+ for an interval)")
    p.add_argument("--step-requests", type=int, default=2000, help="requests per step's window")
    p.add_argument("--max-step-s", type=float, default=10.0, help="the longest a step's window runs, s")
    p.add_argument("--warmup-s", type=float, default=2.0, help="open-loop warm-up before each step's window, s")
    p.add_argument("--traffic-rps", type=float, default=0.0, help="the traffic you expect, req/s (0: none)")
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=(),
        help="no curve: run these fixed open-loop rates (checks the "
        "generator: offered vs achieved, late sends, send lag)",
    )
    p.add_argument("--seed", type=int, default=1, help="seeds the arrival schedules")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
    p.add_argument("--allow-shared-cores", action="store_true", help="run on one core (recorded as unfair)")
    p.set_defaults(func=_capacity)


def _capacity(args: argparse.Namespace) -> int:
    from rich.console import Console

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
    try:
        plan = capacity_plan(request)
        bundle = run_benchmark(
            plan_path=plan,
            preset="default",
            out_root=args.out,
            targets=[],
            load_workers=None,
            console=Console(),
            allow_shared_cores=args.allow_shared_cores,
        )
    except (HarnessError, PlanError) as err:
        return _fail(str(err))
    except BenchmarkInterrupted as stop:
        print(f"servingbench: interrupted; partial results kept in {stop.bundle_dir}", file=sys.stderr)
        return 130
    print(_curve_table(bundle))
    return EXIT_OK


def _curve_table(bundle: Path) -> str:
    """Every curve of the bundle: its steps (rate, p99, verdict) and the capacity read off it."""
    import json

    document = json.loads((bundle / "results.json").read_text(encoding="utf-8"))
    lines: list[str] = []
    for entry in document.get("capacity", []):
        theory = entry.get("theory_rps")
        beside = f"; {entry['theory']} {theory:.1f} req/s" if theory else ""
        lines.append(
            f"\n{entry['scenario']} ({entry['arrivals']}), rep {entry['repetition'] + 1}, SLO p99 <= "
            f"{entry['slo_p99_ms']:g} ms{beside}"
        )
        lines.append(f"{'rate/s':>9} {'p99 ms':>9}  verdict")
        for step in entry["steps"]:
            p99 = "-" if step["p99_ms"] is None else f"{step['p99_ms']:.1f}"
            verdict = "meets the SLO" if step["ok"] else f"fails: {step['reason']}"
            lines.append(f"{step['rate']:9.1f} {p99:>9}  {verdict}")
        found = entry.get("capacity_rps")
        if found is not None:
            gap = f" ({found / theory - 1:+.1%} against theory)" if theory else ""
            lines.append(f"capacity {found:.1f} req/s{gap}")
        else:
            lines.append(
                f"capacity: {entry.get('censored') or 'none'} {entry.get('bound_rps') or ''} ({entry['stop_reason']})"
            )
    lines.append(f"\nresults: {bundle}")
    return "\n".join(lines)


# -- check, calibrate ------------------------------------------------------------------------------------------
CHECK_DESCRIPTION = """\
The CI performance gate. --base REF: build REF into its own environment on this machine, run ONE benchmark of the
CI plan serving base and head side by side (interleaved repetition by repetition), and judge head against base with
paired statistics. --baseline DIR [CURRENT]: judge CURRENT (default: a run made now) against a committed baseline,
only on the machine that made it. --bundle DIR: judge an A/B run already made. Writes check.md, check.json and
check.html into OUT/check/. See docs/bench-ci.md."""
_FROM_ENV = Path("$GITHUB_STEP_SUMMARY")  # what --summary without FILE stands for


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from servingbench.gate.command import EXIT_STATUS_HELP

    p = sub.add_parser(
        "check",
        help="CI gate: base vs head in one run (--base REF) or against a same-machine baseline; exit 0/1/3",
        description=CHECK_DESCRIPTION,
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--base", metavar="REF", help="the commit to compare with (e.g. origin/main, a sha)")
    mode.add_argument(
        "--baseline", type=Path, metavar="DIR", help="a committed baseline (noise.json), e.g. baselines/ci"
    )
    mode.add_argument("--bundle", type=Path, metavar="DIR", help="judge an A/B results bundle already measured")
    p.add_argument("current", type=Path, nargs="?", help="with --baseline: a finished run (default: run the plan now)")
    p.add_argument("--plan", type=Path, default=None, help="default: the built-in CI plan (harness/ci_plan.toml)")
    p.add_argument("--out", type=Path, default=Path("results/ci"), help="results root; outputs in OUT/check/")
    p.add_argument(
        "--noise", type=Path, default=None, help="calibration for thresholds (default: baselines/ci/noise.json)"
    )
    p.add_argument("--cache", type=Path, default=None, help="base environments (default: ~/.cache/servingbench)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout instead of the table")
    p.add_argument(
        "--summary",
        nargs="?",
        type=Path,
        const=_FROM_ENV,
        default=None,
        metavar="FILE",
        help="append the Markdown to FILE (no FILE: to $GITHUB_STEP_SUMMARY)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the run's HTML report")
    p.set_defaults(func=_check)
    c = sub.add_parser(
        "calibrate",
        help="A/A: run the plan N >= 5 times, keep the run-to-run noise as the baseline (noise.json)",
        epilog="exit status: 0 baseline written, 2 usage error, 3 the runs gave no baseline (the reason says why)",
    )
    c.add_argument("--plan", type=Path, default=None, help="default: the built-in CI plan (harness/ci_plan.toml)")
    c.add_argument("--runs", type=int, default=5, help="A/A runs (default 5, at least 5)")
    c.add_argument("--out", type=Path, default=Path("results/calibrate"), help="where the A/A bundles go")
    c.add_argument("--baseline", type=Path, default=Path("baselines/ci"), help="where noise.json is written")
    c.add_argument(
        "--from",
        dest="from_bundles",
        type=Path,
        nargs="+",
        default=(),
        metavar="BUNDLE",
        help="build the baseline from finished runs instead of running",
    )
    c.set_defaults(func=_calibrate)


def _check(args: argparse.Namespace) -> int:
    from servingbench.gate import CheckRequest
    from servingbench.gate.command import run_check

    if args.current is not None and args.baseline is None:
        raise CLIError("CURRENT applies to --baseline only")
    request = CheckRequest(
        base=args.base,
        baseline=args.baseline,
        bundle=args.bundle,
        current=args.current,
        plan=args.plan,
        out=args.out,
        noise=args.noise,
        cache=args.cache,
        report=not args.no_report,
    )
    from_env = args.summary == _FROM_ENV
    return run_check(request, as_json=args.json, summary=None if from_env else args.summary, summary_from_env=from_env)


def _calibrate(args: argparse.Namespace) -> int:
    from servingbench.gate.calibrate import run_calibrate

    return run_calibrate(
        plan_path=args.plan,
        runs=args.runs,
        out_root=args.out,
        baseline_dir=args.baseline,
        from_bundles=args.from_bundles,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servingbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_run,
    _add_serve,
    _add_train,
    _add_import_model,
    _add_report,
    _add_capacity,
    _add_load_worker,
    _add_check,
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except CLIError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("servingbench: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
