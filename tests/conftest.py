"""Suite-wide fixtures: a clean environment for every test, one trained models directory per session, and
``--busy``: the whole suite under a CPU-bound process pinned to every core, the way a shared CI machine may run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BURNER = """
import os, sys, time
os.sched_setaffinity(0, [int(sys.argv[1])])
owner, deadline = int(sys.argv[2]), time.monotonic() + 3 * 3600
while time.monotonic() < deadline:  # burn, checking once a second that the pytest that started it is still there
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        pass
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
"""
BURNERS_KEY = pytest.StashKey[list[int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--busy",
        action="store_true",
        default=False,
        help="run the suite with a CPU-bound process pinned to every core (as a busy CI machine would)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("busy", default=False):
        return
    # Started through a shell that exits at once, so a burner is not pytest's child: the tests that check that a
    # benchmark left no child process behind would otherwise find the burners. A burner stops by itself when this
    # pytest is gone (or after 3 hours), so a killed run leaves nothing burning.
    burners = []
    for cpu in sorted(os.sched_getaffinity(0)):
        argv = [sys.executable, "-c", BURNER, str(cpu), str(os.getpid())]
        started = subprocess.run(
            ["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *argv],
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
        burners.append(int(started.stdout.strip()))
    config.stash[BURNERS_KEY] = burners


def pytest_unconfigure(config: pytest.Config) -> None:
    for pid in config.stash.get(BURNERS_KEY, []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pytest_report_header(config: pytest.Config) -> str | None:
    burners = config.stash.get(BURNERS_KEY, [])
    return f"busy: {len(burners)} CPU-bound processes, one pinned to each core" if burners else None


@pytest.fixture(autouse=True)
def _reset_os_environ() -> Iterator[None]:
    """Undo any environment change a test makes (as Flask's own suite does)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with the default models trained once for the whole session."""
    from servingbench.shared_model.models import train_default_models

    path = tmp_path_factory.mktemp("models")
    train_default_models(path)
    return path
