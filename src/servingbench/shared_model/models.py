"""The model catalogue: default models, synthetic calibration models, and spec resolution.

A model spec is one of:

- ``fast`` or ``heavy``: a default model, trained on first use into the models directory;
- a path to a ``.skops`` file (with its manifest) or, opt-in only, a ``.pkl``/``.pickle``/``.joblib`` file;
  a path may carry options, ``PATH?sha256=HEX&output=predict_proba`` (:func:`model_spec`): a pickle's sha256 (which
  is its opt-in) and the output method, so a plan's model reaches every server as one string;
- ``synthetic:cpu_us=N``: busy-spins N microseconds of CPU per row;
- ``synthetic:sleep_ms=N``: sleeps N milliseconds once per predict call (stands in for a remote lookup).

The bundled and synthetic models take the same features (scikit-learn's diabetes data set), so one payload fits
every one of them; an imported model describes its own input (see :mod:`.importer`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import sklearn
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servingbench.shared_model.artifacts import SKOPS_SUFFIX, check_rows, load_model_file, manifest_path, save_model
from servingbench.shared_model.columns import OUTPUT_METHODS, OutputMethod
from servingbench.shared_model.types import Model, ModelError, ModelInfo, Prediction

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODELS_DIR",
    "DEFAULT_MODEL_NAMES",
    "MODELS_DIR_ENV",
    "SPEC_OPTIONS",
    "SyntheticModel",
    "default_models_dir",
    "model_spec",
    "parse_synthetic",
    "resolve_model",
    "split_spec",
    "train_default_models",
]

DEFAULT_MODEL = "fast"
FAST_MODEL = "fast"
HEAVY_MODEL = "heavy"
DEFAULT_MODEL_NAMES = (FAST_MODEL, HEAVY_MODEL)
DEFAULT_MODEL_VERSION = "1"
MODELS_DIR_ENV = "SERVINGBENCH_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("models")  # relative to the current working directory
LOCK_FILE_NAME = ".train.lock"

RANDOM_STATE = 0
RIDGE_ALPHA = 1.0
HEAVY_N_TREES = 200
SAMPLE_ROWS = 3

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_VERSION = "1"
MAX_SYNTHETIC_SECONDS = 10.0
_SYNTHETIC_RE = re.compile(r"(?P<key>[a-z_]+)=(?P<value>\d+(?:\.\d+)?)")
_UNIT_SECONDS = {"cpu_us": 1e-6, "sleep_ms": 1e-3}
#: Options a model file's spec may carry after ``?``.
SPEC_OPTIONS = ("sha256", "output")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@cache
def _dataset() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[str, ...]]:
    data = load_diabetes()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.float64)
    return x, y, tuple(str(n) for n in data.feature_names)


def _sample() -> npt.NDArray[np.float64]:
    return _dataset()[0][:SAMPLE_ROWS]


def default_models_dir() -> Path:
    """``$SERVINGBENCH_MODELS_DIR`` if set, else ``<current working directory>/models``."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path.cwd() / DEFAULT_MODELS_DIR


# --- default models -------------------------------------------------------------------------------


def _build_fast() -> Any:
    return make_pipeline(StandardScaler(), Ridge(alpha=RIDGE_ALPHA))


def _build_heavy() -> Any:
    # Fully grown trees, predicted one tree at a time: single-row predict costs several milliseconds.
    return RandomForestRegressor(n_estimators=HEAVY_N_TREES, random_state=RANDOM_STATE, n_jobs=1)


_BUILDERS: dict[str, Callable[[], Any]] = {FAST_MODEL: _build_fast, HEAVY_MODEL: _build_heavy}


def _default_path(models_dir: Path, name: str) -> Path:
    return models_dir / f"{name}{SKOPS_SUFFIX}"


def _is_saved(path: Path) -> bool:
    return path.is_file() and manifest_path(path).is_file()


def _train_one(models_dir: Path, name: str) -> Path:
    x, y, feature_names = _dataset()
    estimator = _BUILDERS[name]().fit(x, y)
    return save_model(
        estimator,
        _default_path(models_dir, name),
        name=name,
        version=DEFAULT_MODEL_VERSION,
        feature_names=feature_names,
        sample_rows=_sample(),
    )


