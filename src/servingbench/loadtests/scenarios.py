"""Load scenario specs: what to send, to whom, how hard and for how long, and in which order the bodies go.

A `LoadSpec` is plain data: the harness builds it, `harness.loadgen` sends it to the session's Locust processes as
JSON (`to_json` / `from_json`), and `users.py` reads it back there. Nothing here imports Locust or gevent.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from servingbench.loadtests.openloop import ARRIVAL_PROCESSES, DEFAULT_ARRIVALS, ArrivalProcess

__all__ = [
    "USER_CLASS_BY_KIND",
    "LoadKind",
    "LoadSpec",
    "LoadSpecError",
    "PayloadCycle",
    "is_loopback_host",
    "payload_order",
    "user_class_name",
]

LoadKind = Literal["closed", "open"]

USER_CLASS_BY_KIND: dict[LoadKind, str] = {"closed": "ClosedLoopUser", "open": "OpenLoopUser"}
"""The Locust user class (defined in `users.py`) that drives each kind of load (the extension point)."""

LOOPBACK_HOSTNAMES = frozenset({"localhost"})
ALLOWED_SCHEMES = frozenset({"http", "https"})
PAYLOAD_SEED_SALT = "payloads"
"""Mixed into `seed` for the body order, so it never shares a random stream with an arrival schedule."""


class LoadSpecError(ValueError):
    """A `LoadSpec` field is out of range or inconsistent."""


@dataclass(frozen=True, kw_only=True, init=False)
class LoadSpec:
    """One load scenario against one server.

    `base_url` is scheme://host[:port] with no path; `endpoint` the path posted to; `payloads` the request bodies
    (each the exact JSON bytes, at least one), sent in the order `payload_order(len(payloads), seed)` cycles
    through; `payload=b"..."` is the shorthand for one body (give one of the two, not both).
    `kind="closed"`: `users` concurrent users, each sending its next request as soon as the previous answer
    arrives; `rate` must be None. `kind="open"`: `rate` requests/s are offered regardless of answers, with
    `arrivals` spacing ("poisson": exponential gaps, seeded; "constant": exactly 1/rate apart); `users` is then the
    cap on requests in flight at once (over all load processes): an arrival that finds the cap reached is dropped.
    `warmup_s` (>= 0) is run and discarded, then the window is measured; both in seconds.
    The window: without `target_requests` it lasts `duration_s` (> 0). With a target, `duration_s` is the cap: the
    window ends once `target_requests` (>= 1) requests have started in it and `min_duration_s` (0 .. duration_s,
    default 0) has passed, or at the cap, whichever comes first (see `loadtests.window.WindowPlan`).
    The host must be loopback unless `allow_remote=True` (a user-supplied --target).
    """

    base_url: str
    endpoint: str
    payloads: tuple[bytes, ...]
    kind: LoadKind
    users: int
    warmup_s: float
    duration_s: float
    seed: int
    rate: float | None
    arrivals: ArrivalProcess
    allow_remote: bool
    target_requests: int | None
    min_duration_s: float | None

    def __init__(
        self,
        *,
        base_url: str,
        endpoint: str,
        kind: LoadKind,
        users: int,
        warmup_s: float,
        duration_s: float,
        seed: int,
        payloads: Sequence[bytes] = (),
        payload: bytes | None = None,
        rate: float | None = None,
        arrivals: ArrivalProcess = DEFAULT_ARRIVALS,
        allow_remote: bool = False,
        target_requests: int | None = None,
        min_duration_s: float | None = None,
    ) -> None:
        # Written out (not generated) so that `payload=` keeps working for callers that send one body.
        values = {
            "base_url": base_url,
            "endpoint": endpoint,
            "payloads": _bodies(payloads, payload),
            "kind": kind,
            "users": users,
            "warmup_s": warmup_s,
            "duration_s": duration_s,
            "seed": seed,
            "rate": rate,
            "arrivals": arrivals,
            "allow_remote": allow_remote,
            "target_requests": target_requests,
            "min_duration_s": min_duration_s,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        _check_base_url(self.base_url, allow_remote=self.allow_remote)
        _check(self.endpoint.startswith("/"), f"endpoint must start with '/', got {self.endpoint!r}")
        _check(self.kind in get_args(LoadKind), f"kind must be one of {get_args(LoadKind)}, got {self.kind!r}")
        _check(self.users >= 1, f"users must be >= 1, got {self.users}")
        _check(_finite(self.warmup_s) and self.warmup_s >= 0, f"warmup_s must be >= 0, got {self.warmup_s}")
        _check(_finite(self.duration_s) and self.duration_s > 0, f"duration_s must be > 0, got {self.duration_s}")
        _check(
            self.arrivals in ARRIVAL_PROCESSES, f"arrivals must be one of {ARRIVAL_PROCESSES}, got {self.arrivals!r}"
        )
        if self.kind == "closed":
            _check(self.rate is None, "rate is for open-loop specs; a closed loop is set by users")
        else:
            _check(self.rate is not None and _finite(self.rate) and self.rate > 0, "open loop needs a rate > 0")
        self._validate_window()

    def _validate_window(self) -> None:
        target, minimum = self.target_requests, self.min_duration_s
        if target is not None:
            _check(isinstance(target, int) and target >= 1, f"target_requests must be >= 1, got {target}")
        if minimum is not None:
            _check(target is not None, "min_duration_s needs target_requests (without one the window is duration_s)")
            _check(
                _finite(minimum) and 0 <= minimum <= self.duration_s,
                f"min_duration_s must be 0 .. duration_s ({self.duration_s}), got {minimum}",
            )

    @property
    def payload(self) -> bytes:
        """The body of a single-body spec; LoadSpecError if there are several (use `payloads`)."""
        if len(self.payloads) != 1:
            raise LoadSpecError(f"this spec cycles {len(self.payloads)} bodies; read payloads, not payload")
        return self.payloads[0]

    @property
    def run_time_s(self) -> float:
        """Warm-up plus the longest window (`duration_s`, the cap when there is a target), in seconds."""
        return self.warmup_s + self.duration_s

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict; the bodies are base64 so they round-trip byte for byte."""
        return {
            "base_url": self.base_url,
            "endpoint": self.endpoint,
            "payloads_b64": [base64.b64encode(body).decode("ascii") for body in self.payloads],
            "kind": self.kind,
            "users": self.users,
            "rate": self.rate,
            "arrivals": self.arrivals,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "target_requests": self.target_requests,
            "min_duration_s": self.min_duration_s,
            "seed": self.seed,
            "allow_remote": self.allow_remote,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        """Inverse of `to_json` (validates again)."""
        return cls(
            base_url=data["base_url"],
            endpoint=data["endpoint"],
            payloads=tuple(base64.b64decode(body) for body in data["payloads_b64"]),
            kind=data["kind"],
            users=int(data["users"]),
            rate=None if data["rate"] is None else float(data["rate"]),
            arrivals=data.get("arrivals", DEFAULT_ARRIVALS),
            warmup_s=float(data["warmup_s"]),
            duration_s=float(data["duration_s"]),
            target_requests=None if data.get("target_requests") is None else int(data["target_requests"]),
            min_duration_s=None if data.get("min_duration_s") is None else float(data["min_duration_s"]),
            seed=int(data["seed"]),
            allow_remote=bool(data["allow_remote"]),
        )


def _bodies(payloads: Sequence[bytes], payload: bytes | None) -> tuple[bytes, ...]:
    if payload is not None:
        _check(not payloads, "give payload (one body) or payloads, not both")
        payloads = (payload,)
    bodies = tuple(payloads)
    _check(bool(bodies), "payloads must hold at least one body")
    _check(all(isinstance(body, bytes) for body in bodies), "every payload must be bytes (the exact JSON body)")
    return bodies


def payload_order(count: int, seed: int) -> tuple[int, ...]:
    """The order (indexes into `payloads`) in which a load process sends `count` bodies, then again from the start.

    A seeded shuffle that depends on `seed` and `count` only: every load process of a run, and every config run with
    the same seed, sends the same sequence of bodies.
    """
    order = list(range(count))
    random.Random(f"{seed}/{PAYLOAD_SEED_SALT}").shuffle(order)
    return tuple(order)


class PayloadCycle:
    """The bodies of one load process in their seeded order (`payload_order`), cycling without end.

    One per load process, shared by all of its users: the process's requests, in the order they are issued, follow
    the sequence (closed loop: as users send; open loop: one body per scheduled arrival, dropped ones included, so
    arrival k always carries the same body).
    """

    def __init__(self, payloads: Sequence[bytes], seed: int) -> None:
        if not payloads:
            raise ValueError("PayloadCycle needs at least one body")
        self._bodies = tuple(payloads[index] for index in payload_order(len(payloads), seed))
        self._position = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        body = self._bodies[self._position]
        self._position = (self._position + 1) % len(self._bodies)
        return body


def user_class_name(kind: LoadKind) -> str:
    """The Locust user class for `kind`; NotImplementedError if that kind has no user yet."""
    try:
        return USER_CLASS_BY_KIND[kind]
    except KeyError:
        raise NotImplementedError(f"no Locust user implements {kind!r} load yet") from None


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (a hostname other than localhost is never resolved)."""
    if host.lower() in LOOPBACK_HOSTNAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(base_url: str, *, allow_remote: bool) -> None:
    parts = urlsplit(base_url)
    _check(parts.scheme in ALLOWED_SCHEMES, f"base_url must be http(s)://host[:port], got {base_url!r}")
    _check(parts.hostname is not None, f"base_url has no host: {base_url!r}")
    _check(parts.path in ("", "/") and not parts.query and not parts.fragment, f"base_url has a path: {base_url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on an out-of-range port
    except ValueError as exc:
        raise LoadSpecError(f"base_url has a bad port: {base_url!r}") from exc
    host = parts.hostname or ""
    _check(allow_remote or is_loopback_host(host), f"refusing non-loopback host {host!r} without allow_remote=True")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LoadSpecError(message)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
