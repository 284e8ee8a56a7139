"""The ``servingbench check`` command around :func:`servingbench.gate.check.check`: print, write, exit status."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console

from servingbench.files import dumps_finite
from servingbench.harness import BenchmarkInterrupted

from .check import CheckRequest, GateUsageError, check
from .render import markdown, terminal_table, to_json, write_outputs
from .result import EXIT_INTERRUPTED, EXIT_USAGE, CheckResult

__all__ = ["CHECK_SUBDIR", "EXIT_STATUS_HELP", "STEP_SUMMARY_VAR", "run_check"]

CHECK_SUBDIR = "check"  # the check's outputs go to <out>/check/
STEP_SUMMARY_VAR = "GITHUB_STEP_SUMMARY"
PLAIN_WIDTH = 200  # characters per line in a CI log: rich would squeeze the table into 80 columns
EXIT_STATUS_HELP = """\
exit status:
  0    pass: no figure is both significantly and materially worse
  1    regression: at least one figure is significantly and materially worse
  2    usage error: bad arguments, an unknown ref, an unreadable plan or noise file
  3    no verdict: the check ran but cannot judge (too few valid repetitions, a run on another machine than the
       baseline's, another plan, an interrupted run, a base environment that would not build); the reason says which
  130  interrupted (Ctrl-C): every process stopped, the partial run kept
"""


def _console(file: TextIO) -> Console:
    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=PLAIN_WIDTH)


def _summary_path(summary: Path | None, from_env: bool, err: TextIO) -> Path | None:
    if not from_env:
        return summary
    value = os.environ.get(STEP_SUMMARY_VAR)
    if not value:
        print(f"servingbench check: ${STEP_SUMMARY_VAR} is not set: no job summary appended", file=err)
        return None
    return Path(value)


def _print(result: CheckResult, out: Console, paths: dict[str, Path]) -> None:
    if result.rows:
        out.print(terminal_table(result))
    for note in result.notes:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"servingbench check: {result.reason}", highlight=False, markup=False, soft_wrap=True)
    for path in paths.values():
        out.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)


def run_check(
    request: CheckRequest,
    *,
    as_json: bool = False,
    summary: Path | None = None,
    summary_from_env: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the check, write ``check.md``, ``check.json`` and ``check.html`` into ``<out>/check/``, print the table
    (or, with ``as_json``, the JSON document) and return the exit status (see :data:`EXIT_STATUS_HELP`).

    ``summary`` (or ``$GITHUB_STEP_SUMMARY`` with ``summary_from_env``) gets the Markdown appended.
    """
    out_file, err = stdout or sys.stdout, stderr or sys.stderr
    progress = _console(err)
    try:
        result = check(request, progress)
    except GateUsageError as exc:
        print(f"servingbench check: error: {exc}", file=err)
        return EXIT_USAGE
    except BenchmarkInterrupted as stop:
        print(f"servingbench check: interrupted; the partial run is in {stop.bundle_dir}", file=err)
        return EXIT_INTERRUPTED
    paths = write_outputs(result, request.out / CHECK_SUBDIR)
    target = _summary_path(summary, summary_from_env, err)
    if target is not None:
        with target.open("a", encoding="utf-8") as handle:
            handle.write(markdown(result))
    if as_json:
        out_file.write(dumps_finite(to_json(result)))
        out_file.flush()
    else:
        _print(result, _console(out_file), paths)
    return result.exit_code
