"""Safe model files: round trip, verification failures, untrusted types, and pickles that must never run."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import pytest
import sklearn
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from servingbench.shared_model.artifacts import file_sha256, load_model_file, manifest_path, save_model
from servingbench.shared_model.types import Model, ModelError

N_FEATURES = 3
FEATURE_NAMES = ("a", "b", "c")
TREE_TYPE = "sklearn.tree._tree.Tree"


def _data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, N_FEATURES))
    return x, x @ np.array([1.0, -2.0, 0.5]) + 3.0


def _save(estimator: Any, path: Path) -> Path:
    x, _ = _data()
    return save_model(estimator, path, name="tiny", version="7", feature_names=FEATURE_NAMES, sample_rows=x[:2])


@pytest.fixture
def ridge_path(tmp_path: Path) -> Path:
    x, y = _data()
    return _save(Ridge().fit(x, y), tmp_path / "tiny.skops")


@pytest.fixture
def tree_path(tmp_path: Path) -> Path:
    x, y = _data()
    return _save(DecisionTreeRegressor(max_depth=2, random_state=0).fit(x, y), tmp_path / "tree.skops")


def _manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest_path(path).read_text())
    return data


def _edit_manifest(path: Path, **changes: object) -> None:
    manifest_path(path).write_text(json.dumps({**_manifest(path), **changes}))


class _Mkdir:
    """Unpickling this creates a directory: stands in for any code a malicious pickle would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


class _Custom(BaseEstimator):  # type: ignore[misc]
    def predict(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return rows[:, 0]


def test_manifest_sits_beside_the_model_file(tmp_path: Path) -> None:
    assert manifest_path(tmp_path / "fast.skops") == tmp_path / "fast.skops.manifest.json"


def test_round_trip_keeps_predictions_and_metadata(ridge_path: Path) -> None:
    x, y = _data()
    model = load_model_file(ridge_path)
    assert isinstance(model, Model)
    info = model.info
    assert (info.name, info.version, info.kind) == ("tiny", "7", "sklearn")
    assert info.feature_names == FEATURE_NAMES
    assert info.n_features == N_FEATURES
    assert info.sha256 == file_sha256(ridge_path)
    assert info.sklearn_version == sklearn.__version__
    assert info.sample == tuple(tuple(row) for row in x[:2].tolist())
    predictions = model.predict(x)
    assert predictions == Ridge().fit(x, y).predict(x).tolist()
    assert all(type(p) is float for p in predictions)


def test_manifest_records_hash_versions_and_reviewed_types(ridge_path: Path, tree_path: Path) -> None:
    manifest = _manifest(ridge_path)
    assert manifest["sha256"] == file_sha256(ridge_path)
    assert manifest["sklearn_version"] == sklearn.__version__
    assert manifest["n_features"] == N_FEATURES
    assert manifest["trusted_types"] == []
    assert _manifest(tree_path)["trusted_types"] == [TREE_TYPE]


@pytest.mark.parametrize(("labels", "expected_type"), [(["no", "yes"], str), ([0, 1], int)])
def test_classifier_predictions_are_json_native(tmp_path: Path, labels: list[Any], expected_type: type) -> None:
    x, y = _data()
    target = np.where(y > np.median(y), labels[1], labels[0])
    model = load_model_file(_save(LogisticRegression().fit(x, target), tmp_path / "clf.skops"))
    predictions = model.predict(x[:4])
    assert len(predictions) == 4
    assert all(type(p) is expected_type for p in predictions)


def test_wrong_shape_is_a_model_error(ridge_path: Path) -> None:
    with pytest.raises(ModelError, match="3 columns"):
        load_model_file(ridge_path).predict(np.zeros((1, 2)))


def test_tampered_file_is_refused(ridge_path: Path) -> None:
    data = bytearray(ridge_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ridge_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        load_model_file(ridge_path)


def test_wrong_hash_in_manifest_is_refused(ridge_path: Path) -> None:
    _edit_manifest(ridge_path, sha256="0" * 64)
    with pytest.raises(ModelError, match=r"tiny\.skops: sha256 .* does not match"):
        load_model_file(ridge_path)


def test_sklearn_version_mismatch_says_retrain(ridge_path: Path) -> None:
    _edit_manifest(ridge_path, sklearn_version="0.0.1")
    expected = (
        f"model was saved with scikit-learn 0.0.1, this is {sklearn.__version__}; retrain with `servingbench train`"
    )
    with pytest.raises(ModelError) as err:
        load_model_file(ridge_path)
    assert str(err.value) == f"{ridge_path}: {expected}"


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file not found: .*absent\.skops"):
        load_model_file(tmp_path / "absent.skops")


def test_missing_manifest(ridge_path: Path) -> None:
    manifest_path(ridge_path).unlink()
    with pytest.raises(ModelError, match=r"model manifest not found: .*tiny\.skops\.manifest\.json"):
        load_model_file(ridge_path)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"format": "other"}', json.dumps({"format": "servingbench-model-manifest"})],
)
def test_corrupt_manifest(ridge_path: Path, content: str) -> None:
    manifest_path(ridge_path).write_text(content)
    with pytest.raises(ModelError, match=r"corrupt model manifest .*manifest\.json") as err:
        load_model_file(ridge_path)
    assert "\n" not in str(err.value)


