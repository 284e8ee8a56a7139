"""The measurement scripts the README and docs quote still run: they live outside `src/`, so only running them finds
an import of a renamed function (the DataFrame-cost script broke that way once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# slow: each test runs a script in a Python subprocess (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.parametrize("script", sorted(path.name for path in SCRIPTS.glob("*.py")))
def test_every_script_imports_and_shows_its_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_the_dataframe_cost_script_measures_both_paths() -> None:
    argv = [sys.executable, str(SCRIPTS / "dataframe_cost.py"), "--repetitions", "5", "--requests", "3"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("list path") and "interval" in line for line in lines), done.stdout
    assert any(line.startswith("difference per request") for line in lines), done.stdout
