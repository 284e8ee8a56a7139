"""Read a fitted scikit-learn model's input schema and output from the model itself.

The column names are the model's ``feature_names_in_``. What each column takes comes from what the fitted model
records: the categories of its ``OneHotEncoder``/``OrdinalEncoder`` (inside a ``ColumnTransformer``, a
``Pipeline``, or a ``HistGradientBoosting`` model's own encoder for ``categorical_features="from_dtype"``), and
for numbers the range its scalers or trees saw, which :mod:`.samples` draws rows from. A sample file's dtypes,
when there is one, say which columns are integers, booleans or free strings.

Whether a column takes null, and whether an unseen category is refused, is not guessed: :func:`probe_columns`
asks the model, one column at a time, on a real row. The schema then refuses exactly what the model would fail on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from servingbench.shared_model.columns import Column, ColumnKind, JSONScalar, Output, OutputMethod, build_frame
from servingbench.shared_model.columns import records_to_values as _values
from servingbench.shared_model.types import ModelError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Hint",
    "accepts",
    "column_hints",
    "feature_names",
    "infer_columns",
    "infer_output",
    "predict_records",
    "probe_columns",
]

#: A value no model was trained on, used to ask whether an unseen category is refused.
UNSEEN_CATEGORY = "\u2063servingbench-unseen\u2063"
#: An unseen number for numeric categories: this far past the largest known one.
UNSEEN_NUMBER_OFFSET = 1_000_003
#: A tree's thresholds are widened by this share of their span on each side, so drawn rows reach past every split.
TREE_RANGE_MARGIN = 0.1
#: A scaler's range: mean +- this many standard deviations.
SCALER_SPREAD = 2.0


@dataclass
class Hint:
    """What the fitted model says about one input column: known categories and a numeric range."""

    categories: list[JSONScalar] | None = None
    missing_seen: bool = False  # the encoder saw a missing value at fit time
    low: float | None = None
    high: float | None = None

    def set_range(self, low: float, high: float) -> None:
        if self.low is None and math.isfinite(low) and math.isfinite(high) and low <= high:
            self.low, self.high = low, high  # the first step that sees the raw column knows its raw range


def feature_names(estimator: Any) -> tuple[str, ...] | None:
    """The column names the model was fitted with (a DataFrame's), or None if it was fitted on an array."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    return tuple(str(n) for n in names)


def _json_scalar(value: Any) -> JSONScalar | None:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --- walking the fitted model ---------------------------------------------------------------------------------


def column_hints(estimator: Any, names: Sequence[str]) -> dict[str, Hint]:
    """Categories and ranges per input column, from everything in the fitted model that sees the raw columns."""
    hints = {name: Hint() for name in names}
    _walk(estimator, list(names), hints)
    return hints


def _walk(est: Any, names: list[str], hints: dict[str, Hint]) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if est is None or isinstance(est, str) or not names:  # "passthrough", "drop"
        return
    if isinstance(est, Pipeline):
        _walk_pipeline(est, names, hints)
    elif isinstance(est, ColumnTransformer):
        for _, transformer, selection in est.transformers_:
            _walk(transformer, _select(selection, names), hints)
    else:
        _encoder_hints(est, names, hints)
        _scaler_hints(est, names, hints)
        _tree_hints(est, names, hints)
        _hist_gradient_boosting_hints(est, names, hints)


def _walk_pipeline(pipeline: Any, names: list[str], hints: dict[str, Hint]) -> None:
    current = names
    for _, step in pipeline.steps:
        if step is None or step == "passthrough":
            continue
        _walk(step, current, hints)
        try:
            out = [str(n) for n in step.get_feature_names_out(current)]
        except Exception:  # a step without names out ends what can be said about the raw columns
            return
        if out != current:
            return  # the next step sees derived columns, not the raw ones
        current = out


def _select(selection: Any, names: list[str]) -> list[str]:
    """The names a ColumnTransformer's fitted column selection picks out of ``names``."""
    if isinstance(selection, str):
        return [selection]
    if isinstance(selection, slice):
        return names[selection]
    picked = np.asarray(selection).reshape(-1)
    if picked.dtype == bool:
        return [name for name, keep in zip(names, picked, strict=False) if keep]
    if picked.dtype.kind in "iu":
        return [names[int(i)] for i in picked]
    return [str(name) for name in picked]


def _encoder_hints(est: Any, names: list[str], hints: dict[str, Hint]) -> None:
    categories = getattr(est, "categories_", None)
    if categories is None or len(categories) != len(names):
        return
    for name, known in zip(names, categories, strict=True):
        values = [_json_scalar(value) for value in np.asarray(known, dtype=object)]
        hint = hints.setdefault(name, Hint())
        hint.missing_seen = hint.missing_seen or None in values
        if hint.categories is None:
            hint.categories = [value for value in values if value is not None]


def _scaler_hints(est: Any, names: list[str], hints: dict[str, Hint]) -> None:
    def each(low: Any, high: Any) -> None:
        for name, lo, hi in zip(names, np.ravel(low), np.ravel(high), strict=False):
            hints.setdefault(name, Hint()).set_range(float(lo), float(hi))

    if getattr(est, "data_min_", None) is not None:  # MinMaxScaler
        each(est.data_min_, est.data_max_)
    elif getattr(est, "mean_", None) is not None and getattr(est, "scale_", None) is not None:  # StandardScaler
        mean, scale = np.asarray(est.mean_, dtype=float), np.asarray(est.scale_, dtype=float)
        each(mean - SCALER_SPREAD * scale, mean + SCALER_SPREAD * scale)
    elif getattr(est, "center_", None) is not None and getattr(est, "scale_", None) is not None:  # RobustScaler
        center, scale = np.asarray(est.center_, dtype=float), np.asarray(est.scale_, dtype=float)
        each(center - scale, center + scale)
    elif getattr(est, "max_abs_", None) is not None:  # MaxAbsScaler
        each(-np.asarray(est.max_abs_, dtype=float), np.asarray(est.max_abs_, dtype=float))


def _trees(est: Any) -> list[Any]:
    if getattr(est, "tree_", None) is not None:
        return [est.tree_]
    members = getattr(est, "estimators_", None)
    if members is None:
        return []
    return [tree.tree_ for tree in np.ravel(np.asarray(members, dtype=object)) if hasattr(tree, "tree_")]


def _tree_hints(est: Any, names: list[str], hints: dict[str, Hint]) -> None:
    trees = _trees(est)
    for index, name in enumerate(names):
        cuts = np.concatenate([tree.threshold[tree.feature == index] for tree in trees]) if trees else np.empty(0)
        if cuts.size:
            span = float(cuts.max() - cuts.min()) or 1.0
            margin = TREE_RANGE_MARGIN * span
            hints.setdefault(name, Hint()).set_range(float(cuts.min()) - margin, float(cuts.max()) + margin)


def _hist_gradient_boosting_hints(est: Any, names: list[str], hints: dict[str, Hint]) -> None:
    mapper = getattr(est, "_bin_mapper", None)
    thresholds = getattr(mapper, "bin_thresholds_", None)
    flags = getattr(est, "is_categorical_", None)
    order = names
    preprocessor = getattr(est, "_preprocessor", None)
    if preprocessor is not None:  # categorical_features="from_dtype": its own encoder, columns reordered
        _walk(preprocessor, names, hints)
        order = [n for _, t, sel in preprocessor.transformers_ if not isinstance(t, str) for n in _select(sel, names)]
    if thresholds is None or len(thresholds) != len(order):
        return
    flags = np.zeros(len(order), dtype=bool) if flags is None else np.asarray(flags, dtype=bool)
    for name, cuts, categorical in zip(order, thresholds, flags, strict=False):
        cuts = np.asarray(cuts, dtype=float)
        if cuts.size == 0:
            continue
        hint = hints.setdefault(name, Hint())
        if categorical and preprocessor is None and hint.categories is None:
            hint.categories = [int(c) if float(c).is_integer() else float(c) for c in cuts]
        elif not categorical:
            span = float(cuts.max() - cuts.min()) or 1.0
            hint.set_range(float(cuts.min()) - TREE_RANGE_MARGIN * span, float(cuts.max()) + TREE_RANGE_MARGIN * span)


# --- columns ----------------------------------------------------------------------------------------------------


def _kind_from_dtype(dtype: Any) -> ColumnKind | None:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "number"
    return None  # strings, categoricals, objects


def _kind_from_categories(categories: list[JSONScalar]) -> ColumnKind:
    if all(isinstance(c, str) for c in categories):
        return "category"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in categories):
        return "integer"
    return "number"


