"""Suite-wide fixtures: a clean environment for every test, one trained models directory per session, and
``--busy``: the whole suite under a CPU-bound process pinned to every core, the way a shared CI machine may run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BURNER = "while True:\n    pass\n"
BURNERS_KEY = pytest.StashKey[list[subprocess.Popen[bytes]]]()


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
    burners = []
    for cpu in sorted(os.sched_getaffinity(0)):
        burner = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.sched_setaffinity(0, [{cpu}])\n{BURNER}"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        burners.append(burner)
    config.stash[BURNERS_KEY] = burners


def pytest_unconfigure(config: pytest.Config) -> None:
    for burner in config.stash.get(BURNERS_KEY, []):
        burner.kill()
        burner.wait()


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
