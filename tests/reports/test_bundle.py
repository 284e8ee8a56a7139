"""Loading a bundle: what is read, and a clear one-line error for every way a bundle can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servingbench.reports import BundleError, load_bundle

from .builders import FAST_MODEL, BundleSpec, ScenarioSpec, build_bundle

SMALL = BundleSpec(models=(FAST_MODEL,), scenarios=(ScenarioSpec("single-c8", concurrency=8),), repetitions=2)


@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "bundle", SMALL)


def _edit(bundle: Path, change: dict[str, Any]) -> None:
    path = bundle / "results.json"
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))


def test_loads_runs_configs_and_environment(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.version == 1 and bundle.complete
    assert list(bundle.configs) == ["fastapi-uvicorn", "flask-gthread", "flask-sync"]
    assert bundle.label("flask-sync") == "Flask / gunicorn sync"
    assert bundle.label("unknown-config") == "unknown-config"
    assert len(bundle.invalid_runs) == 2
    assert len(bundle.valid_runs) + len(bundle.invalid_runs) == len(bundle.runs)
    assert bundle.fingerprint == "a" * 64
    assert bundle.capacity and bundle.capacity[0].slo_p99_ms == 5.0
    run = bundle.valid_runs[0]
    assert run.latency_ms["p50"] > 0 and run.histograms["total"].startswith("HISTF")
    assert "total_uncorrected" not in run.histograms  # null histograms are dropped


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")


def test_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing .*results\.json"):
        load_bundle(tmp_path)


def test_unknown_version_is_a_clear_error(small_bundle: Path) -> None:
    _edit(small_bundle, {"version": 2})
    with pytest.raises(BundleError, match=r"unsupported results format version 2.*reads version 1"):
        load_bundle(small_bundle)


def test_wrong_format_name(small_bundle: Path) -> None:
    _edit(small_bundle, {"format": "something-else"})
    with pytest.raises(BundleError, match="format is 'something-else'"):
        load_bundle(small_bundle)


def test_invalid_json(small_bundle: Path) -> None:
    (small_bundle / "results.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(small_bundle)


def test_run_missing_a_required_key(small_bundle: Path) -> None:
    doc = json.loads((small_bundle / "results.json").read_text())
    del doc["runs"][0]["valid"]
    (small_bundle / "results.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"runs\[0\]: missing required key 'valid'"):
        load_bundle(small_bundle)


def test_wrongly_typed_field(small_bundle: Path) -> None:
    doc = json.loads((small_bundle / "results.json").read_text())
    doc["runs"][0]["rps"] = "fast"
    (small_bundle / "results.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="'rps' must be a finite number"):
        load_bundle(small_bundle)


def test_duplicate_run_ids(small_bundle: Path) -> None:
    doc = json.loads((small_bundle / "results.json").read_text())
    doc["runs"][1]["id"] = doc["runs"][0]["id"]
    (small_bundle / "results.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="duplicate run id"):
        load_bundle(small_bundle)


def test_optional_fields_may_be_absent(small_bundle: Path) -> None:
    doc = json.loads((small_bundle / "results.json").read_text())
    minimal = {key: doc["runs"][0][key] for key in ("id", "config", "model", "scenario", "repetition", "valid")}
    doc["runs"] = [minimal]
    for key in ("capacity", "fairness", "environment", "plan", "finished"):
        doc.pop(key, None)
    (small_bundle / "results.json").write_text(json.dumps(doc))
    bundle = load_bundle(small_bundle)
    assert bundle.runs[0].kind == "closed" and bundle.runs[0].rps is None
    assert bundle.capacity == () and bundle.fingerprint is None
