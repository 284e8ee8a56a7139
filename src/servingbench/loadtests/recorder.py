"""Latency recording at microsecond resolution in mergeable HDR histograms.

Each Locust process that runs users owns one `LatencyRecorder` per run; it keeps only requests that start inside the
measurement `Window` (open loop: whose *intended* send time lies inside it). When the window's end is decided while
the run goes (a closed loop sized by request count), requests that start after `hold_from` are held back until
`close` fixes the end, so the ones that started after it never reach a histogram. Recorders hand out `SampleDelta`s
(counts plus encoded histograms since the last drain), and a `ResultAggregator` on the master adds them up exactly:
HDR histograms with the same layout merge bucket by bucket.
Nothing here imports Locust or gevent.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

import numpy as np
from hdrh.histogram import HdrHistogram

from servingbench.loadtests.openloop import LATE_TOLERANCE_MS

__all__ = [
    "HDR_HIGHEST_US",
    "HDR_LOWEST_US",
    "HDR_SIGNIFICANT_FIGURES",
    "HISTOGRAM_NAMES",
    "OPEN_LOOP_COUNTS",
    "OPEN_LOOP_HISTOGRAMS",
    "RESULT_FORMAT",
    "RESULT_VERSION",
    "SERVER_TIMING_METRICS",
    "LatencyRecorder",
    "OpenLoopCount",
    "ResultAggregator",
    "SampleDelta",
    "Window",
    "WorkerCounts",
    "decode_histogram",
    "encode_histogram",
    "histogram_mean",
    "ms_to_us",
    "new_histogram",
    "parse_server_timing",
]

HDR_LOWEST_US = 1
"""Lowest discernible value, microseconds."""
HDR_HIGHEST_US = 60_000_000
"""Highest trackable value, microseconds (60 s); longer samples are clamped to it and counted."""
HDR_SIGNIFICANT_FIGURES = 3
"""Value precision: 3 significant digits, i.e. at most 0.1% relative error per recorded value."""

SERVER_TIMING_METRICS = ("validate", "predict")
"""The Server-Timing metrics the servers emit, each recorded in its own histogram."""
OPEN_LOOP_HISTOGRAMS = ("total_uncorrected", "send_lag")
"""Open loop only: service time without the coordinated-omission correction, and how late each request was sent
(actual minus intended send time). `total` is then the corrected latency, counted from the intended send time."""
HISTOGRAM_NAMES = ("total", *OPEN_LOOP_HISTOGRAMS, *SERVER_TIMING_METRICS)

RESULT_FORMAT = "servingbench-load-result"
RESULT_VERSION = 1

US_PER_MS = 1000


def new_histogram() -> HdrHistogram:
    """An empty histogram with the project's layout (1 us .. 60 s, 3 significant digits)."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_FIGURES)


def encode_histogram(histogram: HdrHistogram) -> str:
    """HdrHistogram V2 compressed, base64 (ASCII) text."""
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode_histogram(encoded: str) -> HdrHistogram:
    """Inverse of `encode_histogram`, re-laid into the project's layout so that merges stay exact."""
    histogram = new_histogram()
    histogram.add(HdrHistogram.decode(encoded.encode("ascii")))
    return histogram


def histogram_mean(histogram: HdrHistogram) -> float:
    """The histogram's mean, exactly HdrHistogram's ``get_mean_value`` (each bucket's count at the middle of its
    value range), computed over the count array at once: hdrh walks every bucket up to the maximum in Python, about
    30 ms for a run's latency histogram, paid for every histogram of every run between runs."""
    if not histogram.total_count:
        return 0.0
    counts = np.ctypeslib.as_array(histogram.counts)[: histogram.counts_len]
    index = np.flatnonzero(counts)
    half_magnitude = histogram.sub_bucket_half_count_magnitude
    half_count = histogram.sub_bucket_half_count
    bucket = (index >> half_magnitude) - 1
    sub_bucket = (index & (half_count - 1)) + half_count
    first = bucket < 0
    sub_bucket[first] -= half_count
    bucket[first] = 0
    shift = bucket + histogram.unit_magnitude
    lowest = sub_bucket << shift  # the bucket's lowest value; its range is 1 << shift wide
    middle = lowest + ((1 << shift) >> 1)
    total = sum(int(count) * int(value) for count, value in zip(counts[index], middle, strict=True))
    recorded: int = histogram.total_count
    return float(total) / recorded  # as hdrh divides (float first), so a total beyond 2**53 rounds the same


def ms_to_us(duration_ms: float) -> int:
    """Milliseconds (float) to whole microseconds, rounded to nearest; negative values become 0."""
    return max(0, round(duration_ms * US_PER_MS))


def parse_server_timing(header: str | None) -> dict[str, float]:
    """Durations in milliseconds by metric name from a `Server-Timing` header value.

    `"validate;dur=0.012, predict;dur=10.034"` -> `{"validate": 0.012, "predict": 10.034}`. Entries without a name,
    without `dur`, or with a negative or non-finite `dur` are skipped; the first entry of a name wins. Entries are
    split on commas, so a `desc` holding a comma spoils only its own entry.
    """
    durations: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, _, params = entry.partition(";")
        name = name.strip()
        duration = _dur_param(params)
        if name and duration is not None and name not in durations:
            durations[name] = duration
    return durations


