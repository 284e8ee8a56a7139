"""``servingbench import-model``: each format, the sha256 and import checks that come before unpickling, trusted
types, sample files, and the manifest an imported model carries."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import pytest
import skops.io as sio

from servingbench.cli import main
from servingbench.shared_model.artifacts import load_model_file, manifest_path
from servingbench.shared_model.importer import import_model
from servingbench.shared_model.types import ModelError
from tests.unit.byo_models import CITIES, Mkdir, custom_pipeline, frame, numeric_array_pipeline, onehot_pipeline

CUSTOM_TYPE = "tests.unit.byo_models.Doubler"
SAMPLE_ROWS = 40


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(obj: Any, path: Path) -> Path:
    if path.suffix == ".joblib":
        joblib.dump(obj, path, compress=3)
    elif path.suffix == ".pkl":
        path.write_bytes(pickle.dumps(obj))
    else:
        sio.dump(obj, path)
    return path


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".skops"])
def test_each_format_imports_to_a_skops_file_with_its_manifest(tmp_path: Path, suffix: str) -> None:
    source = _write(onehot_pipeline(), tmp_path / f"churn{suffix}")
    result = import_model(source, models_dir=tmp_path / "models", sha256=_sha(source), max_rows=SAMPLE_ROWS)
    assert result.path == tmp_path / "models" / "churn.skops"
    manifest = json.loads(manifest_path(result.path).read_text())
    assert manifest["format_version"] == 2
    assert manifest["imported_from"] == {"file": source.name, "sha256": _sha(source), "format": suffix[1:]}
    assert manifest["input"]["named"] is True
    assert manifest["output"] == {"method": "predict", "kind": "label", "classes": ["no", "yes"]}
    assert manifest["sample_source"] == "model" and len(manifest["sample"]) == SAMPLE_ROWS
    assert load_model_file(result.path).info.columns == result.info.columns


def test_a_wrong_sha256_is_refused_before_anything_is_unpickled(tmp_path: Path) -> None:
    source = _write({"model": onehot_pipeline(), "payload": Mkdir(tmp_path / "ran")}, tmp_path / "m.joblib")
    with pytest.raises(ModelError, match="does not match"):
        import_model(source, models_dir=tmp_path / "models", sha256="0" * 64)
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "models").exists()


def test_a_pickle_without_sha256_is_refused(tmp_path: Path) -> None:
    source = _write(onehot_pipeline(), tmp_path / "m.pkl")
    with pytest.raises(ModelError, match="--sha256"):
        import_model(source, models_dir=tmp_path / "models")


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
def test_a_payload_with_the_right_sha256_is_refused_by_inspection_and_never_runs(tmp_path: Path, suffix: str) -> None:
    source = _write({"model": onehot_pipeline(), "payload": Mkdir(tmp_path / "ran")}, tmp_path / f"m{suffix}")
    with pytest.raises(ModelError, match=r"posix\.mkdir"):
        import_model(source, models_dir=tmp_path / "models", sha256=_sha(source))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("suffix", [".joblib", ".skops"])
def test_an_unreviewed_type_needs_trust_and_is_listed(tmp_path: Path, suffix: str) -> None:
    source = _write(custom_pipeline(), tmp_path / f"custom{suffix}")
    with pytest.raises(ModelError, match=CUSTOM_TYPE):
        import_model(source, models_dir=tmp_path / "models", sha256=_sha(source))
    assert not (tmp_path / "models" / "custom.skops").exists()
    result = import_model(
        source, models_dir=tmp_path / "models", sha256=_sha(source), trust=[CUSTOM_TYPE], max_rows=SAMPLE_ROWS
    )
    manifest = json.loads(manifest_path(result.path).read_text())
    assert manifest["trusted_by_user"] == [CUSTOM_TYPE]
    assert CUSTOM_TYPE in manifest["trusted_types"]
    assert result.info.trusted_by_user == (CUSTOM_TYPE,)
    assert any(CUSTOM_TYPE in note for note in result.notes)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_sample_file_gives_real_rows_and_drops_those_the_model_refuses(tmp_path: Path, suffix: str) -> None:
    sample = frame(SAMPLE_ROWS, seed=3)
    sample.loc[0, "city"] = "Stavanger"  # an unseen city: the one-hot encoder errors on it
    path = tmp_path / f"rows{suffix}"
    sample.to_csv(path, index=False) if suffix == ".csv" else sample.to_parquet(path)
    source = _write(onehot_pipeline(), tmp_path / "m.skops")
    result = import_model(source, models_dir=tmp_path / "models", sample=path)
    assert result.info.sample_source == f"file {path.name}"
    assert len(result.info.sample) == SAMPLE_ROWS - 1
    assert {row["city"] for row in result.info.sample} <= set(CITIES)
    assert [c.kind for c in result.info.columns] == ["integer", "number", "category", "boolean"]
    assert any("1 rows dropped" in note for note in result.notes)


def test_a_model_fitted_on_an_array_keeps_the_list_contract(tmp_path: Path) -> None:
    source = _write(numeric_array_pipeline(), tmp_path / "plain.skops")
    info = import_model(source, models_dir=tmp_path / "models", max_rows=SAMPLE_ROWS).info
    assert not info.named and info.n_features == 2
    assert info.output is not None and info.output.kind == "value"
    assert all(isinstance(row, tuple) and len(row) == 2 for row in info.sample)


def test_predict_proba_output_and_a_bad_name(tmp_path: Path) -> None:
    source = _write(onehot_pipeline(), tmp_path / "m.skops")
    info = import_model(source, models_dir=tmp_path, output="predict_proba", name="churn-p", max_rows=5).info
    assert info.output is not None and info.output.class_names == ("no", "yes")
    with pytest.raises(ModelError, match="model name"):
        import_model(source, models_dir=tmp_path, name="../escape")


def test_cli_prints_the_imported_path_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write(onehot_pipeline(), tmp_path / "m.joblib")
    argv = ["import-model", str(source), "--sha256", _sha(source), "--models-dir", str(tmp_path / "models")]
    assert main([*argv, "--sample-rows", "5", "--output", "predict_proba"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(tmp_path / "models" / "m.skops")
    assert main(["import-model", str(source), "--sha256", "f" * 64, "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0]
