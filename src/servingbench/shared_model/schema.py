"""Request and response schema shared by both adapters (pydantic v2), and the OpenAPI document built from it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict

from servingbench.shared_model.limits import DEFAULT_MAX_BATCH_ROWS, MAX_ABS_FEATURE
from servingbench.shared_model.types import ModelInfo

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "Feature",
    "PredictRequest",
    "PredictResponse",
    "openapi_document",
]

#: A feature value: a finite JSON number within +-MAX_ABS_FEATURE. Booleans and numeric strings are refused.
Feature = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE)]
Prediction = float | int | str | bool | None

_STRICT = ConfigDict(extra="forbid", strict=True)


class PredictRequest(BaseModel):
    """``POST /predict``: one row of features, in the model's feature order."""

    model_config = _STRICT
    features: list[Feature] = Field(min_length=1)


class BatchRequest(BaseModel):
    """``POST /predict/batch``: rows of features; the row count is limited by the server's settings."""

    model_config = _STRICT
    instances: list[list[Feature]] = Field(min_length=1)


class PredictResponse(BaseModel):
    prediction: Prediction


class BatchResponse(BaseModel):
    predictions: list[Prediction]


def _problem_schema() -> dict[str, Any]:
    error = {
        "type": "object",
        "properties": {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
        "required": ["loc", "msg", "type"],
    }
    return {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": error},
        },
        "required": ["type", "title", "status", "detail", "errors"],
    }


def _json_body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _responses(ok_ref: str, *codes: int) -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ok_ref}}}}}
    for code in codes:
        out[str(code)] = {"description": "Problem (RFC 9457)", "content": problem}
    return out


def _components(info: ModelInfo, max_rows: int) -> dict[str, Any]:
    ref = "#/components/schemas/{model}"
    schemas: dict[str, Any] = {}
    for model in (PredictRequest, BatchRequest, PredictResponse, BatchResponse):
        schemas[model.__name__] = model.model_json_schema(ref_template=ref)
    n = info.n_features
    schemas["PredictRequest"]["properties"]["features"].update(minItems=n, maxItems=n)
    rows = schemas["BatchRequest"]["properties"]["instances"]
    rows.update(maxItems=max_rows)
    rows["items"].update(minItems=n, maxItems=n)
    if info.named:
        _record_schemas(schemas, info, max_rows)
    if info.output is not None and info.output.kind == "probabilities":
        _probability_schemas(schemas, info.output.class_names)
    schemas["Problem"] = _problem_schema()
    schemas["ModelInfo"] = {"type": "object"}
    return {"schemas": schemas}


def _record_schemas(schemas: dict[str, Any], info: ModelInfo, max_rows: int) -> None:
    """Named-column requests: a record of typed columns, every column required, no others."""
    schemas["Record"] = {
        "type": "object",
        "properties": {column.name: column.json_schema() for column in info.columns},
        "required": [column.name for column in info.columns],
        "additionalProperties": False,
    }
    record = {"$ref": "#/components/schemas/Record"}
    schemas["PredictRequest"] = {
        "type": "object",
        "properties": {"features": record},
        "required": ["features"],
        "additionalProperties": False,
    }
    schemas["BatchRequest"] = {
        "type": "object",
        "properties": {"instances": {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}},
        "required": ["instances"],
        "additionalProperties": False,
    }


def _probability_schemas(schemas: dict[str, Any], class_names: tuple[str, ...]) -> None:
    one = {
        "type": "object",
        "properties": {name: {"type": ["number", "null"]} for name in class_names},
        "required": list(class_names),
        "additionalProperties": False,
    }
    schemas["PredictResponse"] = {"type": "object", "properties": {"probabilities": one}, "required": ["probabilities"]}
    schemas["BatchResponse"] = {
        "type": "object",
        "properties": {"probabilities": {"type": "array", "items": one}},
        "required": ["probabilities"],
    }


def openapi_document(info: ModelInfo, *, max_rows: int = DEFAULT_MAX_BATCH_ROWS) -> dict[str, Any]:
    """The OpenAPI 3.1 document both adapters serve at ``/openapi.json``, specialised to the loaded model."""
    post_codes = (400, 413, 415, 422)
    get_ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    paths: dict[str, Any] = {
        "/predict": {
            "post": {
                "operationId": "predict",
                "requestBody": _json_body("#/components/schemas/PredictRequest"),
                "responses": _responses("#/components/schemas/PredictResponse", *post_codes),
            }
        },
        "/predict/batch": {
            "post": {
                "operationId": "predict_batch",
                "requestBody": _json_body("#/components/schemas/BatchRequest"),
                "responses": _responses("#/components/schemas/BatchResponse", *post_codes),
            }
        },
        "/healthz": {"get": {"operationId": "healthz", "responses": get_ok}},
        "/model": {"get": {"operationId": "model", "responses": get_ok}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "servingbench model server", "version": info.version},
        "paths": paths,
        "components": _components(info, max_rows),
    }
