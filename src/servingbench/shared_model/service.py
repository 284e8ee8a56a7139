"""The predict core: every decision about a request is made here, so both adapters answer the same bytes.

An adapter only moves bytes: it hands the core the request's media type, declared length and body, and
sends back the :class:`Reply` it gets. Validation, the model call, error bodies and timing live here.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ValidationError

from servingbench.shared_model.columns import RecordSchema, build_frame
from servingbench.shared_model.limits import MAX_DRAIN_BYTES
from servingbench.shared_model.problems import PROBLEM_MEDIA_TYPE, Problem, problem_for_status
from servingbench.shared_model.schema import BatchRequest, PredictRequest, openapi_document
from servingbench.shared_model.settings import Settings
from servingbench.shared_model.types import Model, ModelInfo, Prediction

__all__ = ["GET_ACTIONS", "POST_ACTIONS", "ROUTES", "BodyBuffer", "PredictService", "Reply"]

log = logging.getLogger("servingbench.core")

JSON_MEDIA_TYPE = "application/json"
HeaderValues = Callable[[str], Sequence[str]]
"""An adapter's view of the request headers: every value of the named header (the name in lower case)."""
#: The routes of the contract and the methods each allows (what a 405 names in ``Allow``).
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/predict/batch": ("POST",),
    "/healthz": ("GET", "HEAD"),
    "/model": ("GET", "HEAD"),
    "/openapi.json": ("GET", "HEAD"),
}
#: At most this many field errors are listed in a 422 body; ``detail`` says how many there were.
MAX_LISTED_ERRORS = 20
_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, media type, body bytes and extra headers."""

    status: int
    body: bytes
    media_type: str = JSON_MEDIA_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def problem(cls, problem: Problem) -> Reply:
        return cls(problem.status, problem.body(), PROBLEM_MEDIA_TYPE, dict(problem.headers))


class BodyBuffer:
    """Collects a streamed body up to ``limit`` bytes; past it keeps counting (to drain) but stores nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._chunks: list[bytes] = []

    @property
    def too_large(self) -> bool:
        return self.size > self.limit

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self.too_large:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    def body(self) -> bytes:
        return b"".join(self._chunks)


def _is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != JSON_MEDIA_TYPE:
        return False
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _declared_length(content_length: str | None) -> int | None:
    if content_length is None or not content_length.strip().isdigit():
        return None
    return int(content_length)


def _json_value(value: Prediction) -> Prediction | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):  # class probabilities
        return {key: None if p is None or not math.isfinite(p) else p for key, p in value.items()}
    return value


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _first_column(errors: list[dict[str, Any]]) -> str:
    """``; column 'age': Field required`` for the first error located at a column, else empty."""
    for error in errors:
        loc = error["loc"]
        column = next((part for part in loc[1:] if isinstance(part, str)), None)
        if column is not None:
            return f"; column {column[:80]!r}: {error['msg']}"
    return ""


def _field_errors(err: ValidationError) -> list[dict[str, Any]]:
    listed = err.errors(include_url=False, include_context=False, include_input=False)[:MAX_LISTED_ERRORS]
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in listed]


def _server_timing(validate_ns: int, predict_ns: int) -> str:
    return f"validate;dur={validate_ns / _NS_PER_MS:.3f}, predict;dur={predict_ns / _NS_PER_MS:.3f}"


