"""FastAPI written its own way, as its tutorial and most teams do: the pydantic request model in the signature,
``response_model``, FastAPI's own validation errors and OpenAPI. A labelled variant: the shared core is called for
the prediction only, so what this costs over the equal-work adapter is FastAPI's own validation and serialization.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from servingbench.servers.fastapi_app import core_lifespan
from servingbench.shared_model import ModelError, PredictService, Settings
from servingbench.shared_model.schema import BatchRequest, BatchResponse, PredictRequest, PredictResponse
from servingbench.shared_model.types import Prediction

__all__ = ["create_app"]


def _predict(request: Request, rows: list[list[float]]) -> list[Prediction]:
    core: PredictService = request.app.state.core
    if len(rows) > core.settings.max_batch_rows:
        raise HTTPException(422, f"A batch holds at most {core.settings.max_batch_rows} rows")
    try:
        return core.model.predict(np.asarray(rows, dtype=np.float64))
    except (ModelError, ValueError, OverflowError) as err:  # wrong feature count, ragged rows, out of range
        raise HTTPException(422, str(err).splitlines()[0]) from err


def create_app(settings: Settings | None = None, service: PredictService | None = None) -> FastAPI:
    """The FastAPI app; the model is loaded once, in the lifespan (``settings`` default: from the environment)."""
    settings = settings or Settings.from_env()
    app = FastAPI(title="servingbench model server", lifespan=core_lifespan(settings, service))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each error's input, and a NaN or Infinity there makes its JSON encoder fail:
        # a 500 for a body it rejected. The same shape without the echo (the one change "no 5xx" needs).
        errors = [{key: error[key] for key in ("type", "loc", "msg")} for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post("/predict", response_model=PredictResponse)
    def predict(body: PredictRequest, request: Request) -> Any:
        return {"prediction": _predict(request, [body.features])[0]}

    @app.post("/predict/batch", response_model=BatchResponse)
    def predict_batch(body: BatchRequest, request: Request) -> Any:
        return {"predictions": _predict(request, body.instances)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    async def model(request: Request) -> dict[str, object]:
        info: dict[str, object] = request.app.state.core.info.as_json()
        return info

    return app
