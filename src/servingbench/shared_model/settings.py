"""Server settings, read from ``SERVINGBENCH_*`` environment variables so every worker process sees the same."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from servingbench.shared_model.limits import DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_BODY_BYTES

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "SERVINGBENCH_"
DEFAULT_BLAS_THREADS = 1


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{ENV_PREFIX}{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """What a server needs to know. ``model`` is a model spec: a default name, a file path or a synthetic spec."""

    model: str = "fast"
    models_dir: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    blas_threads: int = DEFAULT_BLAS_THREADS
    route: str = "def"  # FastAPI route style: "def" (thread pool) or "async" (on the event loop)
    allow_pickle: bool = False
    pickle_sha256: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SERVINGBENCH_MODEL``, ``..._MODELS_DIR``, ``..._MAX_BODY_BYTES`` and friends."""
        env = os.environ if env is None else env
        route = env.get(ENV_PREFIX + "ROUTE", "def")
        if route not in ("def", "async"):
            raise SettingsError(f"{ENV_PREFIX}ROUTE={route!r} must be 'def' or 'async'")
        return cls(
            model=env.get(ENV_PREFIX + "MODEL") or "fast",
            models_dir=env.get(ENV_PREFIX + "MODELS_DIR") or None,
            max_body_bytes=_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 2),
            max_batch_rows=_int(env, "MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_ROWS, 1),
            blas_threads=_int(env, "BLAS_THREADS", DEFAULT_BLAS_THREADS, 1),
            route=route,
            allow_pickle=env.get(ENV_PREFIX + "ALLOW_PICKLE", "") == "1",
            pickle_sha256=env.get(ENV_PREFIX + "PICKLE_SHA256") or None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in another process."""
        env = {
            "MODEL": self.model,
            "MAX_BODY_BYTES": str(self.max_body_bytes),
            "MAX_BATCH_ROWS": str(self.max_batch_rows),
            "BLAS_THREADS": str(self.blas_threads),
            "ROUTE": self.route,
            "ALLOW_PICKLE": "1" if self.allow_pickle else "0",
        }
        if self.models_dir:
            env["MODELS_DIR"] = self.models_dir
        if self.pickle_sha256:
            env["PICKLE_SHA256"] = self.pickle_sha256
        return {ENV_PREFIX + k: v for k, v in env.items()}

    def resolved_models_dir(self) -> Path:
        """Where default models live: ``models_dir``, else ``$SERVINGBENCH_MODELS_DIR``, else ``./models``."""
        if self.models_dir:
            return Path(self.models_dir)
        return Path(os.environ.get(ENV_PREFIX + "MODELS_DIR") or Path.cwd() / "models")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
