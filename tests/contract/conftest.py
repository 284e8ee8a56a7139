"""One client factory over both adapters, in process: FastAPI through its TestClient (lifespan runs), Flask
through httpx's WSGI transport. The real-server variants of the same suite live in ``tests/integration``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from servingbench.servers import fastapi_app, flask_app
from servingbench.shared_model import Settings

ClientFactory = Callable[..., AbstractContextManager[httpx.Client]]
ADAPTERS = ("fastapi", "flask", "fastapi-async")


@contextmanager
def adapter_client(adapter: str, settings: Settings) -> Iterator[httpx.Client]:
    if adapter == "flask":
        app = flask_app.create_app(settings)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as client:
            yield client
        return
    route = "async" if adapter == "fastapi-async" else "def"
    with TestClient(fastapi_app.create_app(settings.with_(route=route)), raise_server_exceptions=False) as client:
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
    """One long-lived client per adapter, for the tests that compare adapters with each other."""
    managers = {name: adapter_client(name, base_settings) for name in ADAPTERS}
    opened = {name: cm.__enter__() for name, cm in managers.items()}
    yield opened
    for cm in managers.values():
        cm.__exit__(None, None, None)
