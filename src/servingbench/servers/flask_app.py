"""The Flask adapter: routing and error mapping only; every decision is the predict core's."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from servingbench.shared_model import BODY_CHUNK_BYTES, GET_ACTIONS, POST_ACTIONS, PredictService, Reply, Settings

__all__ = ["create_app"]


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, content_type=reply.media_type)


def _read_body(core: PredictService) -> bytes | Reply:
    """Stream the body within the limit; never hold more than the limit in memory."""
    return core.read_body(request.headers.getlist, iter(lambda: request.stream.read(BODY_CHUNK_BYTES), b""))


def _post_view(core: PredictService, action: Callable[[PredictService, bytes], Reply]) -> Callable[[], Response]:
    def view() -> Response:
        body = _read_body(core)
        return _send(body if isinstance(body, Reply) else action(core, body))

    return view


def _get_view(core: PredictService, action: Callable[[PredictService], Reply]) -> Callable[[], Response]:
    return lambda: _send(action(core))


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> Flask:
    """The Flask app; the model is loaded once, here (``settings`` default: from the environment)."""
    core = service or PredictService.from_settings(settings or Settings.from_env())
    app = Flask(__name__)
    app.url_map.merge_slashes = False
    for path, post in POST_ACTIONS.items():
        app.add_url_rule(path, path, _post_view(core, post), methods=["POST"], provide_automatic_options=False)
    for path, get in GET_ACTIONS.items():
        app.add_url_rule(path, path, _get_view(core, get), methods=["GET"], provide_automatic_options=False)

    @app.errorhandler(Exception)
    def on_error(exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            app.logger.exception("unhandled error")
        status = (exc.code or 500) if isinstance(exc, HTTPException) else 500
        return _send(core.error_reply(status, request.method, request.path))

    return app
