"""Suite-wide fixtures: a clean environment for every test and one trained models directory per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _reset_os_environ() -> Iterator[None]:
    """Undo any environment change a test makes (as Flask's own suite does)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with the default models trained once for the whole session."""
    from servingbench.shared_model.models import train_default_models

    path = tmp_path_factory.mktemp("models")
    train_default_models(path)
    return path
