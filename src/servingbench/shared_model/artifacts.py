"""Safe model files: save a scikit-learn estimator as skops plus a manifest, load it back verified.

A model file ``<name>.skops`` always travels with its manifest ``<name>.skops.manifest.json``
(see :func:`manifest_path`). The manifest records the file's sha256, the scikit-learn version it was
saved with, the model's name, version and feature names, a few sample rows, and the list of
non-default types that were reviewed at save time. Loading trusts exactly that list, never more.

Pickle and joblib files run arbitrary code when loaded. They load only with an explicit opt-in and
the file's sha256, which is checked on the bytes in memory before anything is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
import skops
import skops.io as sio
from sklearn.exceptions import InconsistentVersionWarning

from servingbench.shared_model.types import JSONScalar, ModelError, ModelInfo

__all__ = [
    "MANIFEST_SUFFIX",
    "PICKLE_SUFFIXES",
    "SKOPS_SUFFIX",
    "SklearnModel",
    "check_rows",
    "file_sha256",
    "load_model_file",
    "manifest_path",
    "save_model",
]

SKOPS_SUFFIX = ".skops"
MANIFEST_SUFFIX = ".manifest.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MANIFEST_FORMAT = "servingbench-model-manifest"
MANIFEST_FORMAT_VERSION = 1
# Types beyond skops' defaults may come only from these packages; anything else is refused at save time.
REVIEWED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")
MAX_SAMPLE_ROWS = 5
RETRAIN_HINT = "retrain with `servingbench train`"
_HASH_CHUNK_BYTES = 1 << 20
FILE_MODE = 0o644  # mkstemp creates 0600; model files are read by server workers that may run as another user


@dataclass(frozen=True)
class _Manifest:
    sha256: str
    sklearn_version: str
    name: str
    version: str
    feature_names: tuple[str, ...]
    n_features: int
    trusted_types: tuple[str, ...]
    sample: tuple[tuple[float, ...], ...]


class SklearnModel:
    """A fitted estimator behind the :class:`~servingbench.shared_model.types.Model` protocol."""

    def __init__(self, estimator: Any, info: ModelInfo) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise ModelError(f"{info.name}: object of type {type(estimator).__name__} has no predict method")
        self._estimator = estimator
        self._info = info

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def estimator(self) -> Any:
        return self._estimator

    def predict(self, rows: npt.NDArray[np.float64]) -> list[JSONScalar]:
        """Predict every row (rows x n_features) in one call; one JSON-native scalar a row."""
        check_rows(rows, self._info.n_features)
        return _to_json_scalars(self._estimator.predict(rows), len(rows))


def check_rows(rows: npt.NDArray[np.float64], n_features: int) -> None:
    """Raise ModelError unless ``rows`` is a non-empty 2-D array with ``n_features`` columns."""
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != n_features:
        raise ModelError(f"expected a non-empty 2-D array with {n_features} columns, got shape {rows.shape}")


def _to_json_scalars(output: Any, n_rows: int) -> list[JSONScalar]:
    arr = np.asarray(output)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ModelError(f"model returned shape {arr.shape}, expected one value for each of {n_rows} rows")
    if arr.dtype != object:
        values: list[JSONScalar] = arr.tolist()
        return values
    return [v.item() if isinstance(v, np.generic) else v for v in arr]


def manifest_path(model_path: Path) -> Path:
    """The manifest beside a model file: ``fast.skops`` -> ``fast.skops.manifest.json``."""
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _reviewed_trusted_types(data: bytes, name: str) -> list[str]:
    found = sorted(sio.get_untrusted_types(data=data))
    unreviewed = [t for t in found if not t.startswith(REVIEWED_TYPE_PREFIXES)]
    if unreviewed:
        raise ModelError(f"{name}: refusing to save types outside {REVIEWED_TYPE_PREFIXES}: {unreviewed}")
    return found


def _sample_list(sample_rows: npt.ArrayLike, n_features: int, name: str) -> list[list[float]]:
    sample = np.asarray(sample_rows, dtype=np.float64)
    if sample.ndim != 2 or sample.shape[1] != n_features or not 0 < sample.shape[0] <= MAX_SAMPLE_ROWS:
        raise ModelError(f"{name}: sample_rows must be 1..{MAX_SAMPLE_ROWS} rows of {n_features} features")
    if not np.isfinite(sample).all():
        raise ModelError(f"{name}: sample_rows must be finite")
    rows: list[list[float]] = sample.tolist()
    return rows


def save_model(
    estimator: Any,
    path: Path,
    *,
    name: str,
    version: str,
    feature_names: Sequence[str],
    sample_rows: npt.ArrayLike,
) -> Path:
    """Write ``estimator`` to ``path`` (skops) and its manifest beside it, each atomically; return ``path``.

    ``sample_rows``: 1 to MAX_SAMPLE_ROWS rows of ``len(feature_names)`` finite floats, kept as an example payload.
    Types outside skops' defaults must come from REVIEWED_TYPE_PREFIXES, else ModelError.
    """
    names = [str(f) for f in feature_names]
    sample = _sample_list(sample_rows, len(names), name)
    data = sio.dumps(estimator)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "name": name,
        "version": version,
        "feature_names": names,
        "n_features": len(names),
        "trusted_types": _reviewed_trusted_types(data, name),
        "sample": sample,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    _atomic_write(manifest_path(path), (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror}") from None


def _str_list(raw: dict[str, Any], key: str) -> tuple[str, ...]:
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return tuple(value)


def _parse_manifest(raw: Any) -> _Manifest:
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a servingbench model manifest")
    feature_names = _str_list(raw, "feature_names")
    manifest = _Manifest(
        sha256=str(raw["sha256"]).lower(),
        sklearn_version=str(raw["sklearn_version"]),
        name=str(raw["name"]),
        version=str(raw["version"]),
        feature_names=feature_names,
        n_features=int(raw["n_features"]),
        trusted_types=_str_list(raw, "trusted_types"),
        sample=tuple(tuple(float(x) for x in row) for row in raw["sample"]),
    )
    if manifest.n_features != len(feature_names) or manifest.n_features < 1:
        raise ValueError("n_features does not match feature_names")
    if any(len(row) != manifest.n_features for row in manifest.sample):
        raise ValueError("sample rows do not have n_features values")
    return manifest


def _read_manifest(model_path: Path) -> _Manifest:
    path = manifest_path(model_path)
    data = _read_bytes(path, "model manifest")
    try:
        return _parse_manifest(json.loads(data))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"corrupt model manifest {path}: {exc}") from None


def _check_manifest(path: Path, manifest: _Manifest, data: bytes) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.sha256:
        raise ModelError(f"{path}: sha256 {actual} does not match the manifest ({manifest.sha256}); file changed")
    if manifest.sklearn_version != sklearn.__version__:
        raise ModelError(
            f"{path}: model was saved with scikit-learn {manifest.sklearn_version}, "
            f"this is {sklearn.__version__}; {RETRAIN_HINT}"
        )
    unreviewed = [t for t in manifest.trusted_types if not t.startswith(REVIEWED_TYPE_PREFIXES)]
    if unreviewed:
        raise ModelError(f"{manifest_path(path)}: trusted_types outside {REVIEWED_TYPE_PREFIXES}: {unreviewed}")


def _skops_loads(path: Path, data: bytes, trusted: Sequence[str]) -> Any:
    try:
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted))
        if untrusted:
            raise ModelError(f"{path}: refused types not trusted by the manifest: {untrusted}")
        with _sklearn_version_guard(path):
            return sio.loads(data, trusted=list(trusted))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"corrupt model file {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextmanager
def _sklearn_version_guard(path: Path) -> Iterator[None]:
    """Turn scikit-learn's version-mismatch warning during unpickling into a clear ModelError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            yield
        except InconsistentVersionWarning as exc:
            raise ModelError(
                f"{path}: model was saved with scikit-learn {exc.original_sklearn_version}, "
                f"this is {sklearn.__version__}; {RETRAIN_HINT}"
            ) from None