def _column(name: str, hint: Hint, sample: pd.DataFrame | None) -> Column:
    categories = hint.categories
    if sample is None:
        kind: ColumnKind = "number" if categories is None else _kind_from_categories(categories)
        return Column(name, kind, categories=None if categories is None else tuple(categories))
    dtype = sample[name].dtype
    kind_or_none = _kind_from_dtype(dtype)
    if kind_or_none is not None:
        return Column(name, kind_or_none, categories=None if categories is None else tuple(categories))
    if categories is None and str(dtype) == "category":
        categories = [_json_scalar(c) for c in dtype.categories if _json_scalar(c) is not None]  # type: ignore[misc]
    if categories is None:
        return Column(name, "string")
    return Column(name, _kind_from_categories(categories), categories=tuple(categories))


def infer_columns(estimator: Any, names: Sequence[str], sample: pd.DataFrame | None = None) -> list[Column]:
    """The columns of a named model, before probing (every column non-null, unseen categories accepted).

    ``sample``: a frame with at least these columns; its dtypes decide integer, boolean and string columns.
    """
    if sample is not None:
        missing = [name for name in names if name not in sample.columns]
        if missing:
            raise ModelError(f"the sample file lacks the model's columns {missing[:10]}")
    hints = column_hints(estimator, names)
    return [_column(name, hints[name], sample) for name in names]


