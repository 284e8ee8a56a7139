"""Requests every adapter must answer the same way, with the status the contract gives each."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

N_FEATURES = 10  # the default models are trained on scikit-learn's diabetes data set (10 features)
ROW = [0.01 * i for i in range(N_FEATURES)]
JSON_CT = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_CT))


def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _post(name: str, body: bytes, status: int, path: str = "/predict", **headers: str) -> Case:
    return Case(name, "POST", path, status, body, headers or dict(JSON_CT))


CASES: list[Case] = [
    _post("ok", _j({"features": ROW}), 200),
    _post("ok-ints", _j({"features": list(range(N_FEATURES))}), 200),
    _post("ok-charset", _j({"features": ROW}), 200, **{"Content-Type": "application/json; charset=UTF-8"}),
    _post("ok-case", _j({"features": ROW}), 200, **{"Content-Type": "Application/JSON"}),
    _post("ok-batch", _j({"instances": [ROW, ROW, ROW]}), 200, "/predict/batch"),
    _post("too-few", _j({"features": ROW[:-1]}), 422),
    _post("too-many", _j({"features": [*ROW, 1.0]}), 422),
    _post("empty-features", _j({"features": []}), 422),
    _post("string", _j({"features": ["1", *ROW[1:]]}), 422),
    _post("bool", _j({"features": [True, *ROW[1:]]}), 422),
    _post("null", _j({"features": [None, *ROW[1:]]}), 422),
    _post("nested", _j({"features": [[1.0], *ROW[1:]]}), 422),
    _post("nan", b'{"features":[NaN' + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("infinity", b'{"features":[Infinity' + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("minus-infinity", b'{"features":[-Infinity' + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("huge-float", b'{"features":[1e400' + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("near-overflow", b'{"features":[1.7976931348623157e308' + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("ok-large", b'{"features":[1e29' + b",-1e29" * (N_FEATURES - 1) + b"]}", 200),
    _post("huge-int", b'{"features":[' + b"9" * 400 + b",0" * (N_FEATURES - 1) + b"]}", 422),
    _post("missing-field", _j({"rows": ROW}), 422),
    _post("extra-field", _j({"features": ROW, "x": 1}), 422),
    _post("not-object", _j(ROW), 422),
    _post("scalar", b"3", 422),
    _post("string-body", b'"features"', 422),
    _post("features-object", _j({"features": {"a": 1}}), 422),
    _post("malformed", b'{"features": [1, 2', 400),
    _post("trailing", _j({"features": ROW}) + b"x", 400),
    _post("empty-body", b"", 400),
    _post("invalid-utf8", b'{"features": ["\xff\xfe"]}', 400),
    _post("bom", b"\xef\xbb\xbf" + _j({"features": ROW}), 400),
    _post("deep", b"[" * 5000 + b"]" * 5000, 400),
    _post("single-quotes", b"{'features': [1]}", 400),
    _post("text-plain", _j({"features": ROW}), 415, **{"Content-Type": "text/plain"}),
    _post("form", b"features=1", 415, **{"Content-Type": "application/x-www-form-urlencoded"}),
    _post("latin1", _j({"features": ROW}), 415, **{"Content-Type": "application/json; charset=latin-1"}),
    _post("gzip", _j({"features": ROW}), 415, **{"Content-Type": "application/json", "Content-Encoding": "gzip"}),
    _post(
        "identity", _j({"features": ROW}), 200, **{"Content-Type": "application/json", "Content-Encoding": "identity"}
    ),
    _post("ct-params", _j({"features": ROW}), 200, **{"Content-Type": 'application/json;charset="utf-8";v=1'}),
    Case("long-url", "GET", "/" + "a" * 9000, 404),
    Case("no-content-type", "POST", "/predict", 415, _j({"features": ROW}), {}),
    _post("batch-empty", _j({"instances": []}), 422, "/predict/batch"),
    _post("batch-ragged", _j({"instances": [ROW, ROW[:-1]]}), 422, "/predict/batch"),
    _post("batch-too-big", _j({"instances": [ROW] * 1025}), 422, "/predict/batch"),
    _post("batch-flat", _j({"instances": ROW}), 422, "/predict/batch"),
    _post("batch-nan", b'{"instances":[[NaN' + b",0" * (N_FEATURES - 1) + b"]]}", 422, "/predict/batch"),
    _post("batch-as-single", _j({"features": ROW}), 422, "/predict/batch"),
    _post("over-limit", b'{"features":[' + b"0," * (600 * 1024) + b"0]}", 413),
    Case("healthz", "GET", "/healthz", 200),
    Case("healthz-head", "HEAD", "/healthz", 200),
    Case("model", "GET", "/model", 200),
    Case("openapi", "GET", "/openapi.json", 200),
    Case("unknown", "GET", "/nope", 404),
    Case("unknown-post", "POST", "/nope", 404, _j({})),
    Case("trailing-slash", "POST", "/predict/", 404, _j({"features": ROW})),
    Case("double-slash", "GET", "//healthz", 404),
    Case("get-predict", "GET", "/predict", 405),
    Case("put-predict", "PUT", "/predict", 405, _j({"features": ROW})),
    Case("head-predict", "HEAD", "/predict", 405),
    Case("options-predict", "OPTIONS", "/predict", 405),
    Case("delete-healthz", "DELETE", "/healthz", 405),
    Case("post-model", "POST", "/model", 405, _j({})),
]
