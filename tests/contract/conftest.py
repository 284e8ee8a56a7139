"""One client factory over every adapter of the registry, in process: an ASGI app through Starlette's TestClient
(its lifespan runs), a WSGI app through httpx's WSGI transport. The real-server variants of the same suite live in
``tests/integration``.

``ADAPTERS`` holds every framework held to the byte-identical contract (equal-work adapters and floors), once per
route style; ``VARIANTS`` the labelled idiomatic variants, held to the same predictions and no 5xx only. Both are
read from the registry, so a new framework is in the suite as soon as it has its entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from servingbench.servers.registry import FRAMEWORKS
from servingbench.shared_model import Settings

ClientFactory = Callable[..., AbstractContextManager[httpx.Client]]


def _adapter_ids(*, variants: bool) -> tuple[str, ...]:
    """``name`` for a framework's default route style, ``name-style`` for each other one."""
    return tuple(
        name if style == entry.default_route else f"{name}-{style}"
        for name, entry in FRAMEWORKS.items()
        if (entry.role == "variant") == variants
        for style in entry.routes
    )


ADAPTERS = _adapter_ids(variants=False)
VARIANTS = _adapter_ids(variants=True)


def split_adapter(adapter: str) -> tuple[str, str]:
    """The framework and route style of an adapter id (``fastapi-async`` -> ``fastapi``, ``async``)."""
    if adapter in FRAMEWORKS:
        return adapter, FRAMEWORKS[adapter].default_route
    name, _, style = adapter.rpartition("-")
    return name, style


def create_app(adapter: str, settings: Settings) -> Any:
    """The adapter's app, built by the ``create_app`` factory the registry names."""
    name, style = split_adapter(adapter)
    module, _, factory = FRAMEWORKS[name].app.partition(":")
    return getattr(importlib.import_module(module), factory)(settings.with_(route=style))


@contextmanager
def adapter_client(adapter: str, settings: Settings) -> Iterator[httpx.Client]:
    app = create_app(adapter, settings)
    if FRAMEWORKS[split_adapter(adapter)[0]].interface == "wsgi":
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as client:
            yield client
        return
    # Redirects are not followed, as a real client's first answer is what the contract is about.
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="session")
def base_settings(models_dir: Path) -> Settings:
    return Settings(model="fast", models_dir=str(models_dir))


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def client_factory(adapter: str, base_settings: Settings) -> ClientFactory:
    def factory(**overrides: object) -> AbstractContextManager[httpx.Client]:
        return adapter_client(adapter, base_settings.with_(**overrides))

    return factory


@pytest.fixture(scope="session")
def clients(base_settings: Settings) -> Iterator[dict[str, httpx.Client]]:
    """One long-lived client per adapter and variant, for the tests that compare adapters with each other."""
    managers = {name: adapter_client(name, base_settings) for name in (*ADAPTERS, *VARIANTS)}
    opened = {name: cm.__enter__() for name, cm in managers.items()}
    yield opened
    for cm in managers.values():
        cm.__exit__(None, None, None)