def _dur_param(params: str) -> float | None:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() != "dur":
            continue
        try:
            duration = float(value.strip().strip('"'))
        except ValueError:
            return None
        return duration if math.isfinite(duration) and duration >= 0 else None
    return None


@dataclass(frozen=True)
class Window:
    """The measurement window `[start, end)`, in seconds since the epoch (`time.time()`, the clock of Locust's
    request `start_time`)."""

    start: float
    end: float

    @property
    def duration_s(self) -> float:
        """Window length in seconds."""
        return self.end - self.start

    def contains(self, start_time: float) -> bool:
        """Whether a request that started at `start_time` (epoch seconds) belongs to the window."""
        return self.start <= start_time < self.end

    def to_json(self) -> dict[str, float]:
        """`{"start", "end", "duration_s"}`."""
        return {"start": self.start, "end": self.end, "duration_s": self.duration_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        """Inverse of `to_json`."""
        return cls(start=float(data["start"]), end=float(data["end"]))


class SampleDelta(TypedDict):
    """What one recorder collected since its last drain; histograms encoded with `encode_histogram`.

    Open loop only (0 in a closed loop): `scheduled`, `dropped`, `late` count arrivals whose intended time is in
    the window; `sent_in_window` counts requests actually sent inside it.
    """

    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    outside_window: int
    clamped: int
    scheduled: int
    dropped: int
    late: int
    sent_in_window: int
    histograms: dict[str, str]


OpenLoopCount = Literal["scheduled", "dropped", "late", "sent_in_window"]
OPEN_LOOP_COUNTS: tuple[OpenLoopCount, ...] = get_args(OpenLoopCount)


class WorkerCounts(TypedDict):
    """Per-process totals: `recorded` is the sample count of that process's total histogram."""

    requests: int
    errors: int
    recorded: int


@dataclass(frozen=True)
class _Held:
    """A closed-loop request recorded while the window's end was still open: kept until `close` decides on it."""

    start_time: float
    total_us: int
    server_timing: str | None
    error: str | None


class LatencyRecorder:
    """Records requests that start inside `window`; requests outside it (warm-up, shutdown) are only counted.

    Until `window` is set every request counts as outside it. `hold_from` (epoch seconds, None: never): closed-loop
    requests starting at or after it are held, not recorded, until `close(end)` decides which of them started
    inside the window. `started` counts requests sent inside the window so far (`note_start`), the count a
    request-count target is judged on.
    """

    def __init__(self, window: Window | None = None, *, hold_from: float | None = None) -> None:
        self.window = window
        self.hold_from = hold_from
        self.started = 0
        self._held: list[_Held] = []
        self._reset()

    def _reset(self) -> None:
        self.histograms = {name: new_histogram() for name in HISTOGRAM_NAMES}
        self.requests = 0
        self.errors = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.outside_window = 0
        self.clamped = 0
        self.open_counts = dict.fromkeys(OPEN_LOOP_COUNTS, 0)

    def note_start(self, start_time: float) -> None:
        """Count one request sent at `start_time` (epoch seconds) if that lies inside the window."""
        if self.window is not None and self.window.contains(start_time):
            self.started += 1

    def close(self, end: float) -> None:
        """Fix the window's end (epoch seconds, never later than the current end): held requests that started
        before it are recorded, the others counted outside; nothing is held from now on."""
        if self.window is None:
            raise RuntimeError("close() before the window is known")
        self.window = Window(self.window.start, min(end, self.window.end))
        held, self._held, self.hold_from = self._held, [], None
        for request in held:
            if self.window.contains(request.start_time):
                self._record_request(request.total_us, request.server_timing, request.error)
            else:
                self.outside_window += 1

    @property
    def held(self) -> int:
        """Requests waiting for `close`."""
        return len(self._held)

    def record(
        self, *, start_time: float, response_time_ms: float, server_timing: str | None, error: str | None
    ) -> bool:
        """Record one request; return whether it was inside the window (or held until `close` decides).

        `start_time` in epoch seconds, `response_time_ms` in milliseconds (float, kept to the microsecond),
        `server_timing` the raw header or None, `error` the failure kind ("HTTP 503", "ConnectionRefusedError") or
        None on success. Server-Timing is recorded for successful requests only.
        """
        if self.window is None or not self.window.contains(start_time):
            self.outside_window += 1
            return False
        if self.hold_from is not None and start_time >= self.hold_from:
            self._held.append(_Held(start_time, ms_to_us(response_time_ms), server_timing, error))
            return True
        self._record_request(ms_to_us(response_time_ms), server_timing, error)
        return True

    def record_open(
        self,
        *,
        intended_time: float,
        send_time: float,
        send_lag_ms: float,
        response_time_ms: float,
        server_timing: str | None,
        error: str | None,
    ) -> bool:
        """Record one open-loop request; return whether its intended time was inside the window.

        `intended_time` and `send_time` in epoch seconds; `send_lag_ms` (how late it was sent, >= 0) and
        `response_time_ms` (send to answer: the service time) in milliseconds. `total` gets the corrected latency,
        lag + service time, so it is never below `total_uncorrected` for the same request. (An open-loop window's
        end is always known in advance, so nothing is held.)
        """
        if self.window is not None and self.window.contains(send_time):
            self.open_counts["sent_in_window"] += 1
        if self.window is None or not self.window.contains(intended_time):
            self.outside_window += 1
            return False
        lag_ms = max(0.0, send_lag_ms)
        if lag_ms > LATE_TOLERANCE_MS:
            self.open_counts["late"] += 1
        lag_us, service_us = ms_to_us(lag_ms), ms_to_us(response_time_ms)
        self._record_us("send_lag", lag_us)
        self._record_us("total_uncorrected", service_us)
        self._record_request(lag_us + service_us, server_timing, error)
        return True

    def note_scheduled(self, intended_time: float, *, dropped: bool) -> None:
        """Count one arrival of the open-loop schedule (epoch seconds) if it falls in the window; `dropped` if it
        was not sent because the in-flight cap was reached."""
        if self.window is not None and self.window.contains(intended_time):
            self.open_counts["scheduled"] += 1
            self.open_counts["dropped"] += int(dropped)

    def _record_request(self, total_us: int, server_timing: str | None, error: str | None) -> None:
        self.requests += 1
        self._record_us("total", total_us)
        if error is not None:
            self.errors += 1
            self.errors_by_kind[error] += 1
            return
        timings = parse_server_timing(server_timing)
        for metric in SERVER_TIMING_METRICS:
            if metric in timings:
                self._record_us(metric, ms_to_us(timings[metric]))

    def drain(self) -> SampleDelta:
        """Everything recorded since the last drain, then start afresh (the window, and held requests, are kept)."""
        delta = SampleDelta(
            requests=self.requests,
            errors=self.errors,
            errors_by_kind=dict(self.errors_by_kind),
            outside_window=self.outside_window,
            clamped=self.clamped,
            scheduled=self.open_counts["scheduled"],
            dropped=self.open_counts["dropped"],
            late=self.open_counts["late"],
            sent_in_window=self.open_counts["sent_in_window"],
            histograms={name: encode_histogram(h) for name, h in self.histograms.items()},
        )
        self._reset()
        return delta

    def _record_us(self, name: str, value_us: int) -> None:
        if value_us > HDR_HIGHEST_US:
            self.clamped += 1
            value_us = HDR_HIGHEST_US
        self.histograms[name].record_value(value_us)


class ResultAggregator:
    """Adds `SampleDelta`s from any number of processes; the merged histograms are exact sums of theirs."""

    def __init__(self) -> None:
        self.histograms = {name: new_histogram() for name in HISTOGRAM_NAMES}
        self.errors_by_kind: Counter[str] = Counter()
        self.outside_window = 0
        self.clamped = 0
        self.open_counts = dict.fromkeys(OPEN_LOOP_COUNTS, 0)
        self.workers: dict[str, WorkerCounts] = {}
        self.finished: set[str] = set()

    @property
    def requests(self) -> int:
        """Requests recorded inside the window, over all processes."""
        return sum(w["requests"] for w in self.workers.values())

    @property
    def errors(self) -> int:
        """Failed requests inside the window, over all processes."""
        return sum(w["errors"] for w in self.workers.values())

    def add(self, worker: str, delta: SampleDelta) -> None:
        """Merge one delta reported by `worker` (a Locust client id, or "local")."""
        counts = self.workers.setdefault(worker, WorkerCounts(requests=0, errors=0, recorded=0))
        counts["requests"] += delta["requests"]
        counts["errors"] += delta["errors"]
        self.errors_by_kind.update(delta["errors_by_kind"])
        self.outside_window += delta["outside_window"]
        self.clamped += delta["clamped"]
        for key in OPEN_LOOP_COUNTS:
            self.open_counts[key] += delta[key]
        for name in HISTOGRAM_NAMES:
            part = decode_histogram(delta["histograms"][name])
            if name == "total":
                counts["recorded"] += part.get_total_count()
            self.histograms[name].add(part)

    def mark_finished(self, worker: str) -> None:
        """Note that `worker` sent its last delta."""
        self.finished.add(worker)

    def result_json(self, *, window: Window, complete: bool, missing_workers: list[str]) -> dict[str, Any]:
        """The result file document: counts, per-process counts and encoded merged histograms (microseconds)."""
        return {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "complete": complete,
            "missing_workers": sorted(missing_workers),
            "window": window.to_json(),
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "outside_window": self.outside_window,
            "clamped": self.clamped,
            **{str(key): count for key, count in self.open_counts.items()},
            "workers": dict(sorted(self.workers.items())),
            "histograms": {name: encode_histogram(h) for name, h in self.histograms.items()},
        }
