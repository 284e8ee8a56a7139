"""Writing the results bundle: atomic files, the latest link, summary.csv columns, a document the report can load."""

from __future__ import annotations

import csv
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from servingbench.files import write_atomic
from servingbench.harness.bundle import (
    LATEST_LINK,
    RESULTS_FILE,
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    BundleWriter,
    create_bundle_dir,
    link_latest,
    summary_csv,
)
from servingbench.reports.bundle import load_bundle

MOMENT = datetime(2026, 11, 24, 16, 40, 0, tzinfo=UTC)
ISSUE_COLUMNS = (
    "config, framework, server, workers, model, scenario, concurrency, repetition, requests, errors, rps, p50_ms, "
    "p90_ms, p99_ms, p999_ms, server_cpu_us_per_request, server_rss_mb, generator_cpu_pct, valid, invalid_reason"
).split(", ")


def run_record(run_id: str = "r0001", **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": run_id,
        "config": "fastapi-uvicorn",
        "framework": "fastapi",
        "server": "uvicorn",
        "route": "def",
        "workers": 1,
        "threads": None,
        "model": "fast",
        "scenario": "single-c8",
        "kind": "closed",
        "concurrency": 8,
        "target_rps": None,
        "repetition": 0,
        "requests": 1234,
        "errors": 0,
        "rps": 411.33333,
        "latency_ms": {"p50": 0.7311, "p90": 1.2, "p99": 2.5, "p999": 4.1},
        "server_cpu_us_per_request": 656.04,
        "server_rss_mb": 95.2,
        "generator_cpu_pct": 45.0,
        "valid": True,
        "invalid_reason": None,
        "status": "ok",
    }
    record.update(changes)
    return record


def writer(out_root: Path, moment: datetime | None = MOMENT) -> BundleWriter:
    return BundleWriter(
        out_root,
        preset="quick",
        seed=7,
        environment={"cpu_model": "test"},
        plan={"preset": "quick"},
        fairness=["a rule"],
        configs={"fastapi-uvicorn": {"label": "FastAPI / uvicorn (def) x1", "command": ["python"]}},
        moment=moment,
    )


def test_bundle_dir_is_named_by_utc_time_and_never_reused(tmp_path: Path) -> None:
    first = create_bundle_dir(tmp_path, MOMENT)
    second = create_bundle_dir(tmp_path, MOMENT)
    assert first.name == "20261124T164000Z"
    assert second.name == "20261124T164000Z-2"
    assert (first / "runs").is_dir()


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_atomic(path, "old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["f.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.json"
    write_atomic(path, "old")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_latest_is_a_relative_symlink_moved_to_the_newest(tmp_path: Path) -> None:
    first, second = create_bundle_dir(tmp_path, MOMENT), create_bundle_dir(tmp_path, MOMENT)
    assert link_latest(tmp_path, first)
    assert link_latest(tmp_path, second)
    link = tmp_path / LATEST_LINK
    assert os.readlink(link) == second.name
    assert link.resolve() == second.resolve()


def test_latest_leaves_a_real_directory_alone(tmp_path: Path) -> None:
    (tmp_path / LATEST_LINK).mkdir()
    assert not link_latest(tmp_path, create_bundle_dir(tmp_path, MOMENT))


def test_summary_csv_columns_and_formatting() -> None:
    text = summary_csv([run_record(), run_record("r0002", valid=False, invalid_reason="too few requests (3 < 100)")])
    rows = list(csv.DictReader(text.splitlines()))
    header = text.splitlines()[0].split(",")
    assert tuple(header) == SUMMARY_COLUMNS
    assert header[: len(ISSUE_COLUMNS)] == ISSUE_COLUMNS
    first = rows[0]
    assert first["p50_ms"] == "0.731"
    assert first["p999_ms"] == "4.100"
    assert first["rps"] == "411.3"
    assert first["valid"] == "true"
    assert first["invalid_reason"] == ""
    assert first["target_rps"] == ""
    assert first["run_id"] == "r0001"
    assert rows[1]["invalid_reason"] == "too few requests (3 < 100)"


def test_writer_rewrites_after_every_run_and_finishes(tmp_path: Path) -> None:
    bundle = writer(tmp_path)
    bundle.save()
    document = json.loads((bundle.dir / RESULTS_FILE).read_text())
    assert (document["format"], document["version"], document["complete"], document["runs"]) == (
        "servingbench-results",
        1,
        False,
        [],
    )
    assert document["created"] == "2026-11-24T16:40:00Z"
    bundle.add_run(run_record())
    bundle.add_run(run_record("r0002", rps=math.nan))
    document = json.loads((bundle.dir / RESULTS_FILE).read_text())
    assert [run["id"] for run in document["runs"]] == ["r0001", "r0002"]
    assert document["runs"][1]["rps"] is None  # results.json holds finite numbers only
    assert len((bundle.dir / SUMMARY_FILE).read_text().splitlines()) == 3
    bundle.finish(complete=True, environment={"load_avg_after": [0.1, 0.2, 0.3]})
    document = json.loads((bundle.dir / RESULTS_FILE).read_text())
    assert document["complete"] is True
    assert document["finished"] is not None
    assert document["environment"] == {"cpu_model": "test", "load_avg_after": [0.1, 0.2, 0.3]}
    assert (tmp_path / LATEST_LINK).resolve() == bundle.dir.resolve()
    assert sorted(name for name in os.listdir(bundle.dir) if name.startswith(".")) == []


def test_written_bundle_loads_in_the_report(tmp_path: Path) -> None:
    bundle = writer(tmp_path)
    bundle.add_run(run_record())
    bundle.add_run(run_record("r0002", status="interrupted", valid=False, invalid_reason="interrupted (Ctrl-C)"))
    bundle.finish(complete=False)
    loaded = load_bundle(tmp_path / LATEST_LINK)
    assert not loaded.complete
    assert [run.id for run in loaded.valid_runs] == ["r0001"]
    assert [run.status for run in loaded.invalid_runs] == ["interrupted"]
    assert loaded.label("fastapi-uvicorn") == "FastAPI / uvicorn (def) x1"
