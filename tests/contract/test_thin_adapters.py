"""The adapters stay thin: no validation or model code of their own, and each fits on one screen.

Every adapter the registry names is checked. Idiomatic variants hold exactly the framework-native validation they
exist to measure (a pydantic model, the array handed to the model), never a model of their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import servingbench.servers
from servingbench.servers.registry import FRAMEWORKS

SERVERS = Path(servingbench.servers.__file__).parent
ADAPTER_FILES = {entry.app.partition(":")[0].rpartition(".")[2] + ".py": entry.role for entry in FRAMEWORKS.values()}
#: One screen of code. Counted without blank lines, comments and docstrings.
MAX_CODE_LINES = 80
#: Modules that would mean an adapter validates or predicts by itself.
FORBIDDEN_IMPORTS = ("pydantic", "numpy", "sklearn", "json", "skops", "joblib", "pickle")
#: What a variant may import of those: its framework's own validation and the array the model takes.
VARIANT_ALLOWED = ("pydantic", "numpy")


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def _code_lines(source: str, tree: ast.Module) -> int:
    docstrings = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }
    lines = source.splitlines()
    return sum(
        1
        for i, text in enumerate(lines, 1)
        if text.strip() and not text.strip().startswith("#") and i not in docstrings
    )


@pytest.mark.parametrize("name", ADAPTER_FILES)
def test_adapter_has_no_validation_or_model_code(name: str) -> None:
    tree = ast.parse((SERVERS / name).read_text())
    allowed = VARIANT_ALLOWED if ADAPTER_FILES[name] == "variant" else ()
    assert _imports(tree).isdisjoint(set(FORBIDDEN_IMPORTS) - set(allowed))


def test_every_framework_has_its_own_adapter_file() -> None:
    assert len(ADAPTER_FILES) == len(FRAMEWORKS)
    assert all((SERVERS / name).is_file() for name in ADAPTER_FILES)


@pytest.mark.parametrize("name", ADAPTER_FILES)
def test_adapter_fits_on_one_screen(name: str) -> None:
    source = (SERVERS / name).read_text()
    assert _code_lines(source, ast.parse(source)) <= MAX_CODE_LINES