class PredictService:
    """One loaded model behind the contract. Thread-safe: it holds no per-request state."""

    def __init__(self, model: Model, settings: Settings | None = None) -> None:
        self.model = model
        self.settings = settings or Settings()
        self.info: ModelInfo = model.info
        self._records = RecordSchema(self.info.columns) if self.info.named else None
        probabilities = self.info.output is not None and self.info.output.kind == "probabilities"
        self._keys = ("probabilities", "probabilities") if probabilities else ("prediction", "predictions")
        self._model_body = _dump(self.info.as_json())
        self._openapi_body = _dump(openapi_document(self.info, max_rows=self.settings.max_batch_rows))

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictService:
        """Load the model named by ``settings`` (raises ``ModelError`` with a one-line reason)."""
        from servingbench.shared_model.models import resolve_model
        from servingbench.shared_model.threads import limit_native_threads

        limit_native_threads(settings.blas_threads)
        model = resolve_model(
            settings.model,
            models_dir=settings.resolved_models_dir(),
            allow_pickle=settings.allow_pickle,
            pickle_sha256=settings.pickle_sha256,
        )
        return cls(model, settings)

    # -- request gates, in the order the contract applies them: 415, then 413 ---------------------------
    def check_post(
        self, content_types: list[str], content_length: str | None, content_encoding: str | None = None
    ) -> Reply | None:
        """Refuse before reading the body: a wrong media type or coding (415), an ambiguous one (400), or a
        declared length past the drain cap (413).

        ``content_types`` holds every ``Content-Type`` header sent. A body over the limit but under
        :data:`MAX_DRAIN_BYTES` is read and discarded by the adapter first, so a client still sending reads a
        clean 413 instead of a reset connection.
        """
        if len(content_types) > 1:
            return Reply.problem(Problem(400, "More than one Content-Type header", kind="bad-request"))
        content_type = content_types[0] if content_types else None
        if not _is_json_media_type(content_type):
            detail = f"Content-Type must be {JSON_MEDIA_TYPE} (UTF-8), got {(content_type or 'none')[:100]!r}"
            return Reply.problem(Problem(415, detail))
        if content_encoding and content_encoding.strip().lower() != "identity":
            detail = f"Content-Encoding {content_encoding[:40]!r} is not supported; send the body uncompressed"
            return Reply.problem(Problem(415, detail, kind="unsupported-content-encoding"))
        declared = _declared_length(content_length)
        if declared is not None and declared > MAX_DRAIN_BYTES:
            return self.too_large()  # too big even to drain; the server drops the connection after answering
        return None

    def new_body(self) -> BodyBuffer:
        return BodyBuffer(self.settings.max_body_bytes)

    def read_body(self, headers: HeaderValues, chunks: Iterable[bytes]) -> bytes | Reply:
        """The gates of :meth:`check_post` on the request's headers (``headers(name)``: every value of that header,
        any case of the name), then the body from ``chunks`` within the limit (past it, drained up to
        :data:`MAX_DRAIN_BYTES` and never held): the bytes, or the refusal to send."""
        if early := self._check_headers(headers):
            return early
        buffer = self.new_body()
        for chunk in chunks:
            buffer.feed(chunk)
            if buffer.size > MAX_DRAIN_BYTES:
                break
        return self.too_large() if buffer.too_large else buffer.body()

    async def read_body_async(self, headers: HeaderValues, chunks: AsyncIterable[bytes]) -> bytes | Reply:
        """:meth:`read_body` for an ASGI adapter: ``chunks`` arrive on the event loop."""
        if early := self._check_headers(headers):
            return early
        buffer = self.new_body()
        async for chunk in chunks:
            buffer.feed(chunk)
            if buffer.size > MAX_DRAIN_BYTES:
                break
        return self.too_large() if buffer.too_large else buffer.body()

    def _check_headers(self, headers: HeaderValues) -> Reply | None:
        length, coding = headers("content-length"), headers("content-encoding")
        return self.check_post(
            list(headers("content-type")), length[0] if length else None, coding[0] if coding else None
        )

    def too_large(self) -> Reply:
        limit = self.settings.max_body_bytes
        return Reply.problem(Problem(413, f"Request body is larger than the limit of {limit} bytes"))

    # -- routes ------------------------------------------------------------------------------------------
    def predict(self, body: bytes) -> Reply:
        """``POST /predict``: one row (a list of numbers, or a record for a named-column model)."""
        if self._records is not None:
            return self._handle(body, self._records.single, self._frame_single, single=True)
        return self._handle(body, PredictRequest, self._rows_single, single=True)

    def predict_batch(self, body: bytes) -> Reply:
        """``POST /predict/batch``: many rows, predicted in one vectorised call."""
        if self._records is not None:
            return self._handle(body, self._records.batch, self._frame_batch, single=False)
        return self._handle(body, BatchRequest, self._rows_batch, single=False)

    def healthz(self) -> Reply:
        return Reply(200, b'{"status":"ok"}')

    def model_info(self) -> Reply:
        return Reply(200, self._model_body)

    def openapi(self) -> Reply:
        return Reply(200, self._openapi_body)

    def not_found(self, path: str) -> Reply:
        return Reply.problem(problem_for_status(404, "No such route; see /openapi.json"))

    def method_not_allowed(self, method: str, path: str) -> Reply:
        allow = ROUTES.get(path, ())
        detail = f"Method {method[:20]!r} is not allowed on {path[:200]!r}"
        return Reply.problem(problem_for_status(405, detail, allow=allow))

    def error_reply(self, status: int, method: str, path: str) -> Reply:
        """Map a status the framework raised before reaching a route (404, 405, 413, ...) to the contract."""
        if status == 405:
            return self.method_not_allowed(method, path)
        if status == 404:
            return self.not_found(path)
        if status == 413:
            return self.too_large()
        if 400 <= status < 500:
            return Reply.problem(problem_for_status(status))
        return Reply.problem(problem_for_status(500, "The server failed; see its log"))

    # -- internals ---------------------------------------------------------------------------------------
    def _handle(
        self,
        body: bytes,
        schema: type[BaseModel],
        to_rows: Callable[[Any], Any],
        *,
        single: bool,
    ) -> Reply:
        start = time.perf_counter_ns()
        try:
            request = schema.model_validate_json(body)
        except ValidationError as err:
            return Reply.problem(self._validation_problem(err))
        rows = to_rows(request)
        if isinstance(rows, Problem):
            return Reply.problem(rows)
        validated = time.perf_counter_ns()
        try:
            outputs = self.model.predict(rows)
        except (ValueError, OverflowError) as err:
            # Input-caused: e.g. a finite float64 too large for a tree model's float32.
            msg = f"The model cannot predict this input: {str(err).splitlines()[0][:200] if str(err) else 'invalid'}"
            return Reply.problem(Problem(422, msg, [{"loc": [], "msg": msg, "type": "model_input"}]))
        except Exception:
            log.exception("model %s failed on a valid request", self.info.name)
            return Reply.problem(Problem(500, "The model failed on this input; see the server log"))
        done = time.perf_counter_ns()
        values = [_json_value(v) for v in outputs]
        doc = {self._keys[0]: values[0]} if single else {self._keys[1]: values}
        return Reply(200, _dump(doc), headers={"Server-Timing": _server_timing(validated - start, done - validated)})

    def _validation_problem(self, err: ValidationError) -> Problem:
        raw = err.errors(include_url=False, include_context=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in raw):
            return Problem(400, raw[0]["msg"])
        errors = _field_errors(err)
        where = _first_column(errors) if self._records is not None else ""
        return Problem(422, f"{len(raw)} validation error(s) in the request body{where}", errors)

    def _batch_problem(self, rows: int) -> Problem | None:
        limit = self.settings.max_batch_rows
        if rows <= limit:
            return None
        msg = f"A batch holds at most {limit} rows, got {rows}"
        return Problem(422, msg, [{"loc": ["instances"], "msg": msg, "type": "batch_too_large"}])

    def _frame_single(self, request: Any) -> Any:
        records = cast("RecordSchema", self._records)
        return self._build_frame(records, [request.features])

    def _frame_batch(self, request: Any) -> Any:
        records = cast("RecordSchema", self._records)
        return self._batch_problem(len(request.instances)) or self._build_frame(records, request.instances)

    @staticmethod
    def _build_frame(records: RecordSchema, rows: list[BaseModel]) -> Any:
        # Timed as part of "validate" in Server-Timing: the frame is the named path's input checking and shaping.
        return build_frame(records.columns, records.values(rows))

    def _count_problem(self, loc: list[str | int], got: int) -> Problem:
        want = self.info.n_features
        msg = f"Expected {want} features, got {got}"
        return Problem(422, msg, [{"loc": loc, "msg": msg, "type": "feature_count"}])

    def _rows_single(self, request: PredictRequest) -> np.ndarray[Any, np.dtype[np.float64]] | Problem:
        if len(request.features) != self.info.n_features:
            return self._count_problem(["features"], len(request.features))
        return np.asarray([request.features], dtype=np.float64)

    def _rows_batch(self, request: BatchRequest) -> np.ndarray[Any, np.dtype[np.float64]] | Problem:
        if too_many := self._batch_problem(len(request.instances)):
            return too_many
        for i, row in enumerate(request.instances):
            if len(row) != self.info.n_features:
                return self._count_problem(["instances", i], len(row))
        return np.asarray(request.instances, dtype=np.float64)


GET_ACTIONS: dict[str, Callable[[PredictService], Reply]] = {
    "/healthz": PredictService.healthz,
    "/model": PredictService.model_info,
    "/openapi.json": PredictService.openapi,
}
"""What each GET route of the contract answers: every adapter routes these paths to these methods."""
POST_ACTIONS: dict[str, Callable[[PredictService, bytes], Reply]] = {
    "/predict": PredictService.predict,
    "/predict/batch": PredictService.predict_batch,
}
"""What each POST route of the contract answers, given the body's bytes."""
