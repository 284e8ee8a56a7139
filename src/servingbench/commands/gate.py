"""``servingbench check`` (the CI gate) and ``servingbench calibrate`` (its run-to-run noise)."""

from __future__ import annotations

import argparse
from pathlib import Path

from servingbench.commands import CommandError, Subparsers, parser_options

__all__ = ["add"]

CHECK_EPILOG = """\
examples:
  servingbench check --base origin/main                  the head against main's merge base, interleaved in one run
  servingbench check --base HEAD                         an A/A check: must pass
  servingbench check --base "$BASE_SHA" --summary        in a GitHub Actions job: the verdict in the job summary
  servingbench check --baseline baselines/ci             against a committed baseline (the same machine only), 3 runs
  servingbench check --baseline baselines/ci results/ci/2026*/   the same, judging runs already made
  servingbench check --bundle results/ci/latest --json   judge a run already made, as JSON
"""
CALIBRATE_DESCRIPTION = """\
A/A calibration: run the CI plan N times (N >= 5) on this machine, unchanged, and keep what moves between whole runs
(each run's median per figure; the mean and spread of their logs; a prediction interval for a new run) as the
committed baseline's noise.json. The same-machine baseline check and the material threshold of the A/B check read
it. Only meaningful on the machine that will run the checks."""
CALIBRATE_EPILOG = """\
examples:
  servingbench calibrate --runs 20
  servingbench calibrate --from results/calibrate/*/    from runs already made

exit status: 0 baseline written, 2 usage error, 3 the runs gave no baseline (the reason says why)
"""
CHECK_DESCRIPTION = """\
The CI performance gate. --base REF: build REF into its own environment on this machine, run ONE benchmark of the
CI plan serving base and head side by side (interleaved repetition by repetition), and judge head against base with
paired statistics. --baseline DIR [CURRENT ...]: judge CURRENT (default: --runs runs made now) by their mean against
a committed baseline, only on the machine that made it. --bundle DIR: judge an A/B run already made. Writes
check.md, check.json and check.html into OUT/check/. See docs/bench-ci.md."""
_FROM_ENV = Path("$GITHUB_STEP_SUMMARY")  # what --summary without FILE stands for


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from servingbench.gate.baseline import DEFAULT_RUNS as BASELINE_RUNS
    from servingbench.gate.calibrate import DEFAULT_RUNS as CALIBRATION_RUNS
    from servingbench.gate.command import EXIT_STATUS_HELP

    p = sub.add_parser(
        "check",
        help="CI gate: base vs head in one run (--base REF) or against a same-machine baseline; exit 0/1/3",
        **parser_options(CHECK_DESCRIPTION, CHECK_EPILOG + "\n" + EXIT_STATUS_HELP),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--base", metavar="REF", help="the commit to compare with (e.g. origin/main, a sha)")
    mode.add_argument(
        "--baseline", type=Path, metavar="DIR", help="a committed baseline (noise.json), e.g. baselines/ci"
    )
    mode.add_argument("--bundle", type=Path, metavar="DIR", help="judge an A/B results bundle already measured")
    p.add_argument(
        "current",
        type=Path,
        nargs="*",
        help="with --baseline: finished runs, judged by their mean (default: --runs runs of the plan made now)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"with --baseline: runs of the plan made now (default {BASELINE_RUNS}; the mean of several "
        "is judged, against an interval sqrt(runs) narrower)",
    )
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
        **parser_options(CALIBRATE_DESCRIPTION, CALIBRATE_EPILOG),
    )
    c.add_argument("--plan", type=Path, default=None, help="default: the built-in CI plan (harness/ci_plan.toml)")
    c.add_argument(
        "--runs", type=int, default=CALIBRATION_RUNS, help=f"A/A runs (at least 5; default {CALIBRATION_RUNS})"
    )
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

    if (args.current or args.runs is not None) and args.baseline is None:
        raise CommandError("CURRENT and --runs apply to --baseline only")
    if args.current and args.runs is not None:
        raise CommandError("give finished runs (CURRENT) or --runs to make them now, not both")
    if args.runs is not None and args.runs < 1:
        raise CommandError(f"--runs must be at least 1, got {args.runs}")
    request = CheckRequest(
        base=args.base,
        baseline=args.baseline,
        bundle=args.bundle,
        current=tuple(args.current),
        runs=CheckRequest.runs if args.runs is None else args.runs,
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
