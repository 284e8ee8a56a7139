"""Locust scenarios and users (closed loop now, open loop later) and the microsecond latency recorder.

Importing this package never imports Locust or gevent; `locustfile.py` is loaded by Locust processes only.
"""

from __future__ import annotations

from servingbench.loadtests.recorder import (
    HDR_HIGHEST_US,
    HDR_LOWEST_US,
    HDR_SIGNIFICANT_FIGURES,
    HISTOGRAM_NAMES,
    RESULT_FORMAT,
    RESULT_VERSION,
    SERVER_TIMING_METRICS,
    LatencyRecorder,
    ResultAggregator,
    SampleDelta,
    Window,
    WorkerCounts,
    decode_histogram,
    encode_histogram,
    ms_to_us,
    new_histogram,
    parse_server_timing,
)
from servingbench.loadtests.scenarios import (
    CONFIG_ENV_VAR,
    LOCUSTFILE_PATH,
    USER_CLASS_BY_KIND,
    LoadKind,
    LoadSpec,
    LoadSpecError,
    LocustRunConfig,
    is_loopback_host,
    user_class_name,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "HDR_HIGHEST_US",
    "HDR_LOWEST_US",
    "HDR_SIGNIFICANT_FIGURES",
    "HISTOGRAM_NAMES",
    "LOCUSTFILE_PATH",
    "RESULT_FORMAT",
    "RESULT_VERSION",
    "SERVER_TIMING_METRICS",
    "USER_CLASS_BY_KIND",
    "LatencyRecorder",
    "LoadKind",
    "LoadSpec",
    "LoadSpecError",
    "LocustRunConfig",
    "ResultAggregator",
    "SampleDelta",
    "Window",
    "WorkerCounts",
    "decode_histogram",
    "encode_histogram",
    "is_loopback_host",
    "ms_to_us",
    "new_histogram",
    "parse_server_timing",
    "user_class_name",
]
