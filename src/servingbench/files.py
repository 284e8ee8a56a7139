"""Files the package writes: replaced atomically (a reader, a crash or Ctrl-C never sees half a file), JSON finite.

Every writer of the bundle, the report, the CI gate and the calibration goes through :func:`write_atomic`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FILE_MODE", "dumps_finite", "finite", "write_atomic"]

FILE_MODE = 0o644
"""Mode of every file written: ``mkstemp`` makes files private, and a bundle or report is meant to be shared."""
JSON_INDENT = 1


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file in the same directory, flushed to disk,
    then renamed over ``path``; returns ``path``. The directory must exist."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (in nested mappings, lists and tuples) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps_finite(value: Any, *, indent: int | None = JSON_INDENT) -> str:
    """``value`` as strict JSON (NaN and infinities as null), ending in a newline."""
    return json.dumps(finite(value), indent=indent, allow_nan=False) + "\n"
