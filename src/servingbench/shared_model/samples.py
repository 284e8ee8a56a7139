"""Sample rows of a model and the request bodies built from them.

An imported model carries up to :data:`MAX_SAMPLE_ROWS` rows: real ones read from a CSV or Parquet file
(:func:`read_sample_file`), or drawn from what the model records (:func:`draw_records`: its categories, and for
numbers its scalers' or trees' ranges). :func:`request_bodies` turns them into the bodies a load run sends, in a
seeded order, so every config is measured on the same sequence of inputs.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servingbench.shared_model.columns import Column, JSONScalar
from servingbench.shared_model.introspect import Hint
from servingbench.shared_model.types import ModelError, ModelInfo

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_SAMPLE_ROWS",
    "MAX_SAMPLE_ROWS",
    "SAMPLE_SUFFIXES",
    "draw_records",
    "frame_records",
    "read_sample_file",
    "request_bodies",
]

#: Rows kept from a sample file, or drawn from the model, when the import does not say.
DEFAULT_SAMPLE_ROWS = 1000
#: Most rows a manifest keeps; more would make every server's GET /model heavy for no better load.
MAX_SAMPLE_ROWS = 5000
SAMPLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: A drawn number without any recorded range: standard normal, the usual scale of a scaled feature.
DEFAULT_NUMBER_SPREAD = 1.0
#: Drawn integers without a recorded range are taken from 0..this.
DEFAULT_INTEGER_HIGH = 100
#: Row i of the list-form fallback payload is 0.1 * i, the payload the harness always sent.
FALLBACK_FEATURE_STEP = 0.1
SINGLE_ENDPOINT = "/predict"
BATCH_ENDPOINT = "/predict/batch"


def read_sample_file(path: Path, *, max_rows: int = DEFAULT_SAMPLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Read a CSV or Parquet file with pandas; keep at most ``max_rows`` rows (a seeded random subset).

    ModelError (one line, naming the file) for a missing, unreadable or empty file or an unknown suffix.
    """
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise ModelError(f"sample file {path}: expected one of {', '.join(SAMPLE_SUFFIXES)}")
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except ImportError as exc:
        raise ModelError(f"sample file {path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read sample file {path}: {str(exc).splitlines()[0][:200]}") from None
    if frame.empty:
        raise ModelError(f"sample file {path} has no rows")
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    return frame.reset_index(drop=True)


def _cell(column: Column, value: Any) -> JSONScalar | None:
    import pandas as pd

    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if column.kind == "number":
        return float(value)
    if column.kind == "integer":
        return int(value)
    if column.kind == "boolean":
        return bool(value)
    return str(value)


def frame_records(columns: Sequence[Column], frame: pd.DataFrame) -> list[dict[str, JSONScalar | None]]:
    """The frame's rows as JSON-native records over ``columns`` (NaN and NA become None)."""
    cells = {column.name: frame[column.name].tolist() for column in columns}
    return [{column.name: _cell(column, cells[column.name][i]) for column in columns} for i in range(len(frame))]


def _draw(column: Column, hint: Hint, rng: random.Random) -> JSONScalar:
    if column.categories:
        return rng.choice(column.categories)
    if column.kind == "boolean":
        return rng.random() < 0.5
    if column.kind == "integer":
        low = math.ceil(hint.low) if hint.low is not None else 0
        high = math.floor(hint.high) if hint.high is not None else DEFAULT_INTEGER_HIGH
        return rng.randint(low, max(low, high))
    if column.kind == "number":
        if hint.low is not None and hint.high is not None:
            return rng.uniform(hint.low, hint.high)
        return rng.gauss(0.0, DEFAULT_NUMBER_SPREAD)
    raise ModelError(f"column {column.name!r} takes free text the model does not describe; pass --sample FILE")


def draw_records(
    columns: Sequence[Column], hints: Mapping[str, Hint], *, count: int, seed: int
) -> list[dict[str, JSONScalar | None]]:
    """``count`` rows drawn from what the model records: its categories, its numbers' ranges (seeded)."""
    rng = random.Random(seed)
    return [{c.name: _draw(c, hints.get(c.name, Hint()), rng) for c in columns} for _ in range(count)]


# --- request bodies ---------------------------------------------------------------------------------------------


def _rows_of(source: ModelInfo | Mapping[str, Any]) -> tuple[bool, list[Any]]:
    """(named, rows) from a ModelInfo, a GET /model document or a manifest."""
    if isinstance(source, ModelInfo):
        rows, named, n_features = list(source.sample), source.named, source.n_features
    else:
        rows = list(source.get("sample") or [])
        named = bool((source.get("input") or {}).get("named"))
        n_features = int(source.get("n_features") or 0)
    if rows:
        return named, rows
    if named:
        raise ValueError("a named-column model without sample rows: re-import it with servingbench import-model")
    if n_features < 1:
        raise ValueError("the model describes neither sample rows nor n_features")
    return False, [[round(FALLBACK_FEATURE_STEP * i, 6) for i in range(n_features)]]


def request_bodies(
    source: ModelInfo | Mapping[str, Any],
    *,
    endpoint: str,
    batch_size: int = 1,
    count: int | None = None,
    seed: int,
) -> tuple[bytes, ...]:
    """``count`` JSON request bodies built from the model's sample rows in a seeded order (default: one pass over
    the rows, ``ceil(rows / batch_size)`` bodies).

    ``source``: a ModelInfo, the ``GET /model`` document or a manifest. ``endpoint``: ``/predict`` (one row a body,
    ``batch_size`` must be 1) or ``/predict/batch`` (``batch_size`` rows a body). Rows are taken from a seeded
    shuffle of the sample, cycling when the bodies need more rows than it has, so the same seed gives every config
    the same sequence. Records for named-column models, lists of floats otherwise. A model without sample rows
    (bundled models saved before import existed, pickles) gets the one row 0.0, 0.1, ... as before.
    """
    if endpoint not in (SINGLE_ENDPOINT, BATCH_ENDPOINT):
        raise ValueError(f"endpoint must be {SINGLE_ENDPOINT!r} or {BATCH_ENDPOINT!r}, got {endpoint!r}")
    if batch_size < 1 or (endpoint == SINGLE_ENDPOINT and batch_size != 1):
        raise ValueError(f"batch_size must be >= 1 (and 1 for {SINGLE_ENDPOINT}), got {batch_size}")
    _, rows = _rows_of(source)
    count = -(-len(rows) // batch_size) if count is None else count
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    encoded = [json.dumps(row, separators=(",", ":"), allow_nan=False) for row in rows]
    bodies = []
    for index in range(count):
        start = index * batch_size
        picked = [encoded[order[(start + k) % len(order)]] for k in range(batch_size)]
        if endpoint == SINGLE_ENDPOINT:
            bodies.append(b'{"features":' + picked[0].encode() + b"}")
        else:
            bodies.append(b'{"instances":[' + ",".join(picked).encode() + b"]}")
    return tuple(bodies)
