"""Import a team's own model file (``.joblib``, ``.pkl``, ``.skops``) as a verified ``.skops`` with its manifest.

The order is the safety argument: a pickle's sha256 is checked on the bytes first, then the globals it would import
are inspected without running it (:mod:`.pickles`), and only then is it unpickled, from the same bytes. The model
is described (:func:`describe_estimator`: input columns, output, sample rows), re-saved as skops with the types
skops finds reviewed as for every model (``--trust`` names the exceptions, listed in the manifest), and loaded back
the way a server will load it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servingbench.shared_model.artifacts import (
    PICKLE_SUFFIXES,
    SKOPS_SUFFIX,
    Imported,
    load_model_file,
    reviewed_skops_loads,
    save_model,
    unpickle_verified,
)
from servingbench.shared_model.columns import Column, Output, OutputMethod, RecordSchema, build_frame
from servingbench.shared_model.columns import records_to_values as _values
from servingbench.shared_model.introspect import (
    accepts,
    column_hints,
    feature_names,
    infer_columns,
    infer_output,
    probe_columns,
)
from servingbench.shared_model.limits import MAX_ABS_FEATURE
from servingbench.shared_model.samples import DEFAULT_SAMPLE_ROWS, draw_records, frame_records, read_sample_file
from servingbench.shared_model.types import ModelError, ModelInfo

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_SEED", "Described", "ImportResult", "describe_estimator", "import_model"]

DEFAULT_SEED = 0
MODEL_SOURCE = "model"  # sample_source of rows drawn from the model's own records
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Complete sample rows tried, in order, for one the model predicts (the row the probes start from).
MAX_BASE_ROW_TRIES = 50
#: Rows per predict call when the sample rows are checked against the model.
CHECK_CHUNK_ROWS = 1024
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Described:
    """A fitted model's schema: column names (``x0..`` for array models), named columns, output, sample rows."""

    feature_names: tuple[str, ...]
    columns: tuple[Column, ...]
    output: Output
    sample: tuple[Any, ...]
    sample_source: str
    dropped_rows: int = 0


@dataclass(frozen=True)
class ImportResult:
    """The imported model file, what was read from it, and lines worth printing."""

    path: Path
    info: ModelInfo
    notes: tuple[str, ...]


def _base_row(estimator: Any, columns: Sequence[Column], records: Sequence[dict[str, Any]], method: str) -> Any:
    """The first complete row the model predicts: the probes change one column of it at a time."""
    complete = [r for r in records if all(value is not None for value in r.values())][:MAX_BASE_ROW_TRIES]
    if not complete:
        raise ModelError("no sample row has a value in every column; the model cannot be probed")
    return next((r for r in complete if accepts(estimator, columns, r, method)), complete[0])


def _check_predicts(estimator: Any, method: str, rows: Any) -> None:
    try:
        getattr(estimator, method)(rows)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
        raise ModelError(f"the model fails on the sample rows: {reason}") from None


def _describe_named(
    estimator: Any,
    names: tuple[str, ...],
    output: Output,
    sample: pd.DataFrame | None,
    source: str,
    max_rows: int,
    seed: int,
) -> Described:
    columns = infer_columns(estimator, names, sample)
    if sample is not None:
        records = frame_records(columns, sample)
    else:
        records = draw_records(columns, column_hints(estimator, names), count=max_rows, seed=seed)
    columns = probe_columns(estimator, columns, _base_row(estimator, columns, records, output.method), output.method)
    record_model = RecordSchema(columns).record
    kept = []
    for record in records:
        try:
            record_model.model_validate(record)
        except ValueError:  # pydantic's ValidationError: a null or unseen category the model refuses
            continue
        kept.append(record)
    if not kept:
        raise ModelError("no sample row fits the model's input schema")
    for start in range(0, len(kept), CHECK_CHUNK_ROWS):
        chunk = kept[start : start + CHECK_CHUNK_ROWS]
        _check_predicts(estimator, output.method, build_frame(columns, _values(columns, chunk)))
    return Described(names, tuple(columns), output, tuple(kept), source, len(records) - len(kept))


def _describe_unnamed(
    estimator: Any, output: Output, sample: pd.DataFrame | None, source: str, max_rows: int, seed: int
) -> Described:
    n_features = int(getattr(estimator, "n_features_in_", 0))
    if n_features < 1:
        raise ModelError("the model has no n_features_in_; is it fitted?")
    names = tuple(f"x{i}" for i in range(n_features))
    if sample is not None:
        numeric = sample.select_dtypes("number")
        if numeric.shape[1] != n_features:
            raise ModelError(f"the sample has {numeric.shape[1]} numeric columns, the model takes {n_features}")
        rows = numeric.to_numpy(dtype=np.float64)
    else:
        columns = [Column(name, "number") for name in names]
        drawn = draw_records(columns, column_hints(estimator, names), count=max_rows, seed=seed)
        rows = np.array([[record[name] for name in names] for record in drawn], dtype=np.float64)
    fit = np.isfinite(rows).all(axis=1) & (np.abs(rows) <= MAX_ABS_FEATURE).all(axis=1)
    kept = rows[fit]
    if kept.shape[0] == 0:
        raise ModelError("no sample row is all finite numbers")
    _check_predicts(estimator, output.method, kept)
    sample_rows = tuple(tuple(row) for row in kept.tolist())
    return Described(names, (), output, sample_rows, source, int((~fit).sum()))


