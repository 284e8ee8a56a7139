"""LoadSpec validation (loopback only unless allowed), round trips, and import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servingbench.loadtests import LoadSpec, LoadSpecError, LocustRunConfig, is_loopback_host, user_class_name

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


def test_spec_and_run_config_round_trip(tmp_path: Path) -> None:
    spec = _spec(payload=b'{"instances": [[1e-300, -0.0]]}\n')
    config = LocustRunConfig(
        spec=spec, result_path=tmp_path / "r.json", events_path=tmp_path / "e.jsonl", final_report_timeout_s=3.0
    )
    config.write(tmp_path / "config.json")
    assert LocustRunConfig.read(tmp_path / "config.json") == config
    assert LoadSpec.from_json(spec.to_json()).payload == spec.payload


def test_importing_the_packages_pulls_in_neither_locust_nor_gevent() -> None:
    code = (
        "import sys, servingbench.loadtests, servingbench.harness.loadgen; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')); "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