def predict_records(
    estimator: Any, columns: Sequence[Column], records: Sequence[Mapping[str, Any]], method: str
) -> Any:
    """Call the model's ``method`` on records through the same frame the server builds."""
    frame = build_frame(columns, _values(columns, records))
    return getattr(estimator, method)(frame)


def accepts(estimator: Any, columns: Sequence[Column], record: Mapping[str, Any], method: str) -> bool:
    """True if the model predicts ``record`` without an error (warnings ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. OneHotEncoder(handle_unknown="warn") warns and goes on: accepted
        try:
            predict_records(estimator, columns, [record], method)
        except Exception:
            return False
    return True


def _unseen(column: Column) -> JSONScalar:
    if column.kind in ("category", "string"):
        return UNSEEN_CATEGORY
    known = [float(c) for c in column.categories or () if not isinstance(c, str)]
    top = max(known, default=0.0) + UNSEEN_NUMBER_OFFSET
    return int(top) if column.kind == "integer" else top + 0.5


def probe_columns(
    estimator: Any, columns: Sequence[Column], base: Mapping[str, Any], method: OutputMethod
) -> list[Column]:
    """Ask the model, column by column on the row ``base``, whether it takes null and an unseen category.

    Raises ModelError if the model fails on ``base`` itself (the columns' kinds do not fit the model).
    """
    columns = list(columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            predict_records(estimator, columns, [base], method)
        except Exception as exc:
            raise ModelError(f"the model fails on a row built from its schema: {_first_line(exc)}") from None
    probed = []
    for column in columns:
        nullable = accepts(estimator, columns, {**base, column.name: None}, method)
        unknown_ok = column.categories is None or accepts(
            estimator, columns, {**base, column.name: _unseen(column)}, method
        )
        probed.append(replace(column, nullable=nullable, unknown_ok=unknown_ok))
    return probed


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


# --- output -----------------------------------------------------------------------------------------------------


def infer_output(estimator: Any, method: OutputMethod) -> Output:
    """What ``method`` answers: class probabilities, a class label, or a value. ModelError if it cannot."""
    from sklearn.base import is_classifier

    classes = getattr(estimator, "classes_", None)
    labels = () if classes is None else tuple(_json_scalar(c) for c in classes)
    if any(label is None for label in labels):
        raise ModelError("the classifier has a missing value among its classes")
    known = tuple(label for label in labels if label is not None)
    if method == "predict_proba":
        if not hasattr(estimator, "predict_proba") or not known:
            raise ModelError("output predict_proba needs a classifier with predict_proba and classes_")
        names = Output(classes=known).class_names
        if len(set(names)) != len(names):
            raise ModelError(f"two classes have the same name as JSON keys: {list(names)}")
        return Output("predict_proba", "probabilities", known)
    if is_classifier(estimator) and known:
        return Output("predict", "label", known)
    return Output("predict", "value")
