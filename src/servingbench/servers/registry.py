"""The stacks servingbench measures: frameworks with their adapters, server kinds with their launch commands.

A framework is one adapter module with ``create_app(settings=None)`` plus one :class:`Framework` entry in
:data:`FRAMEWORKS` (and its distribution in ``pyproject.toml``); a server kind is one :class:`ServerKind` entry in
:data:`SERVERS`. A server runs every framework whose interface (ASGI or WSGI) it speaks. The plan parser, the
command line, the launcher, the capacity command and the environment capture read these tables; nothing else names
a framework or a server. ``docs/stacks.md`` says which stack answers which question.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_THREADS",
    "FASTAPI_THREADPOOL",
    "FRAMEWORKS",
    "GRACEFUL_TIMEOUT_S",
    "GRANIAN_THREAD_IDLE_S",
    "GUNICORN_TIMEOUT_S",
    "KEEPALIVE_S",
    "SERVERS",
    "Framework",
    "Interface",
    "LaunchTarget",
    "Role",
    "ServerKind",
    "baseline_of",
    "floor_for",
    "framework",
    "server",
    "servers_for",
    "stack_packages",
]

Interface = Literal["asgi", "wsgi"]
Role = Literal["equal-work", "variant", "floor"]
"""``equal-work``: byte-identical contract, the same work per request (the comparison the report is built on);
``variant``: the framework's own idiomatic way, held to the same predictions and no 5xx, not to byte parity;
``floor``: a bare ASGI or WSGI callable over the same core, the baseline a framework's cost is measured against."""

FASTAPI_THREADPOOL = 40
"""AnyIO's default thread-pool size, which runs FastAPI's ``def`` routes: its in-flight limit per process."""
DEFAULT_THREADS = FASTAPI_THREADPOOL
"""Threads per worker of a threaded WSGI server by default: the same in-flight limit as FastAPI's thread pool."""
GUNICORN_TIMEOUT_S = 120
"""Seconds a gunicorn worker may spend on one request before it is killed (the heavy model must fit)."""
GRACEFUL_TIMEOUT_S = 5
KEEPALIVE_S = 5
"""Keep-alive, in seconds, for every server that keeps connections open and takes a timeout (Granian has none)."""
GRANIAN_THREAD_IDLE_S = 600
"""Seconds an idle Granian blocking thread lives (its maximum): gunicorn's threads never retire, so neither do
these within a run."""


@dataclass(frozen=True)
class Framework:
    """One web framework (or bare floor) over the shared predict core.

    ``routes`` maps each route style the adapter offers to the requests one process can work on at once when it
    is served over ASGI (``def``: the thread pool; ``async``: one, on the event loop); the first is the default.
    Over WSGI the server decides the in-flight limit, so a WSGI framework lists one style with limit 1.
    """

    name: str
    label: str
    interface: Interface
    app: str
    """``module:factory`` of the adapter's ``create_app``."""
    packages: tuple[str, ...] = ()
    """Distributions whose versions every report prints for this framework."""
    routes: Mapping[str, int] = field(default_factory=lambda: {"def": 1})
    role: Role = "equal-work"
    summary: str = ""
    """One line for the report and ``--help``: what this stack is."""
    counterpart: str | None = None
    """For a ``variant``: the equal-work framework it is measured against (same framework, the contract's way)."""

    @property
    def default_route(self) -> str:
        return next(iter(self.routes))

    @property
    def route_styles(self) -> tuple[str, ...]:
        return tuple(self.routes)


@dataclass(frozen=True)
class LaunchTarget:
    """What a server kind's argv builder needs: the app to load, how, with how many workers and threads, where."""

    app: str
    interface: Interface
    workers: int
    threads: int | None
    host: str
    port: int


ArgvBuilder = Callable[[LaunchTarget], list[str]]


