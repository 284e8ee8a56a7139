"""A pickle's imports are found without running it: plain pickles, joblib files (compressed or not, with raw array
blocks and object arrays between the opcodes), and the tricks that hide a callable behind a reviewed name."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from servingbench.shared_model.pickles import PickleInspectionError, inspect_pickle, refused_globals
from tests.unit.byo_models import Mkdir, hgb_from_dtype, onehot_pipeline

COMPRESSIONS: list[Any] = [0, 3, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)]


def _joblib_bytes(obj: object, compress: Any = 0) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize("compress", COMPRESSIONS, ids=str)
def test_a_fitted_pipeline_in_joblib_names_only_reviewed_globals(compress: Any) -> None:
    imports = inspect_pickle(_joblib_bytes(onehot_pipeline(), compress), joblib=True)
    assert imports.arrays > 0  # the walk crossed joblib's raw array blocks
    assert "sklearn.pipeline.Pipeline" in imports.named
    assert refused_globals(imports) == []


def test_hist_gradient_boosting_with_categories_passes_as_pickle_and_joblib() -> None:
    model = hgb_from_dtype()
    assert refused_globals(inspect_pickle(pickle.dumps(model), joblib=False)) == []
    assert refused_globals(inspect_pickle(_joblib_bytes(model), joblib=True)) == []


@pytest.mark.parametrize("compress", [0, 3], ids=str)
def test_a_payload_after_an_array_block_is_found(tmp_path: Path, compress: Any) -> None:
    # joblib writes the array's raw bytes inline; a walk that stops there would miss what follows
    doc = {"a_weights": np.arange(1000.0), "z_payload": Mkdir(tmp_path / "ran")}
    problems = refused_globals(inspect_pickle(_joblib_bytes(doc, compress), joblib=True))
    assert problems and problems[0].startswith("posix.mkdir")
    assert not (tmp_path / "ran").exists()


def test_a_payload_inside_an_object_array_is_found(tmp_path: Path) -> None:
    cells = np.empty(2, dtype=object)
    cells[:] = ["fine", Mkdir(tmp_path / "ran")]
    problems = refused_globals(inspect_pickle(_joblib_bytes({"cells": cells}), joblib=True))
    assert any(p.startswith("posix.mkdir") for p in problems)
    assert not (tmp_path / "ran").exists()


def _stack_global_call(module: str, name: str, argument: str) -> bytes:
    """A protocol-4 pickle that imports ``module.name`` by STACK_GLOBAL and calls it with one string."""

    def text(value: str) -> bytes:
        data = value.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data

    body = text(module) + pickle.MEMOIZE + text(name) + pickle.MEMOIZE + pickle.STACK_GLOBAL + pickle.MEMOIZE
    body += text(argument) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    return pickle.PROTO + b"\x04" + body


def test_a_callable_reached_through_a_reviewed_module_is_refused() -> None:
    data = _stack_global_call("sklearn.base", "platform.os.system", "true")
    problems = refused_globals(inspect_pickle(data, joblib=False))
    assert problems == [
        "sklearn.base.platform.os.system (not in sklearn, numpy, scipy; "
        "`import-model --trust sklearn.base.platform.os.system` allows it)"
    ]


@pytest.mark.parametrize(
    ("module", "name"), [("numpy", "memmap"), ("numpy", "load"), ("numpy.testing._private.utils", "runstring")]
)
def test_reviewed_names_that_touch_files_or_run_code_are_refused(module: str, name: str) -> None:
    assert refused_globals(inspect_pickle(_stack_global_call(module, name, "x"), joblib=False))


def test_a_reviewed_function_called_while_loading_is_refused() -> None:
    problems = refused_globals(inspect_pickle(_stack_global_call("numpy", "array", "x"), joblib=False))
    assert problems == ["numpy.array (a function the file calls while loading)"]


def test_trust_allows_a_named_global() -> None:
    imports = inspect_pickle(pickle.dumps(Mkdir(Path("never"))), joblib=False)
    assert refused_globals(imports, trusted=["posix.mkdir"]) == []


@pytest.mark.parametrize("data", [b"", b"\x80\x04garbage", pickle.dumps([1, 2])[:-3], b"not a pickle at all"])
def test_what_cannot_be_walked_is_refused(data: bytes) -> None:
    with pytest.raises(PickleInspectionError):
        inspect_pickle(data, joblib=False)


def test_an_array_block_longer_than_the_file_is_refused() -> None:
    data = _joblib_bytes({"w": np.arange(4096.0)})
    with pytest.raises(PickleInspectionError):
        inspect_pickle(data[: len(data) // 2], joblib=True)


def test_nothing_runs_during_inspection(tmp_path: Path) -> None:
    inspect_pickle(pickle.dumps(Mkdir(tmp_path / "ran")), joblib=False)
    inspect_pickle(_joblib_bytes(Mkdir(tmp_path / "ran2"), 3), joblib=True)
    assert sorted(os.listdir(tmp_path)) == []
