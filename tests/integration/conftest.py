"""Real servers on loopback: every framework on every server kind that speaks its interface, started once per
session on a free port, always reaped. The list is read from the registry, so a new framework or server kind is
served here as soon as it has its entry."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from servingbench.harness.processes import free_port, running_server
from servingbench.servers import ServerConfig, launch_command
from servingbench.servers.registry import FRAMEWORKS, servers_for
from servingbench.shared_model import Settings

#: gunicorn gthread with a few threads (the default 40 is what the plan measures; here it only has to answer).
GTHREAD_TEST_THREADS = 4


def _config(framework: str, server: str) -> ServerConfig:
    return ServerConfig(framework, server, threads=GTHREAD_TEST_THREADS if server == "gunicorn-gthread" else None)


def _kinds(*, variants: bool) -> dict[str, ServerConfig]:
    return {
        f"{name}-{server}": _config(name, server)
        for name, entry in FRAMEWORKS.items()
        if (entry.role == "variant") == variants
        for server in servers_for(name)
    }


#: Every equal-work adapter and floor on every server kind it runs on, plus FastAPI's labelled ``async def`` route.
KINDS: dict[str, ServerConfig] = {
    **_kinds(variants=False),
    "fastapi-uvicorn-async": ServerConfig("fastapi", "uvicorn", route="async"),
}
#: The idiomatic variants on every server kind they run on: held to no 5xx, not to the contract's bytes.
VARIANT_KINDS: dict[str, ServerConfig] = _kinds(variants=True)
STARTUP_TIMEOUT_S = 120.0
PARALLEL_STARTS = 3


@pytest.fixture(scope="session")
def live_servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of every server config of ``KINDS`` and ``VARIANT_KINDS``, serving the ``fast`` model; all stopped
    at the end of the session."""
    logs = tmp_path_factory.mktemp("server-logs")
    settings = Settings(models_dir=str(models_dir))

    def start(stacks: list[ExitStack], name: str, config: ServerConfig) -> str:
        port = free_port()
        command = launch_command(config, host="127.0.0.1", port=port, model="fast", settings=settings)
        log_path = logs / f"{name}.log"
        stack = ExitStack()
        stacks.append(stack)  # before the start: a server that fails to get ready is reaped too
        server = stack.enter_context(
            running_server(command.argv, command.env, port=port, log_path=log_path, startup_timeout_s=STARTUP_TIMEOUT_S)
        )
        return server.base_url

    stacks: list[ExitStack] = []
    try:
        # Started a few at a time: a server's start is mostly imports, and the cores would otherwise sit idle.
        with ThreadPoolExecutor(max_workers=PARALLEL_STARTS) as pool:
            futures = {
                name: pool.submit(start, stacks, name, config) for name, config in {**KINDS, **VARIANT_KINDS}.items()
            }
            urls = {name: future.result() for name, future in futures.items()}
        yield urls
    finally:
        # Stopped all at once: each stop waits out its server's graceful shutdown, one after another ~20 s.
        with ThreadPoolExecutor(max_workers=max(1, len(stacks))) as pool:
            list(pool.map(ExitStack.close, stacks))