@dataclass(frozen=True)
class ServerKind:
    """A production server and how to start it (``argv``: the arguments after ``python``).

    ``threads_for``: the interfaces for which it takes a threads-per-worker knob (``default_threads`` when the plan
    gives none), which is then its in-flight limit per worker; a WSGI worker without one serves one request at a
    time, and an ASGI app's in-flight limit is its own (its route style's). ``keepalive``: it keeps connections
    open between requests (gunicorn sync closes every one).
    """

    name: str
    label: str
    interfaces: tuple[Interface, ...]
    argv: ArgvBuilder
    packages: tuple[str, ...] = ()
    threads_for: tuple[Interface, ...] = ()
    default_threads: int | None = None
    keepalive: bool = True
    summary: str = ""

    @property
    def threads(self) -> bool:
        """Whether it takes a threads knob for some interface (:meth:`takes_threads` says for which)."""
        return bool(self.threads_for)

    def takes_threads(self, interface: Interface) -> bool:
        return interface in self.threads_for


def _uvicorn(target: LaunchTarget) -> list[str]:
    return [
        *("-m", "uvicorn", target.app, "--factory", "--host", target.host, "--port", str(target.port)),
        *("--workers", str(target.workers), "--http", "httptools", "--loop", "uvloop"),
        *("--no-access-log", "--log-level", "warning", "--timeout-keep-alive", str(KEEPALIVE_S)),
    ]


def _gunicorn(worker_class: str) -> ArgvBuilder:
    def argv(target: LaunchTarget) -> list[str]:
        args = ["-m", "gunicorn", "--bind", f"{target.host}:{target.port}", "--workers", str(target.workers)]
        args += ["--worker-class", worker_class]
        if target.threads is not None:
            args += ["--threads", str(target.threads)]
        args += ["--timeout", str(GUNICORN_TIMEOUT_S), "--graceful-timeout", str(GRACEFUL_TIMEOUT_S)]
        args += ["--keep-alive", str(KEEPALIVE_S), "--log-level", "warning"]
        # uvicorn has no request-line limit; lift gunicorn's so a long URL is a 404 from the app on both.
        return [*args, "--limit-request-line", "0", f"{target.app}()"]

    return argv


def _granian(target: LaunchTarget) -> list[str]:
    args = ["-m", "granian", target.app, "--factory", "--interface", target.interface]
    args += ["--host", target.host, "--port", str(target.port), "--workers", str(target.workers)]
    # HTTP/1 only, no websockets, uvloop as under uvicorn; the Rust runtime keeps its default of one thread a worker.
    args += ["--http", "1", "--no-ws", "--loop", "uvloop", "--http1-keep-alive"]
    if target.threads is not None:  # WSGI: the blocking threads run the app, so they are the in-flight limit
        args += ["--blocking-threads", str(target.threads)]
        args += ["--blocking-threads-idle-timeout", str(GRANIAN_THREAD_IDLE_S)]
    return [*args, "--log-level", "warning", "--workers-kill-timeout", str(GRACEFUL_TIMEOUT_S)]


_STARLETTE = ("starlette",)
_WERKZEUG = ("werkzeug",)

FRAMEWORKS: dict[str, Framework] = {
    entry.name: entry
    for entry in (
        Framework(
            "fastapi",
            "FastAPI",
            "asgi",
            "servingbench.servers.fastapi_app:create_app",
            packages=("fastapi", *_STARLETTE, "pydantic"),
            routes={"def": FASTAPI_THREADPOOL, "async": 1},
            summary="FastAPI routes over the shared core (def: thread pool; async: on the event loop)",
        ),
        Framework(
            "flask",
            "Flask",
            "wsgi",
            "servingbench.servers.flask_app:create_app",
            packages=("flask", *_WERKZEUG),
            summary="Flask views over the shared core",
        ),
        Framework(
            "litestar",
            "Litestar",
            "asgi",
            "servingbench.servers.litestar_app:create_app",
            packages=("litestar", "msgspec"),
            routes={"def": FASTAPI_THREADPOOL, "async": 1},  # def handlers run in the same anyio pool
            summary="Litestar handlers over the shared core (def: thread pool; async: on the event loop)",
        ),
        Framework(
            "asgi",
            "ASGI floor",
            "asgi",
            "servingbench.servers.asgi_app:create_app",
            routes={"def": FASTAPI_THREADPOOL, "async": 1},  # def: anyio's pool, the one FastAPI's def routes use
            role="floor",
            summary="a bare ASGI callable over the shared core, no framework: what an ASGI framework costs",
        ),
        Framework(
            "wsgi",
            "WSGI floor",
            "wsgi",
            "servingbench.servers.wsgi_app:create_app",
            role="floor",
            summary="a bare WSGI callable over the shared core, no framework: what a WSGI framework costs",
        ),
        Framework(
            "fastapi-idiomatic",
            "FastAPI (idiomatic)",
            "asgi",
            "servingbench.servers.fastapi_idiomatic:create_app",
            packages=("fastapi", *_STARLETTE, "pydantic"),
            routes={"def": FASTAPI_THREADPOOL},
            role="variant",
            counterpart="fastapi",
            summary="FastAPI's own way: a pydantic model in the signature, response_model, its own errors and OpenAPI",
        ),
        Framework(
            "flask-idiomatic",
            "Flask (idiomatic)",
            "wsgi",
            "servingbench.servers.flask_idiomatic:create_app",
            packages=("flask", *_WERKZEUG, "pydantic"),
            role="variant",
            counterpart="flask",
            summary="Flask's own way: request.get_json(), the same pydantic model, jsonify",
        ),
    )
}
"""Every framework by its plan and command-line name, in the order help texts list them."""

