"""The latency recorder: microsecond values, Server-Timing parsing, the window, exact merges."""

from __future__ import annotations

import math
import random

import pytest
from hdrh.histogram import HdrHistogram

from servingbench.loadtests import (
    HDR_HIGHEST_US,
    HISTOGRAM_NAMES,
    LatencyRecorder,
    ResultAggregator,
    Window,
    decode_histogram,
    encode_histogram,
    histogram_mean,
    ms_to_us,
    new_histogram,
    parse_server_timing,
)

WINDOW = Window(start=1000.0, end=1010.0)
INSIDE = 1005.0
PERCENTILES = (0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def _record(recorder: LatencyRecorder, ms: float, *, timing: str | None = None, error: str | None = None) -> bool:
    return recorder.record(start_time=INSIDE, response_time_ms=ms, server_timing=timing, error=error)


@pytest.mark.parametrize(
    ("ms", "us"), [(0.001, 1), (0.123, 123), (1.5, 1500), (1.501, 1501), (10.034, 10034), (0.0004, 0)]
)
def test_ms_to_us_keeps_microseconds(ms: float, us: int) -> None:
    assert ms_to_us(ms) == us


def test_recorder_keeps_microsecond_values() -> None:
    recorder = LatencyRecorder(WINDOW)
    for ms in (0.123, 1.500, 1.501):
        assert _record(recorder, ms)
    total = recorder.histograms["total"]
    assert total.get_total_count() == 3
    assert total.get_min_value() == 123
    assert total.get_count_at_value(1500) == 1
    assert total.get_count_at_value(1501) == 1


def test_recorder_clamps_beyond_range() -> None:
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 61_000.0)
    assert recorder.clamped == 1
    assert recorder.histograms["total"].get_total_count() == 1
    assert recorder.histograms["total"].values_are_equivalent(
        recorder.histograms["total"].get_max_value(), HDR_HIGHEST_US
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("validate;dur=0.012, predict;dur=10.034", {"validate": 0.012, "predict": 10.034}),
        ("validate;dur=0.012,predict;dur=10.034", {"validate": 0.012, "predict": 10.034}),
        ('predict;desc="model";DUR="2.5"', {"predict": 2.5}),
        ("predict; dur = 3", {"predict": 3.0}),
        ("validate;dur=1, validate;dur=2", {"validate": 1.0}),
        ("predict;dur=2,", {"predict": 2.0}),
        ("cache, predict;dur=2", {"predict": 2.0}),
        ("predict;dur=abc, validate;dur=1", {"validate": 1.0}),
        ("predict;dur=-1", {}),
        ("predict;dur=nan, validate;dur=inf", {}),
        (";dur=5", {}),
        ("predict;dur=", {}),
        ("", {}),
        (None, {}),
        (",,;;==", {}),
    ],
)
def test_parse_server_timing(header: str | None, expected: dict[str, float]) -> None:
    assert parse_server_timing(header) == expected


def test_server_timing_recorded_in_microseconds() -> None:
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 11.0, timing="validate;dur=0.012, predict;dur=10.034")
    assert recorder.histograms["validate"].get_count_at_value(12) == 1
    assert recorder.histograms["predict"].get_count_at_value(10034) == 1


def test_malformed_server_timing_still_counts_the_request() -> None:
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 1.0, timing="garbage;;dur=x")
    assert recorder.requests == 1
    assert recorder.histograms["total"].get_total_count() == 1
    assert recorder.histograms["validate"].get_total_count() == 0
    assert recorder.histograms["predict"].get_total_count() == 0


def test_failures_are_counted_by_kind_and_skip_server_timing() -> None:
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 1.0, timing="validate;dur=0.01", error="HTTP 503")
    _record(recorder, 1.0, error="HTTP 503")
    _record(recorder, 1.0, error="ConnectionRefusedError")
    _record(recorder, 1.0, timing="validate;dur=0.01")
    assert (recorder.requests, recorder.errors) == (4, 3)
    assert dict(recorder.errors_by_kind) == {"HTTP 503": 2, "ConnectionRefusedError": 1}
    assert recorder.histograms["total"].get_total_count() == 4
    assert recorder.histograms["validate"].get_total_count() == 1


def test_only_requests_starting_inside_the_window_are_recorded() -> None:
    recorder = LatencyRecorder(WINDOW)
    starts = [999.0, math.nextafter(1000.0, 0.0), 1000.0, 1009.999, 1010.0, 1011.0]
    kept = [recorder.record(start_time=t, response_time_ms=1.0, server_timing=None, error=None) for t in starts]
    assert kept == [False, False, True, True, False, False]
    assert (recorder.requests, recorder.outside_window) == (2, 4)
    assert recorder.histograms["total"].get_total_count() == 2


def test_nothing_is_recorded_before_the_window_is_known() -> None:
    recorder = LatencyRecorder()
    assert not _record(recorder, 1.0)
    assert (recorder.requests, recorder.outside_window) == (0, 1)


def test_drain_hands_over_and_resets() -> None:
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 1.0, error="HTTP 500")
    delta = recorder.drain()
    assert (delta["requests"], delta["errors"], delta["errors_by_kind"]) == (1, 1, {"HTTP 500": 1})
    assert decode_histogram(delta["histograms"]["total"]).get_total_count() == 1
    assert recorder.requests == 0
    assert recorder.histograms["total"].get_total_count() == 0
    assert recorder.window == WINDOW


def test_encode_decode_round_trip() -> None:
    histogram = new_histogram()
    for value in (1, 999, 1000, 123_456, 59_999_999):
        histogram.record_value(value)
    decoded = decode_histogram(encode_histogram(histogram))
    assert decoded.get_total_count() == 5
    for pct in PERCENTILES:
        assert decoded.get_value_at_percentile(pct) == histogram.get_value_at_percentile(pct)


