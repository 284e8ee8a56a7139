"""``servingbench load-worker``: Locust workers on another machine that join a run's load session."""

from __future__ import annotations

import argparse

from servingbench.commands import Subparsers, parser_options

__all__ = ["add"]

DESCRIPTION = """\
Run Locust worker processes on this machine that join the load session of a servingbench run on another machine
(started with --remote-load-workers N and --master-bind ADDRESS), and serve its runs, one after another, until the
run ends. See docs/containers.md."""
EPILOG = """\
examples:
  servingbench load-worker --master 10.0.0.2                        one worker process
  servingbench load-worker --master bench-host --processes 4 --once four, for one run only

exit status: 0 the master ended the session, 2 usage error, 130 interrupted
"""


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from servingbench.harness import distributed

    p = sub.add_parser("load-worker", help=distributed.HELP, **parser_options(DESCRIPTION, EPILOG))
    distributed.add_arguments(p)
    p.set_defaults(func=distributed.run_from_args)
