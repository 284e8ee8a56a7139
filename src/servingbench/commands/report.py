"""``servingbench report`` (re-render a bundle's report) and ``servingbench compare`` (one bundle against another)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from servingbench.commands import EXIT_OK, EXIT_STATUS_TEXT, Subparsers, fail, parser_options

__all__ = ["add"]

REPORT_DESCRIPTION = """\
Re-render a results bundle's HTML report (DIR/index.html) and its aggregates (aggregates.json, aggregates.csv) from
the bundle alone, and print the summary tables. Nothing is measured."""
REPORT_EPILOG = f"""\
examples:
  servingbench report                         results/latest
  servingbench report results/20261202T155104Z

{EXIT_STATUS_TEXT}"""
COMPARE_DESCRIPTION = """\
Compare two results bundles, CURRENT against BASELINE, metric by metric (the ratio of geometric means with a Welch
interval on log values: two bundles are not paired), into one HTML page; warns when the machines differ. A figure
from another machine or another time of day is not a like-for-like comparison: for a change to the code, prefer the
interleaved servingbench check --base."""
COMPARE_EPILOG = f"""\
examples:
  servingbench compare results/old results/new
  servingbench compare results/old results/new --json > comparison.json

{EXIT_STATUS_TEXT}"""


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="(re)render a bundle's HTML report and aggregates; print its summary",
        **parser_options(REPORT_DESCRIPTION, REPORT_EPILOG),
    )
    p.add_argument("bundle", type=Path, nargs="?", default=Path("results/latest"), help="the bundle directory")
    p.set_defaults(func=_report)
    c = sub.add_parser(
        "compare",
        help="compare two results bundles (CURRENT against BASELINE) into one HTML page",
        **parser_options(COMPARE_DESCRIPTION, COMPARE_EPILOG),
    )
    c.add_argument("baseline", type=Path, help="the bundle compared against")
    c.add_argument("current", type=Path, help="the bundle compared")
    c.add_argument("--out", type=Path, default=None, help="the HTML file or its directory (default: CURRENT)")
    c.add_argument("--json", action="store_true", help="also print every comparison as JSON on stdout")
    c.set_defaults(func=_compare)


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from servingbench.reports import BundleError, print_summary, render_report

    try:
        path = render_report(args.bundle)
        print_summary(args.bundle, Console())
        print(path)
    except BundleError as err:
        return fail(str(err))
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from servingbench.files import dumps_finite
    from servingbench.reports import BundleError, compare_bundles
    from servingbench.reports.compare import compare_metrics

    try:
        path = compare_bundles(args.baseline, args.current, args.out or args.current)
        if args.json:
            rows = [dataclasses.asdict(item) for item in compare_metrics(args.baseline, args.current)]
            sys.stdout.write(dumps_finite({"baseline": str(args.baseline), "current": str(args.current), "rows": rows}))
            return EXIT_OK
    except BundleError as err:
        return fail(str(err))
    print(path)
    return EXIT_OK
