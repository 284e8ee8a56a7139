"""Safe model files: save a scikit-learn estimator as skops plus a manifest, load it back verified.

A model file ``<name>.skops`` always travels with its manifest ``<name>.skops.manifest.json``
(see :func:`manifest_path`). The manifest records the file's sha256, the scikit-learn version it was
saved with, the model's name, version and feature names, sample rows, and the list of non-default types that
were reviewed at save time. Loading trusts exactly that list, never more. An imported model's manifest (format
version 2, written by :mod:`.importer`) adds its input columns, its output and where its sample rows came from.

Pickle and joblib files run arbitrary code when loaded. They load only with an explicit opt-in and
the file's sha256, which is checked on the bytes in memory before anything is unpickled; then the globals the
file would import are inspected without running it (:mod:`.pickles`), and a file naming anything outside the
reviewed packages is refused.
"""

from __future__ import annotations

import dataclasses
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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sklearn
import skops
import skops.io as sio
from sklearn.exceptions import InconsistentVersionWarning

from servingbench.shared_model.columns import Column, Output, OutputMethod
from servingbench.shared_model.pickles import PickleInspectionError, inspect_pickle, refused_globals
from servingbench.shared_model.types import ModelError, ModelInfo, Prediction

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MANIFEST_SUFFIX",
    "MAX_IMPORTED_SAMPLE_ROWS",
    "PICKLE_SUFFIXES",
    "SKOPS_SUFFIX",
    "Imported",
    "SklearnModel",
    "check_rows",
    "file_sha256",
    "load_model_file",
    "manifest_path",
    "pickle_refusal",
    "reviewed_skops_loads",
    "save_model",
    "unpickle_verified",
    "verify_model_file",
]

SKOPS_SUFFIX = ".skops"
MANIFEST_SUFFIX = ".manifest.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MANIFEST_FORMAT = "servingbench-model-manifest"
MANIFEST_FORMAT_VERSION = 1
#: Manifests of imported models: input columns, output, sample rows and their source.
IMPORTED_FORMAT_VERSION = 2
MANIFEST_FORMAT_VERSIONS = (MANIFEST_FORMAT_VERSION, IMPORTED_FORMAT_VERSION)
# Types beyond skops' defaults may come only from these packages; anything else is refused at save time.
REVIEWED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.")
#: Standard-library types skops does not trust by default but scikit-learn models hold: a partial only binds
#: arguments to a function that must itself be trusted (HistGradientBoosting's categorical encoder needs it).
REVIEWED_TYPES = ("functools.partial",)
MAX_SAMPLE_ROWS = 5
#: An imported model keeps up to this many sample rows (see :mod:`.samples`).
MAX_IMPORTED_SAMPLE_ROWS = 5000
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
    sample: tuple[Any, ...]
    format_version: int = MANIFEST_FORMAT_VERSION
    columns: tuple[Column, ...] = ()
    output: Output | None = None
    sample_source: str | None = None
    trusted_by_user: tuple[str, ...] = ()


class SklearnModel:
    """A fitted estimator behind the :class:`~servingbench.shared_model.types.Model` protocol."""

    def __init__(self, estimator: Any, info: ModelInfo) -> None:
        if not callable(getattr(estimator, "predict", None)):
            raise ModelError(f"{info.name}: object of type {type(estimator).__name__} has no predict method")
        self._estimator = estimator
        self._info = info
        output = info.output
        self._class_names = output.class_names if output is not None and output.kind == "probabilities" else None

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def estimator(self) -> Any:
        return self._estimator

    def predict(self, rows: npt.NDArray[np.float64] | pd.DataFrame) -> list[Prediction]:
        """Predict every row (an array rows x n_features, or the DataFrame of a named-column model) in one call.

        One JSON-native scalar a row, or with a probabilities output one {class name: probability} a row.
        """
        if isinstance(rows, np.ndarray):
            check_rows(rows, self._info.n_features)
        if self._class_names is not None:
            return _probabilities(self._estimator.predict_proba(rows), self._class_names, len(rows))
        return _to_json_scalars(self._estimator.predict(rows), len(rows))


def check_rows(rows: npt.NDArray[np.float64], n_features: int) -> None:
    """Raise ModelError unless ``rows`` is a non-empty 2-D array with ``n_features`` columns."""
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != n_features:
        raise ModelError(f"expected a non-empty 2-D array with {n_features} columns, got shape {rows.shape}")


