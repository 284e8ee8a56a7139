"""The predict core shared by both adapters: schema, limits, problem bodies, model loading. No web imports."""

from __future__ import annotations

from servingbench.shared_model.limits import (
    BODY_CHUNK_BYTES,
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    MAX_DRAIN_BYTES,
)
from servingbench.shared_model.problems import PROBLEM_MEDIA_TYPE, Problem
from servingbench.shared_model.service import GET_ACTIONS, POST_ACTIONS, ROUTES, BodyBuffer, PredictService, Reply
from servingbench.shared_model.settings import Settings, SettingsError
from servingbench.shared_model.types import JSONScalar, Model, ModelError, ModelInfo

__all__ = [
    "BODY_CHUNK_BYTES",
    "DEFAULT_MAX_BATCH_ROWS",
    "DEFAULT_MAX_BODY_BYTES",
    "GET_ACTIONS",
    "MAX_DRAIN_BYTES",
    "POST_ACTIONS",
    "PROBLEM_MEDIA_TYPE",
    "ROUTES",
    "BodyBuffer",
    "JSONScalar",
    "Model",
    "ModelError",
    "ModelInfo",
    "PredictService",
    "Problem",
    "Reply",
    "Settings",
    "SettingsError",
]
