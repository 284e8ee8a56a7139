"""Assertions shared by the in-process and the real-server contract suites."""

from __future__ import annotations

import json
import re

import httpx2 as httpx

from tests.contract.cases import Case

SERVER_TIMING = re.compile(r"^validate;dur=\d+\.\d{3}, predict;dur=\d+\.\d{3}$")
PROBLEM_KEYS = ["type", "title", "status", "detail", "errors"]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    return client.request(case.method, case.path, content=case.body, headers=case.headers)


def check_contract(response: httpx.Response, case: Case) -> None:
    """The status the contract gives ``case``, and a well-formed body for it."""
    assert response.status_code == case.status, (case.name, response.status_code, response.content[:300])
    media = response.headers.get("content-type", "")
    if case.method == "HEAD":
        assert response.content == b""
        return
    if response.status_code >= 400:
        assert media == "application/problem+json", (case.name, media)
        doc = json.loads(response.content)
        assert list(doc) == PROBLEM_KEYS
        assert doc["status"] == response.status_code
        assert doc["type"].startswith("urn:servingbench:problem:")
        assert isinstance(doc["errors"], list)
        if response.status_code == 422:
            assert doc["errors"], "a 422 lists its field errors"
        if response.status_code == 405:
            assert response.headers["allow"] in ("POST", "GET, HEAD")
        return
    assert media == "application/json"
    if case.path.startswith("/predict"):
        assert SERVER_TIMING.match(response.headers["server-timing"]), response.headers["server-timing"]


def signature(response: httpx.Response) -> tuple[int, str, bytes, str | None]:
    """What must be byte-identical on every adapter: status, media type, body and ``Allow``."""
    return (
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        response.headers.get("allow"),
    )
