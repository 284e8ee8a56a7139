"""servingbench: a fair, repeated, microsecond-resolution benchmark of serving a scikit-learn model with FastAPI,
Flask and their peers, under production servers."""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("servingbench")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
