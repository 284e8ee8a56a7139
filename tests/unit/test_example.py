"""The worked example (examples/own-model) runs with tiny settings and its model imports as documented."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from servingbench.shared_model.importer import import_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-model" / "train.py"
TINY_ROWS = "300"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_model_train", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("kind", "file", "named"), [("onehot", "churn", True), ("numeric-array", "churn-numeric-array", False)]
)
def test_example_trains_and_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, file: str, named: bool
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--model", kind, "--out", str(tmp_path), "--rows", TINY_ROWS])
    _example().main()
    model = tmp_path / f"{file}.joblib"
    sha256 = (tmp_path / f"{file}.joblib.sha256").read_text().split()[0]
    result = import_model(model, models_dir=tmp_path / "models", sha256=sha256, sample=tmp_path / "rows.csv")
    assert result.info.named is named
    assert result.info.sample_source == "file rows.csv"
