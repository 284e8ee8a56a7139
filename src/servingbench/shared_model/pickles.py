"""What a pickle or joblib file would import and call, found before anything in it runs.

Unpickling runs whatever callables the file names. Before a model file is unpickled, its opcodes are
interpreted by Python's own reference unpickler (``pickle._Unpickler``, the pure-Python twin of the C one) with
every import answered by an inert placeholder, so the walk follows the real stack, memo and framing rules but no
code from the file runs. It records each global the file names (``module.qualname``) and whether the file calls
it. joblib files are pickles with raw array blocks between their opcodes (and the whole may be zlib, gzip, bz2
or lzma compressed): the walk skips each block by the size its ``NumpyArrayWrapper`` declares, as ``joblib.load``
does, and walks the nested pickle of an object array. Anything it cannot follow refuses the file.

The policy (:func:`refused_globals`): a global must be a class or function that lives in a reviewed package
(scikit-learn, numpy, scipy) and outside the modules that touch files or run code, or one of the standard
library's rebuilding helpers, or a name the user trusted. Only classes and the known array and random-state
rebuilders may be called. This narrows what a file can do; it does not make an untrusted pickle safe, which is
why a pickle also needs its sha256, checked first.
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
import io
import pickle
import struct
import types
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar, cast

import numpy as np

__all__ = [
    "REVIEWED_PACKAGES",
    "PickleImports",
    "PickleInspectionError",
    "inspect_pickle",
    "refused_globals",
]

#: Packages whose classes and functions a model file may name.
REVIEWED_PACKAGES = ("sklearn", "numpy", "scipy")
#: Modules inside the reviewed packages that read or write files, download, compile or run code: never allowed.
DENIED_MODULE_PREFIXES = (
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.lib._datasource",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "numpy._core.memmap",
    "numpy.core.memmap",
    "scipy.io",
    "scipy._lib._testutils",
    "sklearn.datasets",
    "sklearn.utils._testing",
    "sklearn.externals",
)
#: Reviewed names whose objects touch files although numpy re-labels them as plain ``numpy`` members.
DENIED_NAMES = ("numpy.memmap", "numpy.save", "numpy.savez", "numpy.load", "numpy.fromfile", "numpy.DataSource")
#: Functions that rebuild arrays, scalars and random states: the only reviewed functions a file may call.
CALLABLE_FUNCTIONS = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__legacy_ctor",
    }
)
#: Standard-library helpers that pickle uses to rebuild plain objects; none runs code named by the file.
STDLIB_GLOBALS = frozenset(
    {
        "builtins.object",
        "builtins.set",
        "builtins.frozenset",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.slice",
        "builtins.range",
        "builtins.complex",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "copyreg._reconstructor",
        "_codecs.encode",
        "collections.OrderedDict",
        "functools.partial",
    }
)
CYTHON_REBUILDER_PREFIX = "__pyx_unpickle_"
JOBLIB_ARRAY_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
#: Largest decompressed joblib stream walked, in bytes; a larger one is refused rather than filling memory.
MAX_DECOMPRESSED_BYTES = 8 * 1024**3
_READ_CHUNK_BYTES = 16 * 1024 * 1024
_WRAPPER_KEYS = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"})


class PickleInspectionError(ValueError):
    """The file could not be walked (malformed, truncated, or a shape the walk does not know): refuse it."""


@dataclass
class PickleImports:
    """The globals a pickle names (``module.qualname``) and the subset it calls (REDUCE, INST, OBJ, NEWOBJ)."""

    named: set[str] = field(default_factory=set)
    called: set[str] = field(default_factory=set)
    calls_built_objects: bool = False  # the file calls an object it built itself (e.g. a partial): refused
    arrays: int = 0  # joblib raw array blocks skipped


class _Placeholder:
    """Stands in for every global the file names; its class records what the walk does with it."""

    _global = ""
    _imports: PickleImports

    def __new__(cls, *args: object, **kwargs: object) -> _Placeholder:
        cls._imports.called.add(cls._global)
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Placeholder:
        self._imports.calls_built_objects = True
        return _opaque(self._imports)

    def __setstate__(self, state: object) -> None:
        self._state = state

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def add(self, item: object) -> None:
        pass

    def update(self, items: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


def _opaque(imports: PickleImports) -> _Placeholder:
    opaque = type("_Opaque", (_Placeholder,), {"_global": "", "_imports": imports})
    return object.__new__(opaque)


class _ArrayWrapper(_Placeholder):
    """joblib's NumpyArrayWrapper: its state says how many raw bytes follow it in the stream."""


