"""The gate is a room of its own: the harness and the reports never import it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_neither_the_harness_nor_the_reports_import_the_gate() -> None:
    code = (
        "import sys, servingbench.harness, servingbench.harness.runner, servingbench.reports\n"
        "print(sorted(name for name in sys.modules if name.startswith('servingbench.gate')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