def test_manifest_with_mismatched_feature_count_is_corrupt(ridge_path: Path) -> None:
    _edit_manifest(ridge_path, n_features=4)
    with pytest.raises(ModelError, match="corrupt model manifest"):
        load_model_file(ridge_path)


def test_corrupt_file_with_matching_hash(ridge_path: Path) -> None:
    ridge_path.write_bytes(b"not a zip archive")
    _edit_manifest(ridge_path, sha256=file_sha256(ridge_path))
    with pytest.raises(ModelError, match=r"corrupt model file .*tiny\.skops"):
        load_model_file(ridge_path)


def test_type_not_in_manifest_is_refused(tree_path: Path) -> None:
    _edit_manifest(tree_path, trusted_types=[])
    with pytest.raises(ModelError, match=rf"refused types not trusted by the manifest: \['{TREE_TYPE}'\]") as err:
        load_model_file(tree_path)
    assert "\n" not in str(err.value)


def test_tree_type_listed_in_manifest_loads(tree_path: Path) -> None:
    x, _ = _data()
    assert len(load_model_file(tree_path).predict(x)) == len(x)


def test_manifest_trusting_an_unreviewed_module_is_refused(ridge_path: Path) -> None:
    _edit_manifest(ridge_path, trusted_types=["builtins.eval"])
    with pytest.raises(ModelError, match="trusted_types outside"):
        load_model_file(ridge_path)


def test_save_refuses_types_outside_reviewed_modules(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="refusing to save types"):
        _save(_Custom(), tmp_path / "custom.skops")
    assert not (tmp_path / "custom.skops").exists()


@pytest.mark.parametrize("sample", [np.zeros((0, 3)), np.zeros((2, 4)), np.zeros((6, 3)), np.full((1, 3), np.nan)])
def test_save_rejects_bad_sample_rows(tmp_path: Path, sample: npt.NDArray[np.float64]) -> None:
    x, y = _data()
    with pytest.raises(ModelError, match="sample_rows"):
        save_model(
            Ridge().fit(x, y), tmp_path / "m.skops", name="m", version="1", feature_names="abc", sample_rows=sample
        )


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unsupported model file"):
        load_model_file(tmp_path / "model.onnx")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture(params=[".pkl", ".pickle", ".joblib"])
def evil_path(request: pytest.FixtureRequest, tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / f"evil{request.param}"
    path.write_bytes(pickle.dumps(_Mkdir(marker)))
    return path


@pytest.mark.parametrize(
    ("allow_pickle", "sha"),
    [(False, None), (True, None), (True, ""), (True, "0" * 64), (False, "right")],
    ids=["default", "opt-in-no-sha", "opt-in-empty-sha", "opt-in-wrong-sha", "sha-without-opt-in"],
)
def test_malicious_pickle_never_runs(evil_path: Path, marker: Path, allow_pickle: bool, sha: str | None) -> None:
    pickle_sha256 = file_sha256(evil_path) if sha == "right" else sha
    with pytest.raises(ModelError, match="refusing to"):
        load_model_file(evil_path, allow_pickle=allow_pickle, pickle_sha256=pickle_sha256)
    assert not marker.exists()


def _benign_pickle(path: Path) -> Path:
    x, y = _data()
    estimator = Ridge().fit(x, y)
    if path.suffix == ".joblib":
        joblib.dump(estimator, path)
    else:
        path.write_bytes(pickle.dumps(estimator))
    return path


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_benign_pickle_loads_with_opt_in_and_sha(tmp_path: Path, suffix: str) -> None:
    x, y = _data()
    path = _benign_pickle(tmp_path / f"ok{suffix}")
    model = load_model_file(path, allow_pickle=True, pickle_sha256=file_sha256(path).upper())
    assert (model.info.kind, model.info.n_features, model.info.name) == ("pickle", N_FEATURES, "ok")
    assert model.predict(x) == Ridge().fit(x, y).predict(x).tolist()


def test_pickle_from_other_sklearn_version_says_retrain(tmp_path: Path) -> None:
    path = _benign_pickle(tmp_path / "old.pkl")
    version = sklearn.__version__
    fake = ("1" if version[0] == "0" else "0") + version[1:]
    path.write_bytes(path.read_bytes().replace(version.encode(), fake.encode()))
    with pytest.raises(ModelError, match=rf"saved with scikit-learn {fake}, this is {version}; retrain"):
        load_model_file(path, allow_pickle=True, pickle_sha256=file_sha256(path))
