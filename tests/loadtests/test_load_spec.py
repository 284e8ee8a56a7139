"""LoadSpec validation (loopback only unless allowed), bodies and their order, round trips, and import hygiene."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from typing import Any

import pytest

from servingbench.loadtests import (
    LoadSpec,
    LoadSpecError,
    PayloadCycle,
    is_loopback_host,
    payload_order,
    user_class_name,
)

VALID: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8000",
    "endpoint": "/predict",
    "payload": b'{"features": [1.0, 2.0]}',
    "kind": "closed",
    "users": 4,
    "warmup_s": 1.0,
    "duration_s": 5.0,
    "seed": 7,
}


def _spec(**changes: Any) -> LoadSpec:
    return LoadSpec(**{**VALID, **changes})


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8000", "http://127.3.2.1", "http://localhost:1", "http://LocalHost:1/", "https://[::1]:8443"],
)
def test_loopback_hosts_are_accepted(base_url: str) -> None:
    assert _spec(base_url=base_url).base_url == base_url


@pytest.mark.parametrize(
    "base_url",
    [
        "http://10.0.0.1:8000",
        "http://192.168.1.10",
        "http://0.0.0.0:8000",
        "http://[::]:8000",
        "http://example.com",
        "http://127.0.0.1.example.com",
        "http://localhost.example.com",
    ],
)
def test_remote_hosts_are_refused_unless_allowed(base_url: str) -> None:
    with pytest.raises(LoadSpecError, match="non-loopback"):
        _spec(base_url=base_url)
    assert _spec(base_url=base_url, allow_remote=True).allow_remote


@pytest.mark.parametrize(
    "changes",
    [
        {"base_url": "ftp://127.0.0.1"},
        {"base_url": "127.0.0.1:8000"},
        {"base_url": "http://127.0.0.1:8000/api"},
        {"base_url": "http://127.0.0.1:99999"},
        {"endpoint": "predict"},
        {"payload": '{"features": []}'},
        {"kind": "burst"},
        {"users": 0},
        {"warmup_s": -1.0},
        {"warmup_s": float("nan")},
        {"duration_s": 0.0},
        {"duration_s": float("inf")},
        {"rate": 10.0},
        {"kind": "open"},
        {"kind": "open", "rate": 0.0},
        {"payload": None},
        {"payload": None, "payloads": ()},
        {"payload": None, "payloads": (b"{}", "{}")},
        {"payloads": (b"{}",)},
        {"target_requests": 0},
        {"min_duration_s": 1.0},
        {"target_requests": 10, "min_duration_s": 6.0},
        {"target_requests": 10, "min_duration_s": -1.0},
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(LoadSpecError):
        _spec(**changes)


def test_each_kind_has_its_user() -> None:
    spec = _spec(kind="open", rate=50.0)
    assert (spec.rate, spec.arrivals) == (50.0, "poisson")
    assert user_class_name("closed") == "ClosedLoopUser"
    assert user_class_name(spec.kind) == "OpenLoopUser"


def test_is_loopback_host() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("8.8.8.8") and not is_loopback_host("myhost")


def test_spec_round_trips_through_json() -> None:
    spec = _spec(
        payload=None,
        payloads=(b'{"instances": [[1e-300, -0.0]]}\n', b'{"features": {"city": "\xc3\xa9"}}'),
        target_requests=500,
        min_duration_s=1.5,
    )
    again = LoadSpec.from_json(spec.to_json())
    assert again == spec
    assert again.payloads == spec.payloads


def test_one_body_is_payload_or_payloads_alike() -> None:
    one = _spec()
    assert one.payloads == (VALID["payload"],) and one.payload == VALID["payload"]
    assert _spec(payload=None, payloads=[VALID["payload"]]) == one
    assert dataclasses.replace(one, users=9).payloads == one.payloads  # replace() keeps working
    with pytest.raises(LoadSpecError, match="payloads"):
        _spec(payload=None, payloads=(b"{}", b"[]")).payload  # noqa: B018 - several bodies: ask for payloads


def test_window_fields_default_to_a_fixed_window() -> None:
    spec = _spec()
    assert (spec.target_requests, spec.min_duration_s, spec.run_time_s) == (None, None, 6.0)
    sized = _spec(target_requests=1000, min_duration_s=2.0)
    assert (sized.target_requests, sized.min_duration_s, sized.run_time_s) == (1000, 2.0, 6.0)


def test_the_body_order_depends_on_the_seed_only() -> None:
    assert payload_order(5, seed=3) == payload_order(5, seed=3)
    assert sorted(payload_order(5, seed=3)) == [0, 1, 2, 3, 4]
    assert len({payload_order(8, seed=seed) for seed in range(10)}) > 1  # seeds do shuffle
    assert payload_order(1, seed=99) == (0,)


def test_the_cycle_repeats_the_seeded_order() -> None:
    bodies = [b"a", b"b", b"c", b"d"]
    order = payload_order(len(bodies), seed=11)
    sent = list(itertools.islice(PayloadCycle(bodies, seed=11), 3 * len(bodies)))
    assert sent == [bodies[i] for i in order] * 3
    assert sent == list(itertools.islice(PayloadCycle(bodies, seed=11), 3 * len(bodies)))
    with pytest.raises(ValueError):
        PayloadCycle([], seed=1)


@pytest.mark.slow
def test_importing_the_packages_pulls_in_neither_locust_nor_gevent() -> None:
    code = (
        "import sys, servingbench.loadtests, servingbench.loadtests.protocol, servingbench.harness.loadgen, "
        "servingbench.harness.distributed; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')); "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
