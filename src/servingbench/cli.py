"""The servingbench command line: the subcommands of servingbench.commands, put together."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import shtab

from servingbench import __version__
from servingbench.commands import (
    EXIT_INTERRUPTED,
    EXIT_STATUS_TEXT,
    CommandError,
    Formatter,
    Subparsers,
    capacity,
    fail,
    gate,
    load_worker,
    models,
    report,
    run,
    serve,
)

__all__ = ["build_parser", "main"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a command the way Ctrl-C does (a CI timeout, `kill`, `timeout`, a closed terminal)."""

DESCRIPTION = """\
servingbench: should you serve your scikit-learn model with FastAPI or with Flask, and under which server? It runs
one predict core behind thin adapters under production servers, drives them with Locust on other cores, repeats
and interleaves the runs, and writes one HTML report with intervals and verdicts. Needs Linux (CPU pinning); on
macOS, use the containers (docs/containers.md)."""
EPILOG = f"""\
examples:
  servingbench run                               the built-in plan: five stacks, three models
  servingbench run --quick                       a smoke run
  servingbench import-model model.joblib --sha256 HEX --sample rows.csv
  servingbench run --model models/model.skops    the matrix on your own model
  servingbench report results/latest             re-render a report
  servingbench check --base origin/main          the CI gate: this checkout against main, in one run
  servingbench <command> --help                  every option of a command, with its default and examples

environment:
  SERVINGBENCH_MODELS_DIR    where the bundled models are trained and imported models go (default ./models)
  SERVINGBENCH_CACHE_DIR     where check --base keeps the base commit's environment (default ~/.cache/servingbench)
  (the servers' own SERVINGBENCH_* settings are set by the harness: see docs/architecture.md)

{EXIT_STATUS_TEXT}"""

COMMANDS: list[Callable[[Subparsers[argparse.ArgumentParser]], None]] = [
    run.add,
    capacity.add,
    serve.add,
    models.add_train,
    models.add_import_model,
    report.add,
    gate.add,
    load_worker.add,
]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ``--version``, ``--print-completion SHELL`` and every subcommand."""
    parser = argparse.ArgumentParser(
        prog="servingbench", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter
    )
    parser.add_argument("--version", action="version", version=f"servingbench {__version__}")
    shtab.add_argument_to(parser, ["--print-completion"], help="print a shell completion script for SHELL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


class _Stop:
    """The stop signal received, if any: the first one raises ``KeyboardInterrupt`` where the program is, so every
    server and load process is stopped and what was measured is kept, as after Ctrl-C; later ones are ignored so
    that the clean-up is not cut short (SIGKILL still ends everything at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (documented in ``servingbench --help``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    stop = _Stop()
    try:
        with stop.installed():
            result: int = args.func(args)
    except CommandError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        result = EXIT_INTERRUPTED
        if stop.signum is None:
            print("servingbench: interrupted", file=sys.stderr)
    if stop.signum is not None and result == EXIT_INTERRUPTED:  # the command stopped cleanly on the signal
        print(f"servingbench: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    return result


if __name__ == "__main__":
    sys.exit(main())
