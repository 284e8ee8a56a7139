"""The FastAPI adapter: routing and error mapping only; every decision is the predict core's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from servingbench.shared_model import GET_ACTIONS, POST_ACTIONS, PredictService, Reply, Settings

__all__ = ["create_app"]


class _Answer(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


def _core(request: Request) -> PredictService:
    core: PredictService = request.app.state.core
    return core


async def _body(request: Request) -> bytes:
    """Read the body on the event loop, within the limit, so a ``def`` route never waits on the network."""
    body = await _core(request).read_body_async(request.headers.getlist, request.stream())
    if isinstance(body, Reply):
        raise _Answer(body)
    return body


def _post_endpoint(action: Callable[[PredictService, bytes], Reply], route: str) -> Callable[..., Any]:
    if route == "async":  # the labelled variant: CPU-bound predict on the event loop

        async def on_loop(request: Request, body: Annotated[bytes, Depends(_body)]) -> Response:
            return _send(action(_core(request), body))

        return on_loop

    def in_thread_pool(request: Request, body: Annotated[bytes, Depends(_body)]) -> Response:
        return _send(action(_core(request), body))

    return in_thread_pool


def _get_endpoint(action: Callable[[PredictService], Reply]) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        return _send(action(_core(request)))

    return endpoint


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, _Answer):
        return _send(exc.reply)
    status = exc.status_code if isinstance(exc, HTTPException) else 400 if isinstance(exc, ClientDisconnect) else 500
    return _send(_core(request).error_reply(status, request.method, request.url.path))


def core_lifespan(settings: Settings, service: PredictService | None) -> Callable[[FastAPI], Any]:
    """A FastAPI lifespan that loads the model once, at start-up, into ``app.state.core``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.core = service or PredictService.from_settings(settings)
        yield

    return lifespan


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> FastAPI:
    """The FastAPI app; the model is loaded once, in the lifespan (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    app = FastAPI(
        lifespan=core_lifespan(settings, service),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    for path, post in POST_ACTIONS.items():
        app.add_api_route(path, _post_endpoint(post, settings.route), methods=["POST"])
    for path, get in GET_ACTIONS.items():
        app.add_api_route(path, _get_endpoint(get), methods=["GET", "HEAD"])
    for exc_class in (_Answer, HTTPException, ClientDisconnect, Exception):
        app.add_exception_handler(exc_class, _on_error)
    return app
