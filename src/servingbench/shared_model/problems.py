"""RFC 9457 ``application/problem+json`` bodies, identical on both adapters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = ["PROBLEM_MEDIA_TYPE", "Problem", "problem_for_status"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:servingbench:problem:"

#: The problem ``type`` (suffix) and ``title`` for every status the contract uses.
_KINDS: dict[int, tuple[str, str]] = {
    400: ("malformed-json", "Malformed JSON"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    413: ("body-too-large", "Request Body Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("validation-error", "Validation Error"),
    500: ("internal-error", "Internal Server Error"),
}

#: Kinds that share a status with a more common one: their type suffix and title.
_OTHER_KINDS: dict[str, str] = {
    "bad-request": "Bad Request",
    "unsupported-content-encoding": "Unsupported Content Encoding",
}


@dataclass(frozen=True)
class Problem:
    """One problem: ``status`` is the HTTP status; ``errors`` lists field-level problems (may be empty)."""

    status: int
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    kind: str | None = None  # one of _OTHER_KINDS, when the status's usual kind does not fit

    @property
    def type(self) -> str:
        return _TYPE_BASE + (self.kind or _KINDS.get(self.status, ("error", ""))[0])

    @property
    def title(self) -> str:
        if self.kind:
            return _OTHER_KINDS[self.kind]
        return _KINDS.get(self.status, ("", HTTPStatus(self.status).phrase))[1]

    def body(self) -> bytes:
        """The JSON body, compact and with a fixed key order so both adapters send the same bytes."""
        doc = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        doc["errors"] = self.errors
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def problem_for_status(status: int, detail: str | None = None, *, allow: tuple[str, ...] = ()) -> Problem:
    """A problem for a plain HTTP status (404, 405, ...); ``allow`` fills the 405 ``Allow`` header."""
    headers = {"Allow": ", ".join(allow)} if allow else {}
    kind = "bad-request" if status == 400 else None  # 400 from the framework: not a JSON parse error
    return Problem(status=status, detail=detail or HTTPStatus(status).description, headers=headers, kind=kind)
