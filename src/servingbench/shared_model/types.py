"""The model interface every adapter and the predict core rely on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

JSONScalar = float | int | str | bool

__all__ = ["JSONScalar", "Model", "ModelError", "ModelInfo"]


class ModelError(Exception):
    """A model could not be loaded, verified or run. ``str(err)`` is one line fit for a terminal."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /model`` reports. ``sha256`` is of the model file (or of the synthetic spec)."""

    name: str
    version: str
    sha256: str
    n_features: int
    feature_names: tuple[str, ...]
    sklearn_version: str
    kind: str = "sklearn"  # "sklearn" | "synthetic" | "pickle"
    sample: tuple[tuple[float, ...], ...] = field(default=())

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "n_features": self.n_features,
            "feature_names": list(self.feature_names),
            "sklearn_version": self.sklearn_version,
            "kind": self.kind,
        }


@runtime_checkable
class Model(Protocol):
    """A loaded model: ``predict`` takes a 2-D float64 array (rows x n_features) and returns one JSON scalar a row."""

    @property
    def info(self) -> ModelInfo: ...

    def predict(self, rows: npt.NDArray[np.float64]) -> list[JSONScalar]: ...
