"""The Flask adapter: routing and error mapping only; every decision is the predict core's."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from servingbench.shared_model import BODY_CHUNK_BYTES, MAX_DRAIN_BYTES, PredictService, Reply, Settings

__all__ = ["create_app"]


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, content_type=reply.media_type)


def _read_body(core: PredictService) -> bytes | Reply:
    """Stream the body within the limit; never hold more than the limit in memory."""
    early = core.check_post(request.headers.get("Content-Type"), request.headers.get("Content-Length"))
    if early is not None:
        return early
    buffer = core.new_body()
    for chunk in iter(lambda: request.stream.read(BODY_CHUNK_BYTES), b""):
        buffer.feed(chunk)
        if buffer.size > MAX_DRAIN_BYTES:
            break
    return core.too_large() if buffer.too_large else buffer.body()


def _add_routes(app: Flask, core: PredictService) -> None:
    @app.post("/predict", provide_automatic_options=False)
    def predict() -> Response:
        body = _read_body(core)
        return _send(body if isinstance(body, Reply) else core.predict(body))

    @app.post("/predict/batch", provide_automatic_options=False)
    def batch() -> Response:
        body = _read_body(core)
        return _send(body if isinstance(body, Reply) else core.predict_batch(body))

    @app.get("/healthz", provide_automatic_options=False)
    def healthz() -> Response:
        return _send(core.healthz())

    @app.get("/model", provide_automatic_options=False)
    def model() -> Response:
        return _send(core.model_info())

    @app.get("/openapi.json", provide_automatic_options=False)
    def openapi() -> Response:
        return _send(core.openapi())


def _add_error_mapping(app: Flask, core: PredictService) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _send(core.error_reply(exc.code or 500, request.method, request.path))

    @app.errorhandler(Exception)
    def failure(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return _send(core.error_reply(500, request.method, request.path))


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> Flask:
    """The Flask app; the model is loaded once, here (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    core = service or PredictService.from_settings(settings)
    app = Flask(__name__)
    app.url_map.merge_slashes = False
    app.extensions["servingbench"] = core
    _add_routes(app, core)
    _add_error_mapping(app, core)
    return app
