"""Real open-loop Locust runs: the accounting (sent == scheduled - dropped), corrected >= uncorrected, the rate split
over workers, and the bundle fields. No timing is asserted; the achieved/offered ratio is a benchmark figure. The
one count asserted is the schedule's: constant spacing puts a number of arrivals in the window that the code
computes, whatever the machine's speed (late arrivals are still sent, late)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servingbench.harness.loadgen import LoadResult, generator_ceiling, run_load
from servingbench.harness.processes import ServerProcess
from servingbench.loadtests import LoadSpec, ceiling_rps
from servingbench.loadtests.openloop import OPEN_LOOP_GEVENT_BACKEND, ArrivalProcess

from .conftest import LOAD_CPUS, PAYLOAD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

RATE = 200.0
DURATION_S = 2.0
INFLIGHT_CAP = 500
PERCENTILES = (0.0, 50.0, 90.0, 99.0, 99.9, 100.0)


def _spec(base_url: str, arrivals: ArrivalProcess) -> LoadSpec:
    return LoadSpec(
        base_url=base_url,
        endpoint="/predict",
        payload=PAYLOAD,
        kind="open",
        users=INFLIGHT_CAP,
        rate=RATE,
        arrivals=arrivals,
        warmup_s=0.5,
        duration_s=DURATION_S,
        seed=3,
    )


def _check_accounting(result: LoadResult) -> None:
    counts = result.open_loop
    assert counts is not None
    assert counts.dropped == 0  # the cap is far above rate x latency
    assert result.requests == counts.scheduled - counts.dropped > 0
    assert result.errors == 0
    histograms = result.histograms
    assert histograms.total.get_total_count() == histograms.total_uncorrected.get_total_count() == result.requests
    assert histograms.send_lag.get_total_count() == result.requests
    for pct in PERCENTILES:  # corrected >= uncorrected request by request, hence at every percentile
        assert histograms.total.get_value_at_percentile(pct) >= histograms.total_uncorrected.get_value_at_percentile(
            pct
        )
    entry = result.to_json()
    assert entry["histograms"]["total_uncorrected"] is not None
    assert entry["offered_rps"] > 0 and entry["achieved_rps"] > 0
    assert (entry["late"], entry["dropped"]) == (counts.late, 0)


def test_poisson_open_loop_in_one_process(sleepy_server: ServerProcess, tmp_path: Path) -> None:
    result = run_load(_spec(sleepy_server.base_url, "poisson"), out_dir=tmp_path, cpus=LOAD_CPUS)
    _check_accounting(result)
    assert list(result.workers) == ["local"]
    log = result.artifacts["locust_local_log"].read_text(encoding="utf-8")
    assert f"gevent loop backend: {OPEN_LOOP_GEVENT_BACKEND}" in log


def test_constant_spacing_split_over_two_workers(sleepy_server: ServerProcess, tmp_path: Path) -> None:
    workers = 2
    result = run_load(_spec(sleepy_server.base_url, "constant"), out_dir=tmp_path, cpus=LOAD_CPUS, workers=workers)
    _check_accounting(result)
    assert len(result.workers) == workers and all(w["requests"] > 0 for w in result.workers.values())
    assert result.open_loop is not None and result.window is not None
    # The streams share one grid, window start + k / rate: a 2 s window holds k = 0 .. 399, split over the workers.
    assert result.window.duration_s == DURATION_S
    assert result.open_loop.scheduled == round(RATE * DURATION_S)


def test_the_generator_ceiling_runs_its_rates_in_one_session(sleepy_server: ServerProcess, tmp_path: Path) -> None:
    rates = (100.0, 50.0)
    ceiling = generator_ceiling(
        sleepy_server.base_url,
        rates=rates,
        payloads=(PAYLOAD,),
        out_dir=tmp_path,
        cpus=LOAD_CPUS,
        target_requests=50,
        min_duration_s=0.2,
        max_duration_s=2.0,
        warmup_s=0.2,
        stop_at_first_miss=False,
    )
    assert [step.rate for step in ceiling.steps] == sorted(rates)
    assert all(step.requests > 0 and step.send_lag_p99_ms is not None for step in ceiling.steps)
    assert ceiling.ceiling_rps == ceiling_rps(ceiling.steps, ceiling.max_send_lag_ms)  # judged, not measured here
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rate-100", "rate-50", "session"]
