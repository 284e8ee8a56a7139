"""Flask written its own way, as its tutorial and most teams do: ``request.get_json()``, validation with the same
pydantic model, ``jsonify``; Flask's own body limit and error pages. A labelled variant: the shared core is called for
the prediction only, so what this costs over the equal-work adapter is Flask's own parsing and serialization.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest

from servingbench.shared_model import ModelError, PredictService, Settings
from servingbench.shared_model.schema import BatchRequest, PredictRequest
from servingbench.shared_model.types import Prediction

__all__ = ["create_app"]

M = TypeVar("M", bound=BaseModel)


class _Invalid(Exception):
    """A request the model cannot take: answered 422 with ``detail``."""

    def __init__(self, detail: Any) -> None:
        self.detail = detail


def _parse(schema: type[M]) -> M:
    try:
        return schema.model_validate(request.get_json())
    except RecursionError as err:  # Flask turns a ValueError into 400, not deep nesting (the one change "no 5xx" needs)
        raise BadRequest("The JSON body is nested too deeply") from err
    except ValidationError as err:  # the input is not echoed: a NaN or Infinity in it is not JSON
        raise _Invalid(err.errors(include_url=False, include_context=False, include_input=False)) from err


def _predict(core: PredictService, rows: list[list[float]]) -> list[Prediction]:
    if len(rows) > core.settings.max_batch_rows:
        raise _Invalid(f"A batch holds at most {core.settings.max_batch_rows} rows")
    try:
        return core.model.predict(np.asarray(rows, dtype=np.float64))
    except (ModelError, ValueError, OverflowError) as err:  # wrong feature count, ragged rows, out of range
        raise _Invalid(str(err).splitlines()[0]) from err


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> Flask:
    """The Flask app; the model is loaded once, here (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    core = service or PredictService.from_settings(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    @app.post("/predict")
    def predict() -> ResponseReturnValue:
        return jsonify(prediction=_predict(core, [_parse(PredictRequest).features])[0])

    @app.post("/predict/batch")
    def predict_batch() -> ResponseReturnValue:
        return jsonify(predictions=_predict(core, _parse(BatchRequest).instances))

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    @app.get("/model")
    def model() -> ResponseReturnValue:
        return jsonify(core.info.as_json())

    @app.errorhandler(_Invalid)
    def invalid(err: _Invalid) -> ResponseReturnValue:
        return jsonify(detail=err.detail), 422

    return app