def _feature_names_of(estimator: Any, n_features: int) -> tuple[str, ...]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and len(names) == n_features:
        return tuple(str(n) for n in names)
    return tuple(f"x{i}" for i in range(n_features))


def _load_skops(path: Path) -> SklearnModel:
    data = _read_bytes(path, "model file")
    manifest = _read_manifest(path)
    _check_manifest(path, manifest, data)
    estimator = _skops_loads(path, data, manifest.trusted_types)
    info = ModelInfo(
        name=manifest.name,
        version=manifest.version,
        sha256=manifest.sha256,
        n_features=manifest.n_features,
        feature_names=manifest.feature_names,
        sklearn_version=manifest.sklearn_version,
        kind="sklearn",
        sample=manifest.sample,
    )
    _check_n_features(path, estimator, info.n_features)
    return SklearnModel(estimator, info)


def _check_n_features(path: Path, estimator: Any, expected: int) -> None:
    actual = getattr(estimator, "n_features_in_", expected)
    if actual != expected:
        raise ModelError(f"{path}: estimator expects {actual} features, the manifest says {expected}")


def _unpickle(path: Path, data: bytes) -> Any:
    try:
        with _sklearn_version_guard(path):
            if path.suffix.lower() == ".joblib":
                import joblib

                return joblib.load(io.BytesIO(data))
            return pickle.loads(data)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"corrupt pickle file {path}: {_one_line(exc)}") from None


def _load_pickle(path: Path, *, allow_pickle: bool, pickle_sha256: str | None) -> SklearnModel:
    if not allow_pickle or not pickle_sha256:
        raise ModelError(
            f"refusing to load pickle file {path}: unpickling runs arbitrary code; "
            "opt in with allow_pickle and the file's sha256, or save it as .skops"
        )
    data = _read_bytes(path, "model file")
    actual = hashlib.sha256(data).hexdigest()
    if actual != pickle_sha256.strip().lower():
        raise ModelError(f"refusing to unpickle {path}: sha256 {actual} does not match the expected {pickle_sha256}")
    estimator = _unpickle(path, data)
    n_features = int(getattr(estimator, "n_features_in_", 0))
    if n_features < 1:
        raise ModelError(f"{path}: unpickled object has no n_features_in_; is it a fitted estimator?")
    info = ModelInfo(
        name=path.stem,
        version="unversioned",
        sha256=actual,
        n_features=n_features,
        feature_names=_feature_names_of(estimator, n_features),
        sklearn_version=sklearn.__version__,
        kind="pickle",
    )
    return SklearnModel(estimator, info)


def load_model_file(path: Path, *, allow_pickle: bool = False, pickle_sha256: str | None = None) -> SklearnModel:
    """Load and verify a model file.

    ``.skops``: needs its manifest; the sha256, the scikit-learn version and the trusted types are checked.
    ``.pkl``/``.pickle``/``.joblib``: only with ``allow_pickle=True`` and a matching hex ``pickle_sha256``,
    checked before unpickling. Any failure is a ModelError naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        return _load_skops(path)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path, allow_pickle=allow_pickle, pickle_sha256=pickle_sha256)
    raise ModelError(f"unsupported model file {path}: expected {SKOPS_SUFFIX} or one of {PICKLE_SUFFIXES}")
