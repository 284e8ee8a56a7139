"""The model interface every adapter and the predict core rely on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from servingbench.shared_model.columns import Column, Output

if TYPE_CHECKING:
    import pandas as pd

JSONScalar = float | int | str | bool
#: One row's answer: a scalar (value or class label) or, for ``predict_proba``, class name -> probability.
Prediction = JSONScalar | dict[str, float | None]

__all__ = ["JSONScalar", "Model", "ModelError", "ModelInfo", "Prediction"]


class ModelError(Exception):
    """A model could not be loaded, verified or run. ``str(err)`` is one line fit for a terminal."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /model`` reports. ``sha256`` is of the model file (or of the synthetic spec).

    ``columns`` non-empty means the model takes named-column records (``{"features": {"age": 41}}``); empty means
    the list contract. ``output`` is set for imported models (and named pickles); ``sample`` holds example rows,
    as lists of floats for the list contract or as records for named columns; ``sample_source`` says where they
    came from (``file ...`` or ``model``).
    """

    name: str
    version: str
    sha256: str
    n_features: int
    feature_names: tuple[str, ...]
    sklearn_version: str
    kind: str = "sklearn"  # "sklearn" | "synthetic" | "pickle"
    sample: tuple[Any, ...] = field(default=())
    columns: tuple[Column, ...] = ()
    output: Output | None = None
    sample_source: str | None = None
    trusted_by_user: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        """True if requests are records keyed by column name."""
        return bool(self.columns)

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names),
            "sklearn_version": self.sklearn_version,
            "kind": self.kind,
        }
        if self.output is None:  # a bundled or pre-import model: the original document, unchanged
            return doc
        doc["input"] = {"named": self.named, "columns": [column.as_json() for column in self.columns]}
        doc["output"] = self.output.as_json()
        doc["trusted_by_user"] = list(self.trusted_by_user)
        doc["sample_source"] = self.sample_source
        doc["sample"] = [dict(row) if isinstance(row, dict) else list(row) for row in self.sample]
        return doc


@runtime_checkable
class Model(Protocol):
    """A loaded model: ``predict`` takes a 2-D float64 array (rows x n_features), or for a named-column model the
    DataFrame built from checked records, and returns one answer a row."""

    @property
    def info(self) -> ModelInfo: ...

    def predict(self, rows: npt.NDArray[np.float64] | pd.DataFrame) -> list[Prediction]: ...
