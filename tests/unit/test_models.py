"""The model catalogue: synthetic specs, spec resolution, default training, native threads, no web imports."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import Ridge

from servingbench.shared_model.artifacts import file_sha256, manifest_path, save_model
from servingbench.shared_model.models import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_NAMES,
    MODELS_DIR_ENV,
    default_models_dir,
    parse_synthetic,
    resolve_model,
    train_default_models,
)
from servingbench.shared_model.types import Model, ModelError

N_FEATURES = 10  # scikit-learn's diabetes data set
WEB_FRAMEWORKS = ("fastapi", "flask", "starlette", "werkzeug", "locust", "uvicorn", "gunicorn")


def _run_python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_default_model_is_one_of_the_defaults() -> None:
    assert DEFAULT_MODEL in DEFAULT_MODEL_NAMES


def test_models_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_models_dir() == tmp_path / "elsewhere"


def test_models_dir_defaults_to_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == tmp_path / "models"


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:cpu_us=0",
        "synthetic:cpu_us=50",
        "synthetic:cpu_us=2.5",
        "synthetic:sleep_ms=0",
        "synthetic:sleep_ms=1",
    ],
)
def test_synthetic_specs_parse(spec: str, tmp_path: Path) -> None:
    model = resolve_model(spec, models_dir=tmp_path)
    assert isinstance(model, Model)
    info = model.info
    assert (info.name, info.kind, info.n_features) == (spec, "synthetic", N_FEATURES)
    assert info.sha256 == hashlib.sha256(spec.encode()).hexdigest()
    assert info.sklearn_version == sklearn.__version__
    assert len(info.feature_names) == N_FEATURES
    assert info.sample and all(len(row) == N_FEATURES for row in info.sample)
    assert not list(tmp_path.iterdir()), "a synthetic model must not train or write anything"


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:cpu_us=-1",
        "synthetic:foo=1",
        "synthetic:cpu_us=abc",
        "synthetic:cpu_us=",
        "synthetic:",
        "synthetic:cpu_us=1e3",
        "synthetic:cpu_us=nan",
        "synthetic:cpu_us=inf",
        "synthetic:cpu_us=1,sleep_ms=1",
        "synthetic:cpu_us=10000001",
        "synthetic:sleep_ms=10001",
        "synthetic:CPU_US=1",
    ],
)
def test_bad_synthetic_specs_raise(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="bad synthetic model spec") as err:
        resolve_model(spec, models_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_parse_synthetic_requires_the_prefix() -> None:
    with pytest.raises(ModelError):
        parse_synthetic("cpu_us=1")


@pytest.mark.parametrize("spec", ["synthetic:cpu_us=20", "synthetic:sleep_ms=1"])
def test_synthetic_output_is_deterministic_row_sums(spec: str) -> None:
    model = parse_synthetic(spec)
    rows = np.arange(3 * N_FEATURES, dtype=np.float64).reshape(3, N_FEATURES)
    first = model.predict(rows)
    assert first == model.predict(rows) == rows.sum(axis=1).tolist()
    assert all(type(value) is float for value in first)


def test_synthetic_rejects_wrong_shape() -> None:
    with pytest.raises(ModelError, match="10 columns"):
        parse_synthetic("synthetic:cpu_us=1").predict(np.zeros((1, 3)))


@pytest.mark.parametrize("spec", ["", "  ", "medium", "no/such/model"])
def test_unknown_spec_raises(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model spec"):
        resolve_model(spec, models_dir=tmp_path)


def test_missing_default_without_training_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="run `servingbench train`"):
        resolve_model("heavy", models_dir=tmp_path, train_if_missing=False)
    assert not (tmp_path / "heavy.skops").exists()


def test_resolve_skops_path(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(8, 2))
    path = save_model(
        Ridge().fit(x, x[:, 0]), tmp_path / "m.skops", name="m", version="1", feature_names="pq", sample_rows=x[:1]
    )
    model = resolve_model(str(path), models_dir=tmp_path / "unused")
    assert model.info.name == "m"
    assert len(model.predict(x)) == len(x)


def test_resolve_pickle_only_with_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    x = np.random.default_rng(0).normal(size=(8, 2))
    path.write_bytes(pickle.dumps(Ridge().fit(x, x[:, 0])))
    with pytest.raises(ModelError, match="refusing to load pickle"):
        resolve_model(str(path), models_dir=tmp_path)
    model = resolve_model(str(path), models_dir=tmp_path, allow_pickle=True, pickle_sha256=file_sha256(path))
    assert model.info.kind == "pickle"


_TRAIN_AND_REPORT = """
import json, sys
from pathlib import Path
from servingbench.shared_model.artifacts import manifest_path
from servingbench.shared_model.models import train_default_models
paths = train_default_models(Path(sys.argv[1]))
print(json.dumps([json.loads(manifest_path(p).read_text())["sha256"] for p in paths]))
"""


@pytest.mark.slow
def test_default_models_train_once_under_concurrency_and_predict(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    cmd = [sys.executable, "-c", _TRAIN_AND_REPORT, str(models_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    # skops files are not byte-identical across dumps, so equal hashes mean the second process did not retrain.
    first, second = (json.loads(out) for out, _ in outputs)
    assert first == second

    paths = train_default_models(models_dir)
    assert [p.name for p in paths] == ["fast.skops", "heavy.skops"]
    assert [json.loads(manifest_path(p).read_text())["sha256"] for p in paths] == first
    for name in DEFAULT_MODEL_NAMES:
        model = resolve_model(name, models_dir=models_dir, train_if_missing=False)
        assert (model.info.name, model.info.kind, model.info.n_features) == (name, "sklearn", N_FEATURES)
        prediction = model.predict(np.asarray(model.info.sample[:1]))
        assert len(prediction) == 1 and type(prediction[0]) is float


@pytest.mark.slow
def test_shared_model_imports_no_web_framework() -> None:
    code = (
        "import sys\n"
        "import servingbench.shared_model.artifacts, servingbench.shared_model.models\n"
        "import servingbench.shared_model.threads\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {WEB_FRAMEWORKS!r}))\n"
    )
    assert _run_python(code).strip() == "[]"


@pytest.mark.slow
def test_limit_native_threads_sets_env_and_loaded_pools() -> None:
    code = (
        "import json, sys\n"
        "from servingbench.shared_model.threads import THREAD_ENV_VARS, limit_native_threads\n"
        "numpy_first = 'numpy' in sys.modules\n"
        "import numpy, sklearn.ensemble\n"
        "report = limit_native_threads(1)\n"
        "print(json.dumps([report, numpy_first, list(THREAD_ENV_VARS)]))\n"
    )
    report, numpy_first, env_vars = json.loads(_run_python(code))
    assert report["requested"] == 1
    assert report["env"] == dict.fromkeys(env_vars, "1")
    assert report["numpy_imported_first"] is True or not numpy_first
    assert report["threadpools"], "numpy's BLAS should be loaded"
    assert all(pool["num_threads"] == 1 for pool in report["threadpools"])


def test_limit_native_threads_rejects_zero() -> None:
    from servingbench.shared_model.threads import limit_native_threads

    with pytest.raises(ValueError, match=">= 1"):
        limit_native_threads(0)