@contextmanager
def _training_lock(models_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock so concurrent processes (e.g. gunicorn workers) train each model once."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / LOCK_FILE_NAME).open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ensure_trained(models_dir: Path, names: tuple[str, ...], *, force: bool) -> list[Path]:
    with _training_lock(models_dir):
        paths = []
        for name in names:
            path = _default_path(models_dir, name)
            paths.append(path if _is_saved(path) and not force else _train_one(models_dir, name))
        return paths


def train_default_models(models_dir: Path, *, force: bool = False) -> list[Path]:
    """Train ``fast`` and ``heavy`` into ``models_dir`` (``<name>.skops`` + manifest); return their paths.

    Existing models are kept unless ``force``. Deterministic (fixed random_state); about a second on 2 cores.
    """
    return _ensure_trained(models_dir, DEFAULT_MODEL_NAMES, force=force)


# --- synthetic models -----------------------------------------------------------------------------


class SyntheticModel:
    """A model of known cost: busy-spins ``cpu_us`` per row and sleeps ``sleep_ms`` per call; returns row sums."""

    def __init__(self, spec: str, *, cpu_us: float = 0.0, sleep_ms: float = 0.0) -> None:
        _, _, feature_names = _dataset()
        self._cpu_ns_per_row = round(cpu_us * 1_000)
        self._sleep_s = sleep_ms / 1_000
        self._info = ModelInfo(
            name=spec,
            version=SYNTHETIC_VERSION,
            sha256=hashlib.sha256(spec.encode()).hexdigest(),
            n_features=len(feature_names),
            feature_names=feature_names,
            sklearn_version=sklearn.__version__,
            kind="synthetic",
            sample=tuple(tuple(row) for row in _sample().tolist()),
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def predict(self, rows: Any) -> list[Prediction]:
        """Sum of features per row, after the configured sleep (ms, once) and busy-spin (us, per row)."""
        check_rows(rows, self._info.n_features)
        if self._sleep_s:
            time.sleep(self._sleep_s)
        if self._cpu_ns_per_row:
            _spin_ns(self._cpu_ns_per_row * len(rows))
        values: list[Prediction] = rows.sum(axis=1).tolist()
        return values


def _spin_ns(duration_ns: int) -> None:
    # Busy-wait on purpose: the point is to burn CPU, which sleeping would not.
    deadline = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < deadline:
        pass


def parse_synthetic(spec: str) -> SyntheticModel:
    """Parse ``synthetic:cpu_us=N`` or ``synthetic:sleep_ms=N`` (N >= 0, at most 10 s); bad specs raise ModelError."""
    body = spec.removeprefix(SYNTHETIC_PREFIX)
    match = _SYNTHETIC_RE.fullmatch(body)
    if not spec.startswith(SYNTHETIC_PREFIX) or match is None or match["key"] not in _UNIT_SECONDS:
        raise ModelError(f"bad synthetic model spec {spec!r}: expected synthetic:cpu_us=N or synthetic:sleep_ms=N")
    key, value = match["key"], float(match["value"])
    if value * _UNIT_SECONDS[key] > MAX_SYNTHETIC_SECONDS:
        raise ModelError(f"bad synthetic model spec {spec!r}: more than {MAX_SYNTHETIC_SECONDS:g} s")
    return SyntheticModel(spec, **{key: value})


# --- resolution -----------------------------------------------------------------------------------


def _resolve_default(name: str, models_dir: Path, *, train_if_missing: bool) -> Model:
    path = _default_path(models_dir, name)
    if train_if_missing and not _is_saved(path):
        # Trained under the lock so concurrent workers train it once. A saved model is read without the lock (its
        # files are written atomically, manifest last), so a read-only models directory serves.
        _ensure_trained(models_dir, (name,), force=False)
    elif not _is_saved(path):
        raise ModelError(f"model {name!r} not found at {path}; run `servingbench train`")
    return load_model_file(path)


def model_spec(path: str | Path, *, sha256: str | None = None, output: OutputMethod | None = None) -> str:
    """The spec of a model file with its options: ``PATH``, or ``PATH?sha256=HEX&output=predict_proba``."""
    options = {key: value for key, value in (("sha256", sha256), ("output", output)) if value}
    return str(path) + ("?" + urllib.parse.urlencode(options) if options else "")


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``PATH?sha256=HEX&output=M`` -> (PATH, options). A ``?`` not followed by known options is part of the path.

    ModelError for a malformed sha256 or an unknown output method.
    """
    head, mark, tail = spec.rpartition("?")
    if not mark:
        return spec, {}
    try:
        pairs = urllib.parse.parse_qsl(tail, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return spec, {}
    if not pairs or any(key not in SPEC_OPTIONS for key, _ in pairs):
        return spec, {}
    options = dict(pairs)
    if "sha256" in options and not _SHA256.fullmatch(options["sha256"].lower()):
        raise ModelError(f"model spec {spec[:200]!r}: sha256 must be 64 hex digits")
    if "output" in options and options["output"] not in OUTPUT_METHODS:
        raise ModelError(f"model spec {spec[:200]!r}: output must be one of {', '.join(OUTPUT_METHODS)}")
    return head, options


def resolve_model(
    spec: str,
    *,
    models_dir: Path,
    allow_pickle: bool = False,
    pickle_sha256: str | None = None,
    train_if_missing: bool = True,
) -> Model:
    """Resolve a model spec (``fast``, ``heavy``, a file path with options, or ``synthetic:...``) to a loaded,
    verified Model. A ``sha256`` option is a pickle's opt-in, as ``allow_pickle`` with ``pickle_sha256`` is."""
    spec = spec.strip()
    if spec.startswith(SYNTHETIC_PREFIX):
        return parse_synthetic(spec)
    if spec in DEFAULT_MODEL_NAMES:
        return _resolve_default(spec, models_dir, train_if_missing=train_if_missing)
    spec, options = split_spec(spec)
    if "sha256" in options:
        allow_pickle, pickle_sha256 = True, options["sha256"]
    output = cast("OutputMethod | None", options.get("output"))
    path = Path(spec).expanduser()
    if spec and (path.suffix or path.exists()):
        return load_model_file(path, allow_pickle=allow_pickle, pickle_sha256=pickle_sha256, output=output)
    raise ModelError(
        f"unknown model spec {spec!r}: expected one of {DEFAULT_MODEL_NAMES}, a .skops path, "
        "or synthetic:cpu_us=N / synthetic:sleep_ms=N"
    )
