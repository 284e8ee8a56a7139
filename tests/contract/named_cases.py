"""Requests to a named-column model (age integer, income number, city one of three, member boolean; no nulls, no
unseen city) and what each must answer; shared by the in-process and the real-server suites."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.contract.cases import JSON_CT, Case

RECORD: dict[str, Any] = {"age": 41, "income": 52.5, "city": "Oslo", "member": True}
MAX_BATCH_ROWS = 1024


@dataclass(frozen=True)
class NamedCase:
    name: str
    doc: Any
    status: int
    column: str | None = None  # the column the 422 must name
    error_type: str | None = None
    path: str = "/predict"
    raw: bytes | None = None

    @property
    def body(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.doc).encode()

    def as_case(self) -> Case:
        return Case(self.name, "POST", self.path, self.status, self.body, dict(JSON_CT))


def _with(**changes: Any) -> dict[str, Any]:
    return {"features": {**RECORD, **changes}}


def _without(column: str) -> dict[str, Any]:
    return {"features": {k: v for k, v in RECORD.items() if k != column}}


NAMED_CASES: list[NamedCase] = [
    NamedCase("ok", {"features": RECORD}, 200),
    NamedCase("ok-reordered", {"features": dict(reversed(RECORD.items()))}, 200),
    NamedCase("ok-int-for-number", _with(income=52), 200),
    NamedCase("ok-batch", {"instances": [RECORD, _with(city="Bergen")["features"]]}, 200, path="/predict/batch"),
    NamedCase("missing", _without("age"), 422, "age", "missing"),
    NamedCase("unknown", _with(zip="0150"), 422, "zip", "extra_forbidden"),
    NamedCase("wrong-type-string", _with(age="41"), 422, "age", "int_type"),
    NamedCase("wrong-type-float-for-integer", _with(age=41.5), 422, "age", "int_type"),
    NamedCase("wrong-type-bool-for-number", _with(income=True), 422, "income", "float_type"),
    NamedCase("wrong-type-number-for-bool", _with(member=1), 422, "member", "bool_type"),
    NamedCase("null", _with(city=None), 422, "city", "string_type"),
    NamedCase("unseen-category", _with(city="Stavanger"), 422, "city", "unknown_category"),
    NamedCase("extra-nested", _with(age={"years": 41}), 422, "age", "int_type"),
    NamedCase("extra-nested-list", _with(city=["Oslo"]), 422, "city", "string_type"),
    NamedCase("empty-object", {"features": {}}, 422, "age", "missing"),
    NamedCase("too-large-int", _with(age=2**70), 422, "age"),
    NamedCase(
        "too-large-number",
        None,
        422,
        "income",
        raw=b'{"features":{"age":1,"income":1e400,"city":"Oslo","member":true}}',
    ),
    NamedCase("nan", None, 422, "income", raw=b'{"features":{"age":1,"income":NaN,"city":"Oslo","member":true}}'),
    NamedCase("list-not-record", {"features": list(RECORD.values())}, 422),
    NamedCase(
        "batch-record-bad", {"instances": [RECORD, _with(city="X")["features"]]}, 422, "city", path="/predict/batch"
    ),
    NamedCase("batch-empty", {"instances": []}, 422, path="/predict/batch"),
    NamedCase("batch-too-big", {"instances": [RECORD] * (MAX_BATCH_ROWS + 1)}, 422, path="/predict/batch"),
    NamedCase("batch-as-single", {"features": RECORD}, 422, path="/predict/batch"),
]