class _Walker(pickle._Unpickler):
    """The reference unpickler with imports answered by placeholders; see the module docstring."""

    # Set by the reference unpickler as it runs (typeshed does not declare them).
    proto: int
    fix_imports: bool
    stack: list[Any]
    append: Callable[[Any], None]
    read: Callable[[int], bytes]
    readinto: Callable[[bytearray], int]

    def __init__(self, stream: BinaryIO, size: int, imports: PickleImports, *, joblib: bool) -> None:
        super().__init__(stream)
        self._stream = stream
        self._size = size
        self._imports = imports
        self._joblib = joblib
        self._classes: dict[str, type[_Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # the same renames the real unpickler applies to old pickles
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        self._imports.named.add(qualified)
        if qualified == "numpy.dtype":
            return np.dtype  # real: the array blocks' sizes come from it; it only parses its arguments
        if qualified not in self._classes:
            base = _ArrayWrapper if self._joblib and qualified == JOBLIB_ARRAY_WRAPPER else _Placeholder
            self._classes[qualified] = type(name, (base,), {"_global": qualified, "_imports": self._imports})
        return self._classes[qualified]

    def persistent_load(self, pid: Any) -> Any:
        raise PickleInspectionError("the pickle refers to persistent ids")

    def load_bytearray8(self) -> None:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > self._size - self._stream.tell():
            raise PickleInspectionError("a BYTEARRAY8 is longer than the file")
        data = bytearray(length)
        self.readinto(data)
        self.append(data)

    def load_build(self) -> None:
        cast("Any", super()).load_build()
        wrapper = self.stack[-1]
        if isinstance(wrapper, _ArrayWrapper):
            self.stack.pop()
            self._skip_array(getattr(wrapper, "_state", None))
            self.append(_opaque(self._imports))

    dispatch: ClassVar[dict[int, Any]] = dict(cast("Any", pickle._Unpickler).dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    dispatch[pickle.BUILD[0]] = load_build

    def _skip_array(self, state: object) -> None:
        shape, dtype, alignment = _wrapper_state(state)
        self._imports.arrays += 1
        if dtype.hasobject:  # joblib pickles object arrays as a nested stream right here
            _Walker(self._stream, self._size, self._imports, joblib=True).load()
            return
        if alignment is not None:
            padding = self._stream.read(1)
            if len(padding) != 1:
                raise PickleInspectionError("truncated array padding")
            self._skip(padding[0])
        count = 1
        for extent in shape:
            count *= extent
        self._skip(count * dtype.itemsize)

    def _skip(self, n_bytes: int) -> None:
        position = self._stream.tell()
        if n_bytes < 0 or position + n_bytes > self._size:
            raise PickleInspectionError(f"an array block of {n_bytes} bytes runs past the end of the file")
        self._stream.seek(position + n_bytes)


def _wrapper_state(state: object) -> tuple[tuple[int, ...], np.dtype[Any], int | None]:
    if not isinstance(state, dict) or not set(state) <= _WRAPPER_KEYS or "dtype" not in state:
        raise PickleInspectionError("a joblib array wrapper has an unexpected state")
    shape, dtype = state.get("shape"), state["dtype"]
    alignment = state.get("numpy_array_alignment_bytes")
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise PickleInspectionError(f"a joblib array wrapper has shape {shape!r}")
    if not isinstance(dtype, np.dtype) or (alignment is not None and type(alignment) is not int):
        raise PickleInspectionError("a joblib array wrapper has a bad dtype or alignment")
    return shape, dtype, alignment


def _joblib_stream(data: bytes) -> io.BytesIO:
    """The decompressed bytes of a joblib file, chosen by joblib's own detection so the walk sees what it loads."""
    from joblib.numpy_pickle_utils import _COMPRESSORS, _detect_compressor

    raw = io.BytesIO(data)
    compressor = _detect_compressor(raw)
    if compressor == "not-compressed":
        return raw
    if compressor not in _COMPRESSORS:  # "compat": the format of joblib < 0.10, with arrays in companion files
        raise PickleInspectionError(f"joblib format {compressor!r} is not supported; re-save with a current joblib")
    reader = _COMPRESSORS[compressor].decompressor_file(raw)
    out = io.BytesIO()
    while chunk := reader.read(_READ_CHUNK_BYTES):
        out.write(chunk)
        if out.tell() > MAX_DECOMPRESSED_BYTES:
            raise PickleInspectionError(f"decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")
    out.seek(0)
    return out


def inspect_pickle(data: bytes, *, joblib: bool) -> PickleImports:
    """Walk a pickle (``joblib=False``) or joblib file's bytes without running them; see the module docstring.

    Raises :class:`PickleInspectionError` for anything the walk cannot follow to the pickle's STOP.
    """
    imports = PickleImports()
    try:
        stream = _joblib_stream(data) if joblib else io.BytesIO(data)
        size = len(stream.getbuffer())
        _Walker(stream, size, imports, joblib=joblib).load()
    except PickleInspectionError:
        raise
    except (Exception, RecursionError) as exc:  # whatever the walk trips on, the file is refused
        raise PickleInspectionError(f"cannot walk the pickle: {type(exc).__name__}: {exc}"[:300]) from None
    return imports


def _resolve(qualified: str) -> object | None:
    """Import the module of a reviewed global and look the name up; None if it does not resolve."""
    parts = qualified.split(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core's shims warn on import; the walk only needs the names
        return _resolve_parts(parts)


def _resolve_parts(parts: list[str]) -> object | None:
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: object = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in parts[split:]:
            if attr.startswith("__") and attr.endswith("__"):
                return None
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


@functools.cache
def _denied_objects() -> frozenset[int]:
    found = (_resolve(name) for name in DENIED_NAMES)
    return frozenset(id(obj) for obj in found if obj is not None)


def _home(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    if module is None and isinstance(obj, np.ufunc):
        module = "numpy"
    return module if isinstance(module, str) else ""


def _in_reviewed(module: str) -> bool:
    top = module.split(".")[0]
    return top in REVIEWED_PACKAGES and not module.startswith(DENIED_MODULE_PREFIXES)


def _reviewed_kind(qualified: str) -> str | None:
    """'class' or 'function' for a global that resolves inside the reviewed packages; None otherwise."""
    if qualified.split(".")[0] not in REVIEWED_PACKAGES or qualified.startswith(DENIED_MODULE_PREFIXES):
        return None
    obj = _resolve(qualified)
    if isinstance(obj, types.ModuleType) or not _in_reviewed(_home(obj)) or id(obj) in _denied_objects():
        return None  # e.g. "sklearn.base.platform.os.system": reachable through sklearn, but not sklearn's
    if isinstance(obj, type):
        return "class"
    if callable(obj):
        return "function"
    return None


def _rebuilder(name: str) -> bool:
    # Cython's generated __pyx_unpickle_<Class>(type, checksum, state) rebuilds only the class it is named for.
    return name in CALLABLE_FUNCTIONS or name.rpartition(".")[2].startswith(CYTHON_REBUILDER_PREFIX)


def refused_globals(imports: PickleImports, trusted: Iterable[str] = ()) -> list[str]:
    """Why each refused global is refused, one short phrase each; an empty list means the file may be loaded."""
    allowed = set(trusted) | STDLIB_GLOBALS | {JOBLIB_ARRAY_WRAPPER}
    problems: list[str] = []
    for name in sorted(imports.named):
        if name in allowed:
            continue
        kind = _reviewed_kind(name)
        if kind is None:
            problems.append(f"{name} (not in {', '.join(REVIEWED_PACKAGES)}; `import-model --trust {name}` allows it)")
        elif name in imports.called and kind != "class" and not _rebuilder(name):
            problems.append(f"{name} (a function the file calls while loading)")
    if imports.calls_built_objects:
        problems.append("the file calls an object it builds while loading")
    return problems
