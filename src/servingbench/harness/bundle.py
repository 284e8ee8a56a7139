"""Writing the results bundle (format: ``docs/results-format.md``): ``results.json``, ``summary.csv``, ``runs/``.

Every file is written to a temporary name in the same directory and renamed over the old one, so a reader
(or a crash, or Ctrl-C) never sees half a file. :class:`BundleWriter` rewrites both files after every run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servingbench.files import dumps_finite, write_atomic

__all__ = [
    "LATEST_LINK",
    "RESULTS_FILE",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "RUNS_DIR",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "BundleWriter",
    "create_bundle_dir",
    "link_latest",
    "summary_csv",
    "utc_timestamp",
]

RESULTS_FORMAT = "servingbench-results"
RESULTS_VERSION = 1
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.csv"
RUNS_DIR = "runs"
LATEST_LINK = "latest"
DIR_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ISO_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_DIR_ATTEMPTS = 100

SUMMARY_COLUMNS = (
    "config",
    "framework",
    "server",
    "workers",
    "model",
    "scenario",
    "concurrency",
    "repetition",
    "requests",
    "errors",
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "server_cpu_us_per_request",
    "server_rss_mb",
    "generator_cpu_pct",
    "valid",
    "invalid_reason",
    "kind",
    "target_rps",
    "achieved_rps",
    "route",
    "threads",
    "run_id",
)
# Decimal places per summary column: milliseconds keep microsecond digits.
MS_DECIMALS = 3
OTHER_DECIMALS = 1
_LATENCY_COLUMNS = {"p50_ms": "p50", "p90_ms": "p90", "p99_ms": "p99", "p999_ms": "p999"}
_RUN_ID_COLUMN = "run_id"


def utc_timestamp(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as ISO 8601 UTC with seconds, e.g. ``2026-11-24T16:40:00Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(ISO_TIMESTAMP_FORMAT)


def create_bundle_dir(out_root: Path, moment: datetime | None = None) -> Path:
    """Create ``out_root/<UTC timestamp>/`` (with a ``-2``, ``-3``... suffix if taken) and its ``runs/``."""
    stamp = (moment or datetime.now(UTC)).astimezone(UTC).strftime(DIR_TIMESTAMP_FORMAT)
    out_root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, MAX_DIR_ATTEMPTS + 1):
        candidate = out_root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        (candidate / RUNS_DIR).mkdir()
        return candidate
    raise FileExistsError(f"cannot create a bundle directory under {out_root}: {stamp} is taken {MAX_DIR_ATTEMPTS}x")


def link_latest(out_root: Path, bundle_dir: Path) -> bool:
    """Point ``out_root/latest`` at ``bundle_dir`` (a relative symlink, swapped atomically).

    Returns ``False`` and leaves it alone when ``latest`` exists and is not a symlink.
    """
    link = out_root / LATEST_LINK
    if link.exists() and not link.is_symlink():
        return False
    temporary = out_root / f".{LATEST_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(os.path.relpath(bundle_dir, out_root))
    os.replace(temporary, link)
    return True


def _cell(value: Any, decimals: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{decimals}f}" if math.isfinite(value) else ""
    return str(value)


def _summary_row(run: Mapping[str, Any]) -> list[str]:
    latency = run.get("latency_ms") or {}
    row = []
    for column in SUMMARY_COLUMNS:
        if column in _LATENCY_COLUMNS:
            row.append(_cell(latency.get(_LATENCY_COLUMNS[column]), MS_DECIMALS))
        elif column == _RUN_ID_COLUMN:
            row.append(_cell(run.get("id"), OTHER_DECIMALS))
        else:
            row.append(_cell(run.get(column), OTHER_DECIMALS))
    return row


def summary_csv(runs: Sequence[Mapping[str, Any]]) -> str:
    """``summary.csv`` text: a header of :data:`SUMMARY_COLUMNS`, then one row per run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerows(_summary_row(run) for run in runs)
    return buffer.getvalue()


class BundleWriter:
    """One results bundle being written: holds the document, appends runs, rewrites the files atomically."""

    def __init__(
        self,
        out_root: Path,
        *,
        preset: str,
        seed: int,
        environment: Mapping[str, Any],
        plan: Mapping[str, Any],
        fairness: Sequence[str],
        configs: Mapping[str, Mapping[str, Any]],
        moment: datetime | None = None,
    ) -> None:
        self.out_root = out_root
        self.dir = create_bundle_dir(out_root, moment)
        self.document: dict[str, Any] = {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "created": utc_timestamp(moment),
            "finished": None,
            "complete": False,
            "preset": preset,
            "seed": seed,
            "environment": dict(environment),
            "plan": dict(plan),
            "fairness": list(fairness),
            "configs": {name: dict(config) for name, config in configs.items()},
            "runs": [],
        }

    @property
    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.document["runs"]
        return runs

    def run_dir(self, run_id: str) -> Path:
        """``runs/<run_id>/`` inside the bundle, created."""
        path = self.dir / RUNS_DIR / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        """``path`` relative to the bundle directory, with forward slashes (how artefacts are referenced)."""
        return path.relative_to(self.dir).as_posix()

    def add_run(self, run: Mapping[str, Any]) -> None:
        """Append a run record and rewrite the bundle."""
        self.runs.append(dict(run))
        self.save()

    @property
    def capacity(self) -> list[dict[str, Any]]:
        """The capacity-search entries written so far (the document's ``capacity`` list, made on first use)."""
        entries: list[dict[str, Any]] = self.document.setdefault("capacity", [])
        return entries

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """What each model served is (from its first server's ``GET /model``), by plan model name."""
        models: dict[str, dict[str, Any]] = self.document.setdefault("models", {})
        return models

    def add_model(self, name: str, entry: Mapping[str, Any]) -> None:
        """Record what model ``name`` is (name, version, sha256, input schema, output) and rewrite the bundle."""
        self.models[name] = dict(entry)
        self.save()

    def add_session(self, entry: Mapping[str, Any]) -> None:
        """Record one server start (id, config, model, seconds to ready, or why it failed) and rewrite the bundle."""
        sessions: list[dict[str, Any]] = self.document.setdefault("sessions", [])
        sessions.append(dict(entry))
        self.save()

    def add_capacity(self, entry: Mapping[str, Any]) -> None:
        """Append one capacity-search result (its steps are already runs) and rewrite the bundle."""
        self.capacity.append(dict(entry))
        self.save()

    def save(self) -> None:
        """Rewrite ``results.json`` and ``summary.csv`` atomically, and point ``latest`` here."""
        write_atomic(self.dir / RESULTS_FILE, dumps_finite(self.document))
        write_atomic(self.dir / SUMMARY_FILE, summary_csv(self.runs))
        link_latest(self.out_root, self.dir)

    def finish(self, *, complete: bool, environment: Mapping[str, Any] | None = None) -> None:
        """Stamp ``finished`` and ``complete`` (merging late ``environment`` fields, e.g. the load after) and save."""
        if environment:
            self.document["environment"].update(environment)
        self.document["finished"] = utc_timestamp()
        self.document["complete"] = complete
        self.save()
