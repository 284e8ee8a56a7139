"""The FastAPI adapter: routing and error mapping only; every decision is the predict core's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from servingbench.shared_model import MAX_DRAIN_BYTES, PredictService, Reply, Settings

__all__ = ["create_app"]


class _Answer(Exception):
    """Carries a finished reply out of a dependency."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


def _core(request: Request) -> PredictService:
    core: PredictService = request.app.state.core
    return core


async def _body(request: Request) -> bytes:
    """Read the body on the event loop, within the limit, so the route itself never waits on the network."""
    core = _core(request)
    early = core.check_post(request.headers.get("content-type"), request.headers.get("content-length"))
    if early is not None:
        raise _Answer(early)
    buffer = core.new_body()
    async for chunk in request.stream():
        buffer.feed(chunk)
        if buffer.size > MAX_DRAIN_BYTES:
            break
    if buffer.too_large:
        raise _Answer(core.too_large())
    return buffer.body()


Body = Annotated[bytes, Depends(_body)]


def _add_routes(app: FastAPI, route: str) -> None:
    if route == "async":  # labelled variant: CPU-bound predict on the event loop

        @app.post("/predict")
        async def predict_async(request: Request, body: Body) -> Response:
            return _send(_core(request).predict(body))

        @app.post("/predict/batch")
        async def batch_async(request: Request, body: Body) -> Response:
            return _send(_core(request).predict_batch(body))

    else:  # default: the route runs on the thread pool

        @app.post("/predict")
        def predict(request: Request, body: Body) -> Response:
            return _send(_core(request).predict(body))

        @app.post("/predict/batch")
        def batch(request: Request, body: Body) -> Response:
            return _send(_core(request).predict_batch(body))

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz(request: Request) -> Response:
        return _send(_core(request).healthz())

    @app.api_route("/model", methods=["GET", "HEAD"])
    async def model(request: Request) -> Response:
        return _send(_core(request).model_info())

    @app.api_route("/openapi.json", methods=["GET", "HEAD"])
    async def openapi(request: Request) -> Response:
        return _send(_core(request).openapi())


def _add_error_mapping(app: FastAPI) -> None:
    @app.exception_handler(_Answer)
    async def answer(request: Request, exc: _Answer) -> Response:
        return _send(exc.reply)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _send(_core(request).error_reply(exc.status_code, request.method, request.url.path))

    @app.exception_handler(ClientDisconnect)
    async def disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return _send(_core(request).error_reply(400, request.method, request.url.path))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> Response:
        return _send(_core(request).error_reply(500, request.method, request.url.path))


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> FastAPI:
    """The FastAPI app; the model is loaded once, in the lifespan (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.core = service or PredictService.from_settings(settings)
        yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    _add_routes(app, settings.route)
    _add_error_mapping(app)
    return app
