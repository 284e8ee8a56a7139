"""The Litestar adapter: routing and error mapping only; every decision is the predict core's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from litestar import Litestar, Request, Response, route
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from servingbench.shared_model import GET_ACTIONS, POST_ACTIONS, PredictService, Reply, Settings

__all__ = ["create_app"]

AnyRequest = Request[Any, Any, Any]
UNROUTABLE_PATH = "/\x00"


class _Answer(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def _send(reply: Reply) -> Response[bytes]:
    return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type)


def _core(request: AnyRequest) -> PredictService:
    return cast(PredictService, request.app.state.core)


async def _body(request: AnyRequest) -> bytes:
    """Read the body on the event loop, within the limit, so a ``def`` handler never waits on the network."""
    headers = request.headers
    reply = await _core(request).read_body_async(lambda name: headers.getall(name, []), request.stream())
    if not isinstance(reply, Reply):
        return reply
    raise _Answer(reply)


def _post_handler(path: str, action: Callable[[PredictService, bytes], Reply], style: str) -> Any:
    if style == "async":  # the labelled variant: CPU-bound predict on the event loop

        async def on_loop(request: AnyRequest, raw: NamedDependency[bytes]) -> Response[bytes]:
            return _send(action(_core(request), raw))

        return route(path, http_method="POST", name=path)(on_loop)

    def in_thread_pool(request: AnyRequest, raw: NamedDependency[bytes]) -> Response[bytes]:
        return _send(action(_core(request), raw))

    return route(path, http_method="POST", name=path, sync_to_thread=True)(in_thread_pool)


def _get_handler(path: str, action: Callable[[PredictService], Reply]) -> Any:
    async def endpoint(request: AnyRequest) -> Response[bytes]:
        return _send(action(_core(request)))

    return route(path, http_method=["GET", "HEAD"], name=path)(endpoint)


async def _refuse_options(request: AnyRequest) -> Response[bytes]:
    # Litestar answers OPTIONS on every route by itself (204, for CORS); the contract says 405.
    return _send(_core(request).method_not_allowed(request.method, request.url.path))


def _on_error(request: AnyRequest, exc: Exception) -> Response[bytes]:
    if isinstance(exc, _Answer):
        return _send(exc.reply)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _send(_core(request).error_reply(status, request.method, request.url.path))


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> ASGIApp:
    """The Litestar app; the model is loaded once, here (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    core = service or PredictService.from_settings(settings)
    handlers = [route([*POST_ACTIONS, *GET_ACTIONS], http_method="OPTIONS")(_refuse_options)]
    handlers += [_post_handler(path, post, settings.route) for path, post in POST_ACTIONS.items()]
    handlers += [_get_handler(path, get) for path, get in GET_ACTIONS.items()]
    litestar = Litestar(
        handlers,
        dependencies={"raw": Provide(_body)},
        exception_handlers={Exception: _on_error},
        state=State({"core": core}),
        openapi_config=None,
        request_max_body_size=None,  # the core's limit applies, as on every other adapter
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar's router takes /predict/ and //healthz for /predict and /healthz; the contract says 404, so such
        # a path goes on as one that no route matches, and Litestar answers it as every unknown route.
        if scope["type"] == ScopeType.HTTP and normalize_path(scope["path"]) != scope["path"]:
            scope["path"] = UNROUTABLE_PATH
        await litestar(scope, receive, send)

    return app
