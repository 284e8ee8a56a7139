"""Load scenario specs: what to send, to whom, how hard and for how long.

A `LoadSpec` is plain data: the harness builds it, `harness.loadgen` hands it to the Locust processes through a
`LocustRunConfig` JSON file, and `locustfile.py` reads it back. Nothing here imports Locust or gevent.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from servingbench.loadtests.openloop import ARRIVAL_PROCESSES, DEFAULT_ARRIVALS, ArrivalProcess

__all__ = [
    "CONFIG_ENV_VAR",
    "LOCUSTFILE_PATH",
    "USER_CLASS_BY_KIND",
    "LoadKind",
    "LoadSpec",
    "LoadSpecError",
    "LocustRunConfig",
    "is_loopback_host",
    "user_class_name",
]

LoadKind = Literal["closed", "open"]

CONFIG_ENV_VAR = "SERVINGBENCH_LOAD_CONFIG"
"""Environment variable holding the path of the `LocustRunConfig` JSON file read by `locustfile.py`."""

LOCUSTFILE_PATH = Path(__file__).with_name("locustfile.py")
"""The file Locust loads with `-f`; it defines the user classes named in `USER_CLASS_BY_KIND`."""

USER_CLASS_BY_KIND: dict[LoadKind, str] = {"closed": "ClosedLoopUser", "open": "OpenLoopUser"}
"""The Locust user class (defined in `locustfile.py`) that drives each kind of load (the extension point)."""

LOOPBACK_HOSTNAMES = frozenset({"localhost"})
ALLOWED_SCHEMES = frozenset({"http", "https"})


class LoadSpecError(ValueError):
    """A `LoadSpec` field is out of range or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """One load scenario against one server.

    `base_url` is scheme://host[:port] with no path; `endpoint` the path posted to; `payload` the exact request body
    (JSON bytes). `kind="closed"`: `users` concurrent users, each sending its next request as soon as the previous
    answer arrives; `rate` must be None. `kind="open"`: `rate` requests/s are offered regardless of answers, with
    `arrivals` spacing ("poisson": exponential gaps, seeded; "constant": exactly 1/rate apart); `users` is then the
    cap on requests in flight at once (over all load processes): an arrival that finds the cap reached is dropped.
    `warmup_s` (>= 0) is run and discarded, then `duration_s` (> 0) is measured; both in seconds.
    The host must be loopback unless `allow_remote=True` (a user-supplied --target).
    """

    base_url: str
    endpoint: str
    payload: bytes
    kind: LoadKind
    users: int
    warmup_s: float
    duration_s: float
    seed: int
    rate: float | None = None
    arrivals: ArrivalProcess = DEFAULT_ARRIVALS
    allow_remote: bool = False

    def __post_init__(self) -> None:
        _check_base_url(self.base_url, allow_remote=self.allow_remote)
        _check(self.endpoint.startswith("/"), f"endpoint must start with '/', got {self.endpoint!r}")
        _check(isinstance(self.payload, bytes), "payload must be bytes (the exact JSON body)")
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

    @property
    def run_time_s(self) -> float:
        """Warm-up plus measured duration, in seconds."""
        return self.warmup_s + self.duration_s

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict; the payload is base64 so it round-trips byte for byte."""
        return {
            "base_url": self.base_url,
            "endpoint": self.endpoint,
            "payload_b64": base64.b64encode(self.payload).decode("ascii"),
            "kind": self.kind,
            "users": self.users,
            "rate": self.rate,
            "arrivals": self.arrivals,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "allow_remote": self.allow_remote,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        """Inverse of `to_json` (validates again)."""
        return cls(
            base_url=data["base_url"],
            endpoint=data["endpoint"],
            payload=base64.b64decode(data["payload_b64"]),
            kind=data["kind"],
            users=int(data["users"]),
            rate=None if data["rate"] is None else float(data["rate"]),
            arrivals=data.get("arrivals", DEFAULT_ARRIVALS),
            warmup_s=float(data["warmup_s"]),
            duration_s=float(data["duration_s"]),
            seed=int(data["seed"]),
            allow_remote=bool(data["allow_remote"]),
        )


@dataclass(frozen=True, kw_only=True)
class LocustRunConfig:
    """What the Locust processes of one run need beyond their command line.

    `result_path`: the result JSON the master (or the single local process) writes at the end.
    `events_path`: JSON lines appended when the measurement window starts and ends (the harness's cue).
    `final_report_timeout_s`: how long the master waits, after stopping the workers, for their last samples.
    `processes`: how many Locust processes run users (1 local, or the number of workers); an open-loop rate and
    in-flight cap are split evenly between them.
    """

    spec: LoadSpec
    result_path: Path
    events_path: Path
    final_report_timeout_s: float
    processes: int = 1

    def write(self, path: Path) -> None:
        """Write this config as JSON to `path`."""
        data = {
            "spec": self.spec.to_json(),
            "result_path": str(self.result_path),
            "events_path": str(self.events_path),
            "final_report_timeout_s": self.final_report_timeout_s,
            "processes": self.processes,
        }
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> LocustRunConfig:
        """Read a config written by `write`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            spec=LoadSpec.from_json(data["spec"]),
            result_path=Path(data["result_path"]),
            events_path=Path(data["events_path"]),
            final_report_timeout_s=float(data["final_report_timeout_s"]),
            processes=int(data.get("processes", 1)),
        )


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