SERVERS: dict[str, ServerKind] = {
    entry.name: entry
    for entry in (
        ServerKind(
            "uvicorn",
            "uvicorn",
            ("asgi",),
            _uvicorn,
            packages=("uvicorn", "httptools", "uvloop"),
            summary="uvicorn with httptools and uvloop",
        ),
        ServerKind(
            "gunicorn-uvicorn",
            "gunicorn + uvicorn workers",
            ("asgi",),
            _gunicorn("uvicorn_worker.UvicornWorker"),
            packages=("gunicorn", "uvicorn-worker", "uvicorn"),
            summary="gunicorn managing uvicorn workers",
        ),
        ServerKind(
            "gunicorn-sync",
            "gunicorn sync",
            ("wsgi",),
            _gunicorn("sync"),
            packages=("gunicorn",),
            keepalive=False,
            summary="gunicorn's sync worker: one request at a time, a new connection per request",
        ),
        ServerKind(
            "gunicorn-gthread",
            "gunicorn gthread",
            ("wsgi",),
            _gunicorn("gthread"),
            packages=("gunicorn",),
            threads_for=("wsgi",),
            default_threads=DEFAULT_THREADS,
            summary="gunicorn's threaded worker",
        ),
        ServerKind(
            "granian",
            "Granian",
            ("asgi", "wsgi"),
            _granian,
            packages=("granian", "uvloop"),
            threads_for=("wsgi",),
            default_threads=DEFAULT_THREADS,
            summary="Granian (Rust HTTP/1): ASGI on uvloop, WSGI on blocking threads (40 a worker by default)",
        ),
    )
}
"""Every server kind by its plan and command-line name."""


def framework(name: str) -> Framework:
    """The framework called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r} (known: {', '.join(FRAMEWORKS)})") from None


def server(name: str) -> ServerKind:
    """The server kind called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown server {name!r} (known: {', '.join(SERVERS)})") from None


def floor_for(interface: Interface) -> str:
    """The floor framework of ``interface``: the bare callable a framework of that interface is measured against."""
    return next(name for name, entry in FRAMEWORKS.items() if entry.role == "floor" and entry.interface == interface)


def baseline_of(framework_name: str) -> str | None:
    """The framework ``framework_name`` is measured against: its interface's floor for an equal-work framework (the
    framework tax), its equal-work counterpart for a variant (the idiomatic cost), none for a floor. A report pairs
    two configs with the same server, route style and workers whose frameworks are related so."""
    entry = framework(framework_name)
    if entry.role == "variant":
        return entry.counterpart
    return None if entry.role == "floor" else floor_for(entry.interface)


def servers_for(framework_name: str) -> tuple[str, ...]:
    """The server kinds that run ``framework_name`` (those that speak its interface), in table order."""
    interface = framework(framework_name).interface
    return tuple(name for name, kind in SERVERS.items() if interface in kind.interfaces)


def stack_packages() -> tuple[str, ...]:
    """Every distribution that makes up some stack (frameworks, then servers), each once."""
    names = [name for entry in FRAMEWORKS.values() for name in entry.packages]
    names += [name for entry in SERVERS.values() for name in entry.packages]
    return tuple(dict.fromkeys(names))
