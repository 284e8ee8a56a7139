"""Test-side Locust plugin, imported by every load process that names it in ``SERVINGBENCH_LOAD_PLUGINS``: each
worker writes the raw timing of every request it made, so a test can pool them and check the master's merged
histograms exactly. Self-contained (a remote worker imports it by path); never used in real runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

RAW_SAMPLES_DIR_ENV = "SERVINGBENCH_TEST_RAW_SAMPLES_DIR"
"""Directory each worker writes ``<client id>.json`` into: ``[[start_time_s, response_time_ms], ...]``."""

_samples: list[tuple[float, float]] = []


def _on_request(*, start_time: float, response_time: float, **_: Any) -> None:
    _samples.append((start_time, response_time))  # the same two numbers the recorder gets, unrounded


def _dump(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    directory = os.environ.get(RAW_SAMPLES_DIR_ENV)
    if not isinstance(runner, WorkerRunner) or not directory:
        return
    path = Path(directory) / f"{runner.client_id}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(_samples), encoding="utf-8")
    os.replace(partial, path)


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # through Any: Locust's EventHook.add_listener is unannotated


_listen(events.request, _on_request)
_listen(events.quitting, _dump)