def describe_estimator(
    estimator: Any,
    *,
    output: OutputMethod = "predict",
    sample: pd.DataFrame | None = None,
    sample_name: str | None = None,
    max_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = DEFAULT_SEED,
    source: Path | None = None,
) -> Described:
    """Describe a fitted model: its output, and for a model fitted on a DataFrame its columns, probed.

    Sample rows come from ``sample`` (rows that do not fit the schema are dropped and counted) or, without it, are
    drawn from the model's own records (``max_rows`` of them, seeded). ModelError if the model cannot be described.
    """
    where = f"{source}: " if source else ""
    try:
        method = infer_output(estimator, output)
        names = feature_names(estimator)
        origin = f"file {sample_name}" if sample is not None else MODEL_SOURCE
        if names is None:
            return _describe_unnamed(estimator, method, sample, origin, max_rows, seed)
        return _describe_named(estimator, names, method, sample, origin, max_rows, seed)
    except ModelError as err:
        raise ModelError(f"{where}{err}") from None


def _load(path: Path, data: bytes, sha256: str | None, trust: Sequence[str]) -> tuple[Any, str]:
    suffix = path.suffix.lower()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and not _SHA256.fullmatch(sha256.strip()):
        raise ModelError(f"--sha256 {sha256[:80]!r} is not 64 hex digits")
    if suffix in PICKLE_SUFFIXES:
        if not sha256:
            raise ModelError(
                f"{path}: a pickle runs code when loaded; give --sha256 with the hash recorded where the file was made"
            )
        if sha256.strip().lower() != actual:
            raise ModelError(f"refusing to unpickle {path}: sha256 {actual} does not match --sha256 {sha256}")
        return unpickle_verified(path, data, trust), actual
    if suffix == SKOPS_SUFFIX:
        if sha256 and sha256.strip().lower() != actual:
            raise ModelError(f"refusing to load {path}: sha256 {actual} does not match --sha256 {sha256}")
        return reviewed_skops_loads(path, data, trust), actual
    raise ModelError(f"unsupported model file {path}: expected {SKOPS_SUFFIX} or one of {PICKLE_SUFFIXES}")


def _notes(result: Described, target: Path, trust: Sequence[str]) -> tuple[str, ...]:
    kind = "named columns: " + ", ".join(f"{c.name} ({c.kind})" for c in result.columns[:8])
    more = f" and {len(result.columns) - 8} more" if len(result.columns) > 8 else ""
    notes = [
        f"input: {kind}{more}" if result.columns else f"input: a list of {len(result.feature_names)} numbers",
        f"output: {result.output.kind} ({result.output.method})",
        f"sample: {len(result.sample)} rows from {result.sample_source}"
        + (f" ({result.dropped_rows} rows dropped: they do not fit the schema)" if result.dropped_rows else ""),
    ]
    if trust:
        notes.append(f"trusted by you: {', '.join(sorted(set(trust)))}")
    notes.append(f"wrote {target} and its manifest")
    return tuple(notes)


def import_model(
    path: Path,
    *,
    models_dir: Path,
    sha256: str | None = None,
    sample: Path | None = None,
    trust: Sequence[str] = (),
    name: str | None = None,
    output: OutputMethod = "predict",
    max_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = DEFAULT_SEED,
) -> ImportResult:
    """Import ``path`` into ``models_dir/<name>.skops`` (+ manifest); see the module docstring.

    ``sha256`` is required for ``.joblib``/``.pkl``/``.pickle`` and checked for ``.skops`` when given. ``trust``:
    exact ``module.Name`` types or globals allowed beyond scikit-learn, numpy and scipy. ``sample``: a CSV or
    Parquet file of real rows (at most ``max_rows`` kept). ModelError (one line) on any refusal.
    """
    path = Path(path)
    name = name or path.stem
    if not NAME_PATTERN.fullmatch(name):
        raise ModelError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    data = path.read_bytes()
    estimator, actual = _load(path, data, sha256, trust)
    frame = read_sample_file(sample, max_rows=max_rows, seed=seed) if sample is not None else None
    described = describe_estimator(
        estimator,
        output=output,
        sample=frame,
        sample_name=sample.name if sample else None,
        max_rows=max_rows,
        seed=seed,
        source=path,
    )
    target = Path(models_dir) / f"{name}{SKOPS_SUFFIX}"
    imported = Imported(
        output=described.output,
        columns=described.columns,
        sample_source=described.sample_source,
        trusted_by_user=tuple(sorted(set(trust))),
        source={"file": path.name, "sha256": actual, "format": path.suffix.lower().lstrip(".")},
    )
    save_model(
        estimator,
        target,
        name=name,
        version=actual[:12],
        feature_names=described.feature_names,
        sample_rows=list(described.sample) if described.columns else np.asarray(described.sample),
        imported=imported,
    )
    model = load_model_file(target)  # exactly what a server will do
    return ImportResult(target, model.info, _notes(described, target, trust))
