"""How each server config is started: the exact command line and environment, shared by the CLI and the harness.

Which frameworks and servers exist, and how each server is invoked, is the registry's (:mod:`.registry`); this
module checks one combination and turns it into a command.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata

from servingbench.servers.registry import (
    FRAMEWORKS,
    Framework,
    LaunchTarget,
    ServerKind,
    framework,
    server,
    servers_for,
    stack_packages,
)
from servingbench.shared_model import Settings
from servingbench.shared_model.threads import THREAD_ENV_VARS

__all__ = [
    "LaunchCommand",
    "ServerConfig",
    "default_server",
    "launch_command",
    "server_versions",
]


def default_server(framework_name: str) -> str:
    """The server kind a framework runs on when none is named: the first in the registry that speaks its interface."""
    return servers_for(framework_name)[0]


@dataclass(frozen=True)
class ServerConfig:
    """One server config of the matrix: a framework (and route style) on a server kind, with workers and threads.

    ``route`` defaults to the framework's first style; ``threads`` applies to servers that take a threads knob.
    Raises ``ValueError`` (one line) for a combination the registry does not allow.
    """

    framework: str
    server: str
    workers: int = 1
    threads: int | None = None
    route: str | None = None

    def __post_init__(self) -> None:
        stack = framework(self.framework)
        kind = server(self.server)
        if stack.interface not in kind.interfaces:
            allowed = ", ".join(servers_for(self.framework))
            raise ValueError(f"{self.framework} ({stack.interface.upper()}) runs on {allowed}; not on {self.server!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threads is not None and not kind.takes_threads(stack.interface):
            takers = [name for name in servers_for(self.framework) if server(name).takes_threads(stack.interface)]
            where = f"it does on {', '.join(takers)}" if takers else f"an {stack.interface.upper()} app sets its own"
            raise ValueError(f"threads does not apply to {self.framework} on {self.server} ({where})")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.route is None:
            object.__setattr__(self, "route", stack.default_route)
        elif self.route not in stack.routes:
            raise ValueError(f"{self.framework} has route styles {', '.join(stack.routes)}; not {self.route!r}")

    @property
    def stack(self) -> Framework:
        return FRAMEWORKS[self.framework]

    @property
    def kind(self) -> ServerKind:
        return server(self.server)

    @property
    def route_style(self) -> str:
        """The route style (never None after construction)."""
        return self.route or self.stack.default_route

    @property
    def has_route_choice(self) -> bool:
        """Whether the framework offers more than one route style (the label and records name it then)."""
        return len(self.stack.routes) > 1

    @property
    def effective_threads(self) -> int | None:
        """Threads per worker where the server has a threads knob for this interface (the plan's, else its default)."""
        return (self.threads or self.kind.default_threads) if self.kind.takes_threads(self.stack.interface) else None

    def label(self) -> str:
        """A human label, e.g. ``FastAPI / uvicorn (def) x1``."""
        extra = f" ({self.route_style})" if self.has_route_choice else ""
        if self.effective_threads:
            extra = f" ({self.effective_threads} threads)"
        return f"{self.stack.label} / {self.server}{extra} x{self.workers}"

    def inflight_per_worker(self) -> int:
        """How many requests one worker process can work on at once."""
        if self.stack.interface == "asgi":
            return self.stack.routes[self.route_style]
        return self.effective_threads or 1

    def keepalive(self) -> bool:
        """Whether the server keeps connections open between requests (gunicorn sync closes every one)."""
        return self.kind.keepalive


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one line a person could paste (environment settings first)."""
        settings = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()) if k.startswith("SERVINGBENCH_")]
        return " ".join([*settings, *map(shlex.quote, self.argv)])


def launch_command(
    config: ServerConfig,
    *,
    host: str,
    port: int,
    model: str,
    blas_threads: int = 1,
    settings: Settings | None = None,
    base_env: dict[str, str] | None = None,
    python: str | None = None,
) -> LaunchCommand:
    """The argv and full environment that start ``config`` on ``host:port`` serving ``model``, with the interpreter
    ``python`` (default: this one; another virtual environment serves another version of the code)."""
    settings = (settings or Settings()).with_(model=model, blas_threads=blas_threads, route=config.route_style)
    target = LaunchTarget(
        config.stack.app, config.stack.interface, config.workers, config.effective_threads, host, port
    )
    env = dict(os.environ if base_env is None else base_env)
    env.update(settings.to_env())
    env.update({name: str(blas_threads) for name in THREAD_ENV_VARS})
    env["PYTHONUNBUFFERED"] = "1"
    return LaunchCommand([python or sys.executable, *config.kind.argv(target)], env)


SERVER_PACKAGES = (*stack_packages(), "scikit-learn", "numpy")
"""The packages whose versions every report prints."""


def server_versions() -> dict[str, str]:
    """Installed versions of the packages that make up the server stacks."""
    out = {}
    for name in SERVER_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
