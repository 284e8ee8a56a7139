"""Open-loop recording: corrected vs uncorrected latency, late sends, the scheduled/dropped accounting, merges."""

from __future__ import annotations

import random

from servingbench.loadtests import LatencyRecorder, ResultAggregator, Window, decode_histogram, ms_to_us
from servingbench.loadtests.openloop import LATE_TOLERANCE_MS

WINDOW = Window(start=1000.0, end=1010.0)


def _record(recorder: LatencyRecorder, *, intended: float, lag_ms: float, service_ms: float) -> bool:
    return recorder.record_open(
        intended_time=intended,
        send_time=intended + lag_ms / 1000,
        send_lag_ms=lag_ms,
        response_time_ms=service_ms,
        server_timing="validate;dur=0.01, predict;dur=1.0",
        error=None,
    )


def test_corrected_latency_counts_from_the_intended_time() -> None:
    recorder = LatencyRecorder(WINDOW)
    assert _record(recorder, intended=1001.0, lag_ms=0.5, service_ms=10.0)
    assert recorder.histograms["total"].get_count_at_value(ms_to_us(10.5)) == 1
    assert recorder.histograms["total_uncorrected"].get_count_at_value(ms_to_us(10.0)) == 1
    assert recorder.histograms["send_lag"].get_count_at_value(ms_to_us(0.5)) == 1
    assert recorder.histograms["predict"].get_total_count() == 1


def test_corrected_is_never_below_uncorrected_for_any_request() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        recorder = LatencyRecorder(WINDOW)
        lag, service = rng.choice([0.0, -0.001, rng.expovariate(1.0)]), rng.lognormvariate(0.0, 2.0)
        _record(recorder, intended=1005.0, lag_ms=lag, service_ms=service)
        corrected = recorder.histograms["total"].get_max_value()
        uncorrected = recorder.histograms["total_uncorrected"].get_max_value()
        assert corrected >= uncorrected


def test_late_sends_are_those_over_the_tolerance() -> None:
    recorder = LatencyRecorder(WINDOW)
    for lag in (0.0, LATE_TOLERANCE_MS, LATE_TOLERANCE_MS + 0.001, 50.0):
        _record(recorder, intended=1002.0, lag_ms=lag, service_ms=1.0)
    assert recorder.open_counts["late"] == 2


def test_window_membership_follows_the_intended_time_and_sends_count_by_send_time() -> None:
    recorder = LatencyRecorder(WINDOW)
    assert not _record(recorder, intended=999.99, lag_ms=20.0, service_ms=1.0)  # sent inside, due before
    assert _record(recorder, intended=1009.99, lag_ms=20.0, service_ms=1.0)  # due inside, sent after
    assert (recorder.requests, recorder.outside_window) == (1, 1)
    assert recorder.open_counts["sent_in_window"] == 1


def test_scheduled_equals_sent_plus_dropped_through_a_merge() -> None:
    rng = random.Random(11)
    aggregator = ResultAggregator()
    for worker in ("w0", "w1"):
        recorder = LatencyRecorder(WINDOW)
        for _ in range(500):
            intended = rng.uniform(998.0, 1012.0)
            dropped = rng.random() < 0.1
            recorder.note_scheduled(intended, dropped=dropped)
            if not dropped:
                _record(recorder, intended=intended, lag_ms=rng.uniform(0, 3), service_ms=rng.uniform(1, 20))
            if rng.random() < 0.05:
                aggregator.add(worker, recorder.drain())
        aggregator.add(worker, recorder.drain())
    document = aggregator.result_json(window=WINDOW, complete=True, missing_workers=[])
    assert document["scheduled"] == document["requests"] + document["dropped"]
    assert document["dropped"] > 0 and document["late"] > 0
    assert decode_histogram(document["histograms"]["total_uncorrected"]).get_total_count() == document["requests"]


def test_closed_loop_recording_leaves_the_open_loop_parts_empty() -> None:
    recorder = LatencyRecorder(WINDOW)
    recorder.record(start_time=1001.0, response_time_ms=1.0, server_timing=None, error=None)
    delta = recorder.drain()
    assert (delta["scheduled"], delta["dropped"], delta["late"], delta["sent_in_window"]) == (0, 0, 0, 0)
    assert decode_histogram(delta["histograms"]["total_uncorrected"]).get_total_count() == 0