def _probabilities(output: Any, names: tuple[str, ...], n_rows: int) -> list[Prediction]:
    arr = np.asarray(output, dtype=np.float64)
    if arr.shape != (n_rows, len(names)):
        raise ModelError(f"predict_proba returned shape {arr.shape}, expected ({n_rows}, {len(names)})")
    return [dict(zip(names, row, strict=True)) for row in arr.tolist()]


def _to_json_scalars(output: Any, n_rows: int) -> list[Prediction]:
    arr = np.asarray(output)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ModelError(f"model returned shape {arr.shape}, expected one value for each of {n_rows} rows")
    if arr.dtype != object:
        values: list[Prediction] = arr.tolist()
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


def _reviewed(type_name: str) -> bool:
    return type_name.startswith(REVIEWED_TYPE_PREFIXES) or type_name in REVIEWED_TYPES


def _reviewed_trusted_types(data: bytes, name: str, trusted_by_user: Sequence[str] = ()) -> list[str]:
    found = sorted(sio.get_untrusted_types(data=data))
    unreviewed = [t for t in found if not _reviewed(t) and t not in trusted_by_user]
    if unreviewed:
        raise ModelError(f"{name}: refusing to save types outside {REVIEWED_TYPE_PREFIXES}: {unreviewed}")
    return found


def _sample_list(sample_rows: npt.ArrayLike, n_features: int, name: str, limit: int = MAX_SAMPLE_ROWS) -> list[Any]:
    sample = np.asarray(sample_rows, dtype=np.float64)
    if sample.ndim != 2 or sample.shape[1] != n_features or not 0 < sample.shape[0] <= limit:
        raise ModelError(f"{name}: sample_rows must be 1..{limit} rows of {n_features} features")
    if not np.isfinite(sample).all():
        raise ModelError(f"{name}: sample_rows must be finite")
    rows: list[Any] = sample.tolist()
    return rows


def _sample_records(records: Sequence[Any], columns: Sequence[Column], name: str) -> list[Any]:
    names = [column.name for column in columns]
    if not 0 < len(records) <= MAX_IMPORTED_SAMPLE_ROWS:
        raise ModelError(f"{name}: sample_rows must be 1..{MAX_IMPORTED_SAMPLE_ROWS} records")
    if any(not isinstance(r, dict) or list(r) != names for r in records):
        raise ModelError(f"{name}: every sample record must have the columns {names[:10]} in order")
    return [dict(r) for r in records]


@dataclass(frozen=True)
class Imported:
    """What an imported model's manifest adds (format version 2); see :mod:`.importer`."""

    output: Output
    columns: tuple[Column, ...] = ()
    sample_source: str = "model"
    trusted_by_user: tuple[str, ...] = ()
    source: dict[str, str] | None = None


