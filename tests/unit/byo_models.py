"""Small models fitted on a generated DataFrame, as a team's training job would make them (shared by the tests)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

N_ROWS = 120
CITIES = ("Bergen", "Oslo", "Tromso")
COLUMNS = ("age", "income", "city", "member")
CLASSES = ("no", "yes")
HGB_ITERATIONS = 5


def frame(n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """age (int), income (float), city (string), member (bool)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n_rows),
            "income": rng.normal(50.0, 10.0, n_rows),
            "city": rng.choice(list(CITIES), n_rows),
            "member": rng.random(n_rows) > 0.5,
        }
    )


def labels(data: pd.DataFrame) -> npt.NDArray[Any]:
    return np.where((data["age"] > 45) ^ (data["city"] == "Oslo"), CLASSES[1], CLASSES[0])


@functools.cache  # fitted once per session; nothing mutates a fitted model
def onehot_pipeline() -> Any:
    """ColumnTransformer + OneHotEncoder (unknown categories are errors) + LogisticRegression; ``member`` dropped."""
    columns = ColumnTransformer([("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city"])])
    data = frame()
    return make_pipeline(columns, LogisticRegression()).fit(data, labels(data))


@functools.cache
def selector_pipeline() -> Any:
    """Columns picked by a name pattern, imputed (so null is fine), unknown cities ignored."""
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    columns = ColumnTransformer(
        [
            ("num", numbers, make_column_selector(pattern="^(?:age|income)$")),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    data = frame()
    return make_pipeline(columns, LogisticRegression()).fit(data, labels(data))


@functools.cache
def hgb_from_dtype() -> Any:
    """HistGradientBoosting with ``categorical_features="from_dtype"`` on a pandas category column."""
    data = frame()
    fitted = data.assign(city=data["city"].astype("category"))
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=HGB_ITERATIONS)
    return model.fit(fitted, labels(data))


@functools.cache
def hgb_explicit() -> Any:
    """HistGradientBoosting told its categorical column by name."""
    data = frame()
    model = HistGradientBoostingClassifier(categorical_features=["city"], max_iter=HGB_ITERATIONS)
    return model.fit(data, labels(data))


@functools.cache
def numeric_frame_pipeline() -> Any:
    """A plain numeric pipeline fitted on named numeric columns."""
    data = frame()[["age", "income"]]
    return make_pipeline(StandardScaler(), Ridge()).fit(data, data["income"] * 2.0)


@functools.cache
def numeric_array_pipeline() -> Any:
    """The same pipeline fitted on an array: no names, the list contract."""
    data = frame()[["age", "income"]].to_numpy(dtype=np.float64)
    return make_pipeline(StandardScaler(), Ridge()).fit(data, data[:, 1] * 2.0)


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A team's own transformer: a type outside the reviewed packages."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def transform(self, x: Any) -> Any:
        return np.asarray(x, dtype=np.float64) * 2.0


@functools.cache
def custom_pipeline() -> Any:
    data = frame()[["age", "income"]].to_numpy(dtype=np.float64)
    return make_pipeline(Doubler(), Ridge()).fit(data, data[:, 1])


class Mkdir:
    """Unpickling this creates a directory: stands in for any code a malicious file would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))
