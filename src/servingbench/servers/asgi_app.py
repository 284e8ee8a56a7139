"""The ASGI floor: a bare ASGI callable over the predict core, no framework; what FastAPI and Litestar cost is
measured against it. Routing and moving bytes only; every decision is the predict core's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from servingbench.shared_model import GET_ACTIONS, POST_ACTIONS, ROUTES, PredictService, Reply, Settings

__all__ = ["create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("servingbench.servers.asgi")


class _Disconnected(Exception):
    """The client went away before its body arrived: there is no one to answer."""


async def _send(send: Send, reply: Reply, *, head: bool = False) -> None:
    headers = [(b"content-type", reply.media_type.encode()), (b"content-length", str(len(reply.body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The body's chunks as the server delivers them; a client gone before the end is :class:`_Disconnected`."""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        more = message.get("more_body", False)


async def _body(core: PredictService, scope: Scope, receive: Receive) -> bytes | Reply:
    """Refuse by the headers, else stream the body within the limit (read on the event loop, as FastAPI does)."""
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return await core.read_body_async(lambda name: headers.get(name, []), _chunks(receive))


def create_app(
    settings: Settings | None = None, service: PredictService | None = None
) -> Callable[..., Awaitable[None]]:
    """The ASGI app; the model is loaded once, here (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    core = service or PredictService.from_settings(settings)
    in_thread_pool = settings.route != "async"  # def: anyio's 40-thread pool, the one FastAPI's def routes use

    async def answer(scope: Scope, receive: Receive) -> Reply:
        method, path = scope["method"], scope["path"]
        if method in ROUTES.get(path, ()) and path in GET_ACTIONS:
            return GET_ACTIONS[path](core)
        if method not in ROUTES.get(path, ()):
            return core.method_not_allowed(method, path) if path in ROUTES else core.not_found(path)
        body = await _body(core, scope, receive)
        if isinstance(body, Reply):
            return body
        if in_thread_pool:
            return await anyio.to_thread.run_sync(POST_ACTIONS[path], core, body)
        return POST_ACTIONS[path](core, body)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop: the model is loaded by the factory
            while True:
                event = (await receive())["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{event}.complete"})
                if event == "shutdown":
                    return
        if scope["type"] != "http":
            return
        try:
            reply = await answer(scope, receive)
        except _Disconnected:
            return
        except Exception:
            log.exception("unhandled error")
            reply = core.error_reply(500, scope["method"], scope["path"])
        await _send(send, reply, head=scope["method"] == "HEAD")

    return app