def save_model(
    estimator: Any,
    path: Path,
    *,
    name: str,
    version: str,
    feature_names: Sequence[str],
    sample_rows: npt.ArrayLike | Sequence[dict[str, Any]],
    imported: Imported | None = None,
) -> Path:
    """Write ``estimator`` to ``path`` (skops) and its manifest beside it, each atomically; return ``path``.

    ``sample_rows``: 1 to MAX_SAMPLE_ROWS rows of ``len(feature_names)`` finite floats, kept as an example payload;
    with ``imported`` up to MAX_IMPORTED_SAMPLE_ROWS, as records over ``imported.columns`` for a named model.
    Types outside skops' defaults must come from REVIEWED_TYPE_PREFIXES or ``imported.trusted_by_user``, else
    ModelError.
    """
    names = [str(f) for f in feature_names]
    trusted_by_user = imported.trusted_by_user if imported else ()
    if imported is not None and imported.columns:
        sample = _sample_records(list(sample_rows), imported.columns, name)  # type: ignore[arg-type]
    else:
        limit = MAX_IMPORTED_SAMPLE_ROWS if imported else MAX_SAMPLE_ROWS
        sample = _sample_list(sample_rows, len(names), name, limit)  # type: ignore[arg-type]
    data = sio.dumps(estimator)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "format_version": IMPORTED_FORMAT_VERSION if imported else MANIFEST_FORMAT_VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "name": name,
        "version": version,
        "feature_names": names,
        "n_features": len(names),
        "trusted_types": _reviewed_trusted_types(data, name, trusted_by_user),
    }
    if imported is not None:
        manifest.update(
            trusted_by_user=list(trusted_by_user),
            imported_from=imported.source,
            input={"named": bool(imported.columns), "columns": [c.as_json() for c in imported.columns]},
            output=imported.output.as_json(),
            sample_source=imported.sample_source,
        )
    manifest["sample"] = sample
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    _atomic_write(manifest_path(path), (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode())
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
    version = raw.get("format_version", MANIFEST_FORMAT_VERSION)
    if version not in MANIFEST_FORMAT_VERSIONS:
        raise ValueError(f"format_version {version!r} is not one of {MANIFEST_FORMAT_VERSIONS}; upgrade servingbench")
    feature_names = _str_list(raw, "feature_names")
    imported = version == IMPORTED_FORMAT_VERSION
    columns = tuple(Column.from_json(c) for c in raw["input"]["columns"]) if imported else ()
    manifest = _Manifest(
        sha256=str(raw["sha256"]).lower(),
        sklearn_version=str(raw["sklearn_version"]),
        name=str(raw["name"]),
        version=str(raw["version"]),
        feature_names=feature_names,
        n_features=int(raw["n_features"]),
        trusted_types=_str_list(raw, "trusted_types"),
        sample=_parse_sample(raw["sample"], columns),
        format_version=version,
        columns=columns,
        output=Output.from_json(raw["output"]) if imported else None,
        sample_source=str(raw.get("sample_source")) if imported else None,
        trusted_by_user=_str_list(raw, "trusted_by_user") if imported else (),
    )
    if manifest.n_features != len(feature_names) or manifest.n_features < 1:
        raise ValueError("n_features does not match feature_names")
    if columns and tuple(c.name for c in columns) != feature_names:
        raise ValueError("the input columns do not match feature_names")
    if not columns and any(len(row) != manifest.n_features for row in manifest.sample):
        raise ValueError("sample rows do not have n_features values")
    return manifest


def _parse_sample(raw: Any, columns: tuple[Column, ...]) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise TypeError("sample must be a list of rows")
    if not columns:
        return tuple(tuple(float(x) for x in row) for row in raw)
    names = [column.name for column in columns]
    if any(not isinstance(row, dict) or list(row) != names for row in raw):
        raise ValueError("sample records do not have the input columns")
    return tuple(raw)


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
    unreviewed = [t for t in manifest.trusted_types if not _reviewed(t) and t not in manifest.trusted_by_user]
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


def reviewed_skops_loads(path: Path, data: bytes, trusted_by_user: Sequence[str] = ()) -> Any:
    """Load a skops file that has no manifest (one being imported): every non-default type must be reviewed or
    named in ``trusted_by_user``, else ModelError before anything is loaded."""
    try:
        found = sorted(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ModelError(f"corrupt model file {path}: {_one_line(exc)}") from None
    unreviewed = [t for t in found if not _reviewed(t) and t not in trusted_by_user]
    if unreviewed:
        raise ModelError(f"refusing to load {path}: types outside {REVIEWED_TYPE_PREFIXES} not trusted: {unreviewed}")
    return _skops_loads(path, data, found)


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


def _load_skops(path: Path, output: OutputMethod | None = None) -> SklearnModel:
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
        columns=manifest.columns,
        output=_override_output(path, estimator, manifest.output, output),
        sample_source=manifest.sample_source,
        trusted_by_user=manifest.trusted_by_user,
    )
    _check_n_features(path, estimator, info.n_features)
    return SklearnModel(estimator, info)


def _override_output(path: Path, estimator: Any, output: Output | None, method: OutputMethod | None) -> Output | None:
    """The manifest's output, or the one a plan or command asks for instead."""
    from servingbench.shared_model.introspect import infer_output

    if method is None or (output is not None and output.method == method):
        return output
    try:
        return infer_output(estimator, method)
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from None


def _check_n_features(path: Path, estimator: Any, expected: int) -> None:
    actual = getattr(estimator, "n_features_in_", expected)
    if actual != expected:
        raise ModelError(f"{path}: estimator expects {actual} features, the manifest says {expected}")


def pickle_refusal(path: Path, data: bytes, trusted: Sequence[str] = ()) -> str | None:
    """Why the pickle or joblib bytes of ``path`` must not be unpickled (found without running them), or None."""
    try:
        imports = inspect_pickle(data, joblib=path.suffix.lower() == ".joblib")
    except PickleInspectionError as exc:
        return f"cannot inspect it before unpickling: {exc}"
    problems = refused_globals(imports, trusted)
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        return f"it names what was not reviewed: {'; '.join(problems[:3])}{more}"
    return None


def unpickle_verified(path: Path, data: bytes, trusted: Sequence[str] = ()) -> Any:
    """Unpickle bytes whose sha256 the caller checked, after :func:`pickle_refusal` found nothing."""
    refusal = pickle_refusal(path, data, trusted)
    if refusal:
        raise ModelError(f"refusing to unpickle {path}: {refusal}")
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


def _check_sha256(path: Path, data: bytes, expected: str | None) -> str:
    actual = hashlib.sha256(data).hexdigest()
    if not expected or actual != expected.strip().lower():
        raise ModelError(f"refusing to unpickle {path}: sha256 {actual} does not match the expected {expected}")
    return actual


def _load_pickle(
    path: Path, *, allow_pickle: bool, pickle_sha256: str | None, output: OutputMethod | None
) -> SklearnModel:
    if not allow_pickle or not pickle_sha256:
        raise ModelError(
            f"refusing to load pickle file {path}: unpickling runs arbitrary code; "
            "opt in with allow_pickle and the file's sha256, or import it with `servingbench import-model`"
        )
    data = _read_bytes(path, "model file")
    actual = _check_sha256(path, data, pickle_sha256)
    estimator = unpickle_verified(path, data)
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
    if output is not None or _named(estimator):
        from servingbench.shared_model.importer import describe_estimator

        described = describe_estimator(estimator, output=output or "predict", source=path)
        info = dataclasses.replace(
            info,
            columns=described.columns,
            output=described.output,
            sample=described.sample,
            sample_source=described.sample_source,
        )
    return SklearnModel(estimator, info)


def _named(estimator: Any) -> bool:
    from servingbench.shared_model.introspect import feature_names

    return feature_names(estimator) is not None


def verify_model_file(path: Path, *, sha256: str | None = None) -> None:
    """Check a model file without loading it: ModelError (one line naming the file and the reason) if it fails.

    ``.skops``: its manifest parses, the file's sha256 (and ``sha256`` when given) and scikit-learn version match it,
    and skops finds no type the manifest does not trust. Pickle formats: ``sha256`` is given and matches, and the
    file names nothing outside the reviewed packages (inspected without unpickling).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        data = _read_bytes(path, "model file")
        actual = hashlib.sha256(data).hexdigest()
        if sha256 and actual != sha256.strip().lower():
            raise ModelError(f"{path}: sha256 {actual} does not match the expected {sha256}")
        manifest = _read_manifest(path)
        _check_manifest(path, manifest, data)
        try:
            untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(manifest.trusted_types))
        except Exception as exc:
            raise ModelError(f"corrupt model file {path}: {_one_line(exc)}") from None
        if untrusted:
            raise ModelError(f"{path}: refused types not trusted by the manifest: {untrusted}")
        return
    if suffix not in PICKLE_SUFFIXES:
        raise ModelError(f"unsupported model file {path}: expected {SKOPS_SUFFIX} or one of {PICKLE_SUFFIXES}")
    if not sha256:
        raise ModelError(f'{path}: a pickle model needs its sha256 (plan: sha256 = "..."; run: --model-sha256)')
    data = _read_bytes(path, "model file")
    _check_sha256(path, data, sha256)
    refusal = pickle_refusal(path, data)
    if refusal:
        raise ModelError(f"refusing to unpickle {path}: {refusal}")


def load_model_file(
    path: Path,
    *,
    allow_pickle: bool = False,
    pickle_sha256: str | None = None,
    output: OutputMethod | None = None,
) -> SklearnModel:
    """Load and verify a model file.

    ``.skops``: needs its manifest; the sha256, the scikit-learn version and the trusted types are checked.
    ``.pkl``/``.pickle``/``.joblib``: only with ``allow_pickle=True`` and a matching hex ``pickle_sha256``,
    checked before unpickling, and only if the file names nothing outside the reviewed packages (inspected before
    unpickling). ``output`` overrides the model's output method (``predict`` or ``predict_proba``). Any failure is
    a ModelError naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        return _load_skops(path, output)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path, allow_pickle=allow_pickle, pickle_sha256=pickle_sha256, output=output)
    raise ModelError(f"unsupported model file {path}: expected {SKOPS_SUFFIX} or one of {PICKLE_SUFFIXES}")
