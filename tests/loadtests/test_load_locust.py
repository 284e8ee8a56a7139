"""`run_load` (a load session of one run) against the stand-in server on loopback: one process, then a master and
two workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from servingbench.harness.loadgen import LoadgenTimeout, LoadResult, run_load
from servingbench.loadtests import LoadSpec

from .conftest import FAILING_PATH

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

LOAD_CPUS = [max(os.sched_getaffinity(0))]
BUNDLE_KEYS = {"latency_ms", "server_timing_ms", "histograms", "requests", "errors", "rps", "duration_s", "artifacts"}


def _spec(base_url: str, endpoint: str = "/predict") -> LoadSpec:
    return LoadSpec(
        base_url=base_url,
        endpoint=endpoint,
        payload=b'{"features": [1.0, 2.0, 3.0]}',
        kind="closed",
        users=3,
        warmup_s=0.5,
        duration_s=1.0,
        seed=1,
    )


def _locust_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "locust" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(autouse=True)
def _no_locust_left_behind() -> Iterator[None]:
    assert not _locust_children()
    yield
    assert not _locust_children(), "run_load left a Locust process behind"


class _WindowProbe:
    """Window callbacks that note their order and check, mid-run, that every Locust process is pinned."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.affinities: list[list[int]] = []

    def start(self) -> None:
        self.calls.append("start")
        self.affinities = [p.cpu_affinity() for p in _locust_children()]

    def end(self) -> None:
        self.calls.append("end")


def _check_consistent(result: LoadResult) -> None:
    assert result.requests > 0
    assert result.histograms.total.get_total_count() == result.requests
    assert sum(w["requests"] for w in result.workers.values()) == result.requests
    assert sum(w["errors"] for w in result.workers.values()) == result.errors
    assert all(w["recorded"] == w["requests"] for w in result.workers.values())
    assert result.generator_cpu_s >= 0
    assert BUNDLE_KEYS <= set(result.to_json())


@pytest.mark.parametrize(
    ("workers", "processes", "html"), [(1, 1, True), (2, 3, False)], ids=["local", "master+2workers"]
)
def test_run_load_records_every_request(
    standin_url: str, tmp_path: Path, workers: int, processes: int, html: bool
) -> None:
    probe = _WindowProbe()
    result = run_load(
        _spec(standin_url),
        out_dir=tmp_path,
        cpus=LOAD_CPUS,
        workers=workers,
        on_window_start=probe.start,
        on_window_end=probe.end,
        locust_html=html,
    )
    _check_consistent(result)
    assert result.errors == 0
    assert len(result.workers) == workers
    assert probe.calls == ["start", "end"]
    assert probe.affinities == [LOAD_CPUS] * processes
    assert result.histograms.predict.get_total_count() == result.requests
    assert result.histograms.validate.get_total_count() == result.requests
    assert {"locust_csv", "locust_failures_csv"} <= set(result.artifacts)
    assert ("locust_html" in result.artifacts) == html  # Locust's HTML report only when asked for
    entry = result.to_json(relative_to=tmp_path)
    assert entry["artifacts"]["locust_csv"] == "locust_stats.csv"
    assert entry["artifacts"][f"locust_{'local' if workers == 1 else 'master'}_log"].endswith(".log")
    assert (entry["ended_by"], entry["target_requests"]) == ("duration", None)
    assert entry["latency_ms"]["p50"] is not None


def test_non_2xx_answers_are_errors_by_kind(standin_url: str, tmp_path: Path) -> None:
    result = run_load(_spec(standin_url, FAILING_PATH), out_dir=tmp_path, cpus=LOAD_CPUS)
    _check_consistent(result)
    assert result.errors == result.requests
    assert result.errors_by_kind == {"HTTP 503": result.requests}
    assert result.histograms.predict.get_total_count() == 0


def test_interrupt_in_a_callback_kills_every_process(standin_url: str, tmp_path: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_load(_spec(standin_url), out_dir=tmp_path, cpus=LOAD_CPUS, workers=2, on_window_start=interrupt)


def test_deadline_kills_every_process(standin_url: str, tmp_path: Path) -> None:
    with pytest.raises(LoadgenTimeout):
        run_load(_spec(standin_url), out_dir=tmp_path, cpus=LOAD_CPUS, timeout_s=0.2)
