"""The registry holds together: every framework runs on some server, every server kind launches a real process
that answers ``/healthz``, and each stack is one adapter file plus one entry."""

from __future__ import annotations

import importlib

import httpx2 as httpx
import pytest

from servingbench.servers.registry import FRAMEWORKS, SERVERS, baseline_of, floor_for, servers_for
from tests.integration.conftest import KINDS, VARIANT_KINDS


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_every_framework_runs_on_a_server_and_has_a_factory(name: str) -> None:
    entry = FRAMEWORKS[name]
    assert servers_for(name), f"{name} ({entry.interface}) has no server kind"
    module, _, factory = entry.app.partition(":")
    assert callable(getattr(importlib.import_module(module), factory))
    if entry.role == "variant":
        assert entry.counterpart in FRAMEWORKS and FRAMEWORKS[entry.counterpart].role == "equal-work"
        assert FRAMEWORKS[entry.counterpart].interface == entry.interface


def test_every_interface_has_one_floor() -> None:
    for interface in ("asgi", "wsgi"):
        assert FRAMEWORKS[floor_for(interface)].role == "floor"
    assert sum(entry.role == "floor" for entry in FRAMEWORKS.values()) == 2


def test_each_framework_is_measured_against_its_baseline() -> None:
    assert [baseline_of(name) for name in ("fastapi", "flask", "litestar")] == ["asgi", "wsgi", "asgi"]
    assert [baseline_of(name) for name in ("fastapi-idiomatic", "flask-idiomatic")] == ["fastapi", "flask"]
    assert baseline_of("asgi") is None and baseline_of("wsgi") is None


@pytest.mark.slow
@pytest.mark.parametrize("server", list(SERVERS))
def test_every_server_kind_launches(live_servers: dict[str, str], server: str) -> None:
    running = [name for name, config in {**KINDS, **VARIANT_KINDS}.items() if config.server == server]
    assert running, f"no live config runs on {server}"
    for name in running:
        assert httpx.get(live_servers[name] + "/healthz", timeout=30.0).status_code == 200, name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_every_framework_is_served_live(live_servers: dict[str, str], name: str) -> None:
    running = {kind: config for kind, config in {**KINDS, **VARIANT_KINDS}.items() if config.framework == name}
    assert {config.server for config in running.values()} == set(servers_for(name))
    for kind in running:
        assert httpx.get(live_servers[kind] + "/healthz", timeout=30.0).status_code == 200, kind
