"""The ``servingbench`` subcommands, one module each: its parser (every option with its help and default, examples
in the epilog) and its handler. ``servingbench.cli`` puts them together."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_VALID",
    "EXIT_NO_VERDICT",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "EXIT_STATUS_TEXT",
    "CommandError",
    "Formatter",
    "Subparsers",
    "fail",
]

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_ERROR = 2
EXIT_NO_VERDICT = 3
EXIT_NOTHING_VALID = 4
EXIT_INTERRUPTED = 130
EXIT_STATUS_TEXT = """\
exit status:
  0    success (check: pass)
  1    check: a regression (significantly and materially worse)
  2    usage error: a bad option or value, a bad plan or model file, an unreadable bundle, too few cores
  3    check: no verdict (the reason says why: too few valid repetitions, another machine than the baseline's...)
  4    run, capacity: nothing valid was measured (every run invalid or failed; the bundle says why)
  130  interrupted (Ctrl-C): every process stopped, what was measured kept (complete: false)
  143  stopped by SIGTERM (129 by SIGHUP): the same clean stop as Ctrl-C
"""

Subparsers = argparse._SubParsersAction  # the type `add_subparsers` returns, for the modules' `add` functions


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def fail(message: str) -> int:
    """Print ``servingbench: error: message`` on stderr; return the usage-error status."""
    print(f"servingbench: error: {message}", file=sys.stderr)
    return EXIT_ERROR


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs as written (examples keep their lines); every option's default shown, unless it is
    None or False (then the help says what happens) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unstated = default is None or default is False or default is argparse.SUPPRESS or default in ((), [])
        if unstated or isinstance(action, argparse._StoreConstAction) or "default" in text or not action.option_strings:
            return text
        return super()._get_help_string(action)


def parser_options(description: str, epilog: str) -> dict[str, Any]:
    """The keyword arguments every subcommand's parser takes: its description, its examples, the formatter."""
    return {"description": description, "epilog": epilog, "formatter_class": Formatter}