def _samples_us(rng: random.Random, n: int) -> list[float]:
    # Lognormal around 1 ms, spanning sub-millisecond to seconds, as latencies do.
    return [max(0.001, rng.lognormvariate(0.0, 1.5)) for _ in range(n)]


def test_merging_worker_histograms_is_exact() -> None:
    rng = random.Random(20261124)
    per_worker = [_samples_us(rng, n) for n in (5000, 1, 20000, 777)]
    aggregator = ResultAggregator()
    pooled = new_histogram()
    for index, samples in enumerate(per_worker):
        recorder = LatencyRecorder(WINDOW)
        for chunk_start in range(0, len(samples), 1000):  # several deltas per worker, as periodic reports send them
            for ms in samples[chunk_start : chunk_start + 1000]:
                _record(recorder, ms, timing=f"validate;dur={ms / 10}, predict;dur={ms / 2}")
                pooled.record_value(ms_to_us(ms))
            aggregator.add(f"worker-{index}", recorder.drain())
    merged: HdrHistogram = aggregator.histograms["total"]
    assert merged.get_total_count() == pooled.get_total_count() == sum(map(len, per_worker))
    assert aggregator.requests == sum(w["requests"] for w in aggregator.workers.values()) == merged.get_total_count()
    assert [w["recorded"] for w in aggregator.workers.values()] == [len(s) for s in per_worker]
    for pct in PERCENTILES:
        assert merged.get_value_at_percentile(pct) == pooled.get_value_at_percentile(pct)
    assert (merged.get_min_value(), merged.get_max_value()) == (pooled.get_min_value(), pooled.get_max_value())
    assert merged.get_mean_value() == pytest.approx(pooled.get_mean_value(), rel=1e-12)


def test_result_document_has_counts_per_worker_and_every_histogram() -> None:
    aggregator = ResultAggregator()
    recorder = LatencyRecorder(WINDOW)
    _record(recorder, 1.0)
    aggregator.add("a", recorder.drain())
    aggregator.mark_finished("a")
    document = aggregator.result_json(window=WINDOW, complete=True, missing_workers=[])
    assert document["requests"] == 1
    assert document["workers"] == {"a": {"requests": 1, "errors": 0, "recorded": 1}}
    assert set(document["histograms"]) == set(HISTOGRAM_NAMES)
    assert document["window"]["duration_s"] == 10.0


def test_held_requests_are_decided_when_the_window_closes() -> None:
    recorder = LatencyRecorder(WINDOW, hold_from=1004.0)
    for start in (1001.0, 1004.0, 1005.0, 1006.0):
        assert recorder.record(start_time=start, response_time_ms=1.0, server_timing=None, error=None)
    assert (recorder.requests, recorder.held) == (1, 3)
    assert recorder.drain()["requests"] == 1  # a periodic report hands over only what is decided
    recorder.close(1005.5)
    assert recorder.window == Window(1000.0, 1005.5)
    assert (recorder.requests, recorder.held, recorder.outside_window) == (2, 0, 1)
    assert recorder.histograms["total"].get_total_count() == 2


def test_after_closing_nothing_is_held_and_later_starts_are_outside() -> None:
    recorder = LatencyRecorder(WINDOW, hold_from=1004.0)
    recorder.close(1006.0)
    assert not recorder.record(start_time=1007.0, response_time_ms=1.0, server_timing=None, error=None)
    assert recorder.record(start_time=1005.0, response_time_ms=1.0, server_timing=None, error=None)
    assert (recorder.requests, recorder.held, recorder.outside_window) == (1, 0, 1)


def test_closing_never_extends_the_window() -> None:
    recorder = LatencyRecorder(WINDOW)
    recorder.close(2000.0)
    assert recorder.window == WINDOW


def test_requests_started_in_the_window_are_counted_for_the_target() -> None:
    recorder = LatencyRecorder(WINDOW)
    for start in (999.0, 1000.0, 1009.0, 1010.0):
        recorder.note_start(start)
    assert recorder.started == 2


@pytest.mark.parametrize(
    "values",
    [
        [1],  # the lowest bucket, where the first half-bucket's index is shifted
        [1, 2, 3, 2047, 2048, 2049],  # around the first bucket's end
        [59_000_000, 60_000_000],  # the configured highest value (60 s)
        [random.Random(seed).choice([1, 7, 300, 4_096, 1_000_000]) for seed in range(50)],
    ],
)
def test_the_histogram_mean_is_hdrhistograms_own(values: list[int]) -> None:
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value)
    assert histogram_mean(histogram) == histogram.get_mean_value()


def test_the_histogram_mean_is_hdrhistograms_own_on_latency_like_data() -> None:
    rng = random.Random(11)
    for _ in range(20):
        histogram = new_histogram()
        for _ in range(rng.randrange(1, 3000)):
            histogram.record_value(max(1, min(60_000_000, int(rng.lognormvariate(rng.uniform(5, 12), 1.5)))))
        assert histogram_mean(histogram) == histogram.get_mean_value()
    assert histogram_mean(new_histogram()) == 0.0


def test_the_histogram_mean_rounds_as_hdrhistogram_does_past_float_precision() -> None:
    """A count-weighted total beyond 2**53 (huge counts): both divide a float by the count, so they agree."""
    histogram = new_histogram()
    for value, count in ((537_135, 933_908_272_932), (4_958_503, 430_896_259_282), (260_146, 620_848_243_020)):
        histogram.record_value(value, count)  # the exact quotient of the integers differs here in the last bit
    assert histogram_mean(histogram) == histogram.get_mean_value()
