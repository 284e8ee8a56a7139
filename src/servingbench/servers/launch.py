"""How each server config is started: the exact command line and environment, shared by the CLI and the harness."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal, get_args

from servingbench.shared_model import Settings
from servingbench.shared_model.threads import THREAD_ENV_VARS

__all__ = [
    "DEFAULT_GTHREAD_THREADS",
    "FASTAPI_THREADPOOL",
    "FRAMEWORK_SERVERS",
    "Framework",
    "LaunchCommand",
    "Route",
    "ServerConfig",
    "ServerKind",
    "launch_command",
    "server_versions",
]

Framework = Literal["fastapi", "flask"]
ServerKind = Literal["uvicorn", "gunicorn-uvicorn", "gunicorn-sync", "gunicorn-gthread"]
Route = Literal["def", "async"]

#: Which server kinds can run which framework (ASGI vs WSGI).
FRAMEWORK_SERVERS: dict[str, tuple[str, ...]] = {
    "fastapi": ("uvicorn", "gunicorn-uvicorn"),
    "flask": ("gunicorn-sync", "gunicorn-gthread"),
}
DEFAULT_SERVER: dict[str, ServerKind] = {"fastapi": "uvicorn", "flask": "gunicorn-sync"}
#: AnyIO's default thread-pool size, which runs FastAPI's ``def`` routes: its in-flight limit per process.
FASTAPI_THREADPOOL = 40
#: gthread threads per worker by default: the same in-flight limit per process as FastAPI's thread pool.
DEFAULT_GTHREAD_THREADS = FASTAPI_THREADPOOL
#: Seconds a gunicorn worker may spend on one request before it is killed (the heavy model must fit).
GUNICORN_TIMEOUT_S = 120
GRACEFUL_TIMEOUT_S = 5
#: Keep-alive, in seconds, for every server that keeps connections open.
KEEPALIVE_S = 5
#: The packages whose versions every report prints.
SERVER_PACKAGES = (
    *("fastapi", "starlette", "uvicorn", "uvicorn-worker", "httptools", "uvloop", "gunicorn", "flask", "werkzeug"),
    *("pydantic", "scikit-learn", "numpy"),
)
_APP = {"fastapi": "servingbench.servers.fastapi_app:create_app", "flask": "servingbench.servers.flask_app:create_app"}


@dataclass(frozen=True)
class ServerConfig:
    """One server config of the matrix. ``threads`` applies to gunicorn-gthread only."""

    framework: Framework
    server: ServerKind
    workers: int = 1
    threads: int | None = None
    route: Route = "def"

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORK_SERVERS:
            raise ValueError(f"framework must be one of {sorted(FRAMEWORK_SERVERS)}, got {self.framework!r}")
        if self.server not in FRAMEWORK_SERVERS[self.framework]:
            allowed = ", ".join(FRAMEWORK_SERVERS[self.framework])
            raise ValueError(f"{self.framework} runs on {allowed}; not on {self.server!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threads is not None and (self.server != "gunicorn-gthread" or self.threads < 1):
            raise ValueError("threads applies to gunicorn-gthread only and must be at least 1")
        if self.route not in get_args(Route) or (self.route == "async" and self.framework != "fastapi"):
            raise ValueError("route 'async' is a FastAPI option; route must be 'def' or 'async'")

    @property
    def effective_threads(self) -> int | None:
        if self.server == "gunicorn-gthread":
            return self.threads or DEFAULT_GTHREAD_THREADS
        return None

    def label(self) -> str:
        """A human label, e.g. ``FastAPI / uvicorn (def) x1``."""
        name = {"fastapi": "FastAPI", "flask": "Flask"}[self.framework]
        extra = f" ({self.route})" if self.framework == "fastapi" else ""
        if self.effective_threads:
            extra = f" ({self.effective_threads} threads)"
        return f"{name} / {self.server}{extra} x{self.workers}"

    def inflight_per_worker(self) -> int:
        """How many requests one worker process can work on at once."""
        if self.server == "gunicorn-sync":
            return 1
        if self.server == "gunicorn-gthread":
            return self.effective_threads or 1
        return 1 if self.route == "async" else FASTAPI_THREADPOOL

    def keepalive(self) -> bool:
        """Whether the server keeps connections open between requests (gunicorn sync closes every one)."""
        return self.server != "gunicorn-sync"


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one line a person could paste (environment settings first)."""
        import shlex

        settings = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()) if k.startswith("SERVINGBENCH_")]
        return " ".join([*settings, *map(shlex.quote, self.argv)])


def _uvicorn_argv(config: ServerConfig, host: str, port: int) -> list[str]:
    return [
        *("-m", "uvicorn", _APP["fastapi"], "--factory", "--host", host, "--port", str(port)),
        *("--workers", str(config.workers), "--http", "httptools", "--loop", "uvloop"),
        *("--no-access-log", "--log-level", "warning", "--timeout-keep-alive", str(KEEPALIVE_S)),
    ]


def _gunicorn_argv(config: ServerConfig, host: str, port: int) -> list[str]:
    worker_class = {"gunicorn-uvicorn": "uvicorn_worker.UvicornWorker", "gunicorn-sync": "sync"}
    argv = ["-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(config.workers)]
    argv += ["--worker-class", worker_class.get(config.server, "gthread")]
    if config.server == "gunicorn-gthread":
        argv += ["--threads", str(config.effective_threads)]
    argv += ["--timeout", str(GUNICORN_TIMEOUT_S), "--graceful-timeout", str(GRACEFUL_TIMEOUT_S)]
    argv += ["--keep-alive", str(KEEPALIVE_S), "--log-level", "warning"]
    # uvicorn has no request-line limit; lift gunicorn's so a long URL is a 404 from the app on both.
    argv += ["--limit-request-line", "0", f"{_APP[config.framework]}()"]
    return argv


def launch_command(
    config: ServerConfig,
    *,
    host: str,
    port: int,
    model: str,
    blas_threads: int = 1,
    settings: Settings | None = None,
    base_env: dict[str, str] | None = None,
) -> LaunchCommand:
    """The argv and full environment that start ``config`` on ``host:port`` serving ``model``."""
    settings = (settings or Settings()).with_(model=model, blas_threads=blas_threads, route=config.route)
    argv = _uvicorn_argv(config, host, port) if config.server == "uvicorn" else _gunicorn_argv(config, host, port)
    env = dict(os.environ if base_env is None else base_env)
    env.update(settings.to_env())
    env.update({name: str(blas_threads) for name in THREAD_ENV_VARS})
    env["PYTHONUNBUFFERED"] = "1"
    return LaunchCommand([sys.executable, *argv], env)


def server_versions() -> dict[str, str]:
    """Installed versions of the packages that make up the server stacks."""
    names = SERVER_PACKAGES
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
