"""Pin native (BLAS, OpenMP) thread pools so every server worker does the same work per request.

Environment variables only reach a native library that is loaded after they are set, so call
:func:`limit_native_threads` before numpy is imported in a fresh process; it also applies the limit
at runtime through threadpoolctl for the libraries already loaded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["THREAD_ENV_VARS", "limit_native_threads"]

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_POOL_KEYS = ("user_api", "internal_api", "num_threads", "version")

# The threadpoolctl limiter must stay referenced for the limit to stay in effect.
_limiter: Any = None


def limit_native_threads(n: int = 1) -> dict[str, Any]:
    """Limit BLAS/OpenMP pools to ``n`` threads (n >= 1) via env vars and threadpoolctl; describe what is in effect.

    The returned dict has ``requested``, ``env`` (each variable's value), ``numpy_imported_first`` (True means the
    env vars came too late for libraries already loaded) and ``threadpools`` (one entry a loaded native library).
    """
    global _limiter
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    numpy_imported_first = "numpy" in sys.modules
    for var in THREAD_ENV_VARS:
        if os.environ.get(var) != str(n):
            os.environ[var] = str(n)
    _limiter = threadpool_limits(limits=n)
    return {
        "requested": n,
        "env": {var: os.environ.get(var) for var in THREAD_ENV_VARS},
        "numpy_imported_first": numpy_imported_first,
        "threadpools": [{key: pool.get(key) for key in _POOL_KEYS} for pool in threadpool_info()],
    }
