"""The WSGI floor: a bare WSGI callable over the predict core, no framework; what Flask costs is measured against
it. Routing and moving bytes only; every decision is the predict core's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import IO, Any

from servingbench.shared_model import (
    BODY_CHUNK_BYTES,
    GET_ACTIONS,
    POST_ACTIONS,
    ROUTES,
    PredictService,
    Reply,
    Settings,
)
from servingbench.shared_model.service import HeaderValues

__all__ = ["create_app"]

Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

log = logging.getLogger("servingbench.servers.wsgi")


def _chunks(environ: Environ) -> Iterable[bytes]:
    """The body as PEP 3333 allows reading it: to the end when the server marks it terminated (chunked), else up
    to ``CONTENT_LENGTH``, else nothing (the rule Werkzeug follows, so Flask and the floor read the same bytes)."""
    stream: IO[bytes] = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        yield from iter(lambda: stream.read(BODY_CHUNK_BYTES), b"")
        return
    length = environ.get("CONTENT_LENGTH", "")
    left = int(length) if length.strip().isdigit() else 0
    while left > 0 and (chunk := stream.read(min(left, BODY_CHUNK_BYTES))):
        left -= len(chunk)
        yield chunk


def _headers(environ: Environ) -> HeaderValues:
    """The request's headers as the core reads them: PEP 3333 keeps one value each, under CGI names."""

    def values(name: str) -> list[str]:
        key = name.upper().replace("-", "_")
        value = environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}")
        return [value] if value else []

    return values


def _body(core: PredictService, environ: Environ) -> bytes | Reply:
    """Refuse by the headers, else stream the body within the limit; never hold more than the limit in memory."""
    return core.read_body(_headers(environ), _chunks(environ))


def _answer(core: PredictService, environ: Environ) -> Reply:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
    if method in ROUTES.get(path, ()) and path in GET_ACTIONS:
        return GET_ACTIONS[path](core)
    if method not in ROUTES.get(path, ()):
        return core.method_not_allowed(method, path) if path in ROUTES else core.not_found(path)
    body = _body(core, environ)
    return body if isinstance(body, Reply) else POST_ACTIONS[path](core, body)


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> WSGIApp:
    """The WSGI app; the model is loaded once, here (``settings`` default: from the environment)."""
    core = service or PredictService.from_settings(settings or Settings.from_env())

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = _answer(core, environ)
        except Exception:
            log.exception("unhandled error")
            reply = core.error_reply(500, environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/")
        headers = [("Content-Type", reply.media_type), ("Content-Length", str(len(reply.body))), *reply.headers.items()]
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else reply.body]

    return app
