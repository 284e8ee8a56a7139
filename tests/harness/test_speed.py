"""The machine-speed probe: fixed work timed in CPU time on the server's cores while the load runs, without touching
the caller."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from servingbench.harness import speed
from servingbench.harness.measure import Gates, RunInterrupted, measure
from servingbench.harness.record import RunIdentity
from servingbench.harness.servers import StartedServer
from servingbench.harness.speed import SpeedSampler
from servingbench.loadtests.scenarios import LoadSpec

from .fakes import fake_result


def _wait_for(sampler: SpeedSampler, count: int) -> None:
    deadline = time.monotonic() + 30.0  # a bound, not a timing: the loop ends as soon as the samples are there
    while len(sampler.samples) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_the_sampler_runs_on_the_given_core_and_leaves_the_caller_where_it_was() -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    seen: list[set[int]] = []
    real = os.sched_setaffinity

    def spy(pid: int, cpus: set[int]) -> None:
        seen.append(set(cpus))
        assert threading.current_thread().name == "servingbench-speed-probe"
        real(pid, cpus)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "sched_setaffinity", spy)
        with SpeedSampler([core], iterations=500, interval_s=0.001) as sampler:
            _wait_for(sampler, 3)
    assert seen == [{core}]
    assert len(sampler.samples) >= 3 and all(sample > 0.0 for sample in sampler.samples)
    assert os.sched_getaffinity(0) == before
    assert not any(thread.name == "servingbench-speed-probe" for thread in threading.enumerate())


def test_it_stops_sampling_when_the_context_ends() -> None:
    with SpeedSampler([min(os.sched_getaffinity(0))], iterations=100, interval_s=0.001) as sampler:
        _wait_for(sampler, 2)
    taken = len(sampler.samples)
    time.sleep(0.02)
    assert taken >= 2 and len(sampler.samples) == taken


def test_more_work_takes_more_cpu_time() -> None:
    core = min(os.sched_getaffinity(0))
    medians = []
    for iterations in (1_000, 100_000):
        with SpeedSampler([core], iterations=iterations, interval_s=0.001) as sampler:
            _wait_for(sampler, 5)
        medians.append(sorted(sampler.samples)[len(sampler.samples) // 2])
    assert medians[1] > medians[0]  # 100 times the work; no timing bound beyond the order


def test_no_cores_or_a_core_that_cannot_be_used_give_no_samples() -> None:
    with SpeedSampler([]) as sampler:
        pass
    assert sampler.samples == [] and sampler.value() is None
    with SpeedSampler([10_000], interval_s=0.001) as sampler:  # no such CPU: EINVAL, caught in the thread
        time.sleep(0.01)
    assert sampler.samples == [] and sampler.value() is None and isinstance(sampler.error, OSError)


def test_a_run_s_value_is_the_median_of_the_samples_inside_its_measured_window() -> None:
    sampler = SpeedSampler([0])
    sampler._samples = [(1.0, 100.0), (2.0, 7.0), (3.0, 5.0), (4.0, 9.0), (5.0, 200.0)]
    assert sampler.value() is None  # no window marked (the load failed before it): warm-up samples do not count
    sampler._window = [1.5, 4.5]
    assert sampler.window_samples() == [7.0, 5.0, 9.0]
    assert sampler.value() == 7.0
    sampler._window = [4.5]  # opened, never closed (the load failed): from the start on
    assert sampler.value() == 200.0
    sampler._window = [5.5, 6.0]  # a window too short for a sample: no value, never the idle samples around it
    assert sampler.value() is None


def test_the_memory_chase_is_one_cycle_through_every_item() -> None:
    cycle = speed._cycle(1_000)
    assert sorted(cycle) == list(range(1_000))
    seen = {0}
    index = 0
    for _ in range(999):
        index = cycle[index]
        seen.add(index)
    assert len(seen) == 1_000 and cycle[index] == 0  # one cycle: back at the start after exactly 1,000 steps
    assert speed._chase(cycle, 1_000) == 0 and speed._chase(cycle, 3) == cycle[cycle[cycle[0]]]
    assert speed._cycle(1_000) is cycle  # built once per process and length
    assert speed._cycle(1_000) == [int(i) for i in speed._cycle.__wrapped__(1_000)]  # seeded: the same cycle


def test_each_sample_also_times_the_memory_chase_and_its_value_is_the_window_median() -> None:
    with SpeedSampler([min(os.sched_getaffinity(0))], iterations=100, interval_s=0.001, memory_steps=50,
                      memory_items=1_000) as sampler:  # fmt: skip
        _wait_for(sampler, 3)
    assert len(sampler._memory) >= 3 and all(used > 0.0 for _, used in sampler._memory)
    sampler._memory = [(1.0, 50.0), (2.0, 30.0), (3.0, 10.0), (4.0, 20.0)]
    sampler._window = [1.5, 3.5]
    assert sampler.window_samples(memory=True) == [30.0, 10.0] and sampler.value(memory=True) == 20.0
    sampler._window = []
    assert sampler.value(memory=True) is None  # no window: no value, as for the first probe


def test_no_memory_steps_take_no_memory_samples() -> None:
    with SpeedSampler([min(os.sched_getaffinity(0))], iterations=100, interval_s=0.001, memory_steps=0) as sampler:
        _wait_for(sampler, 3)
    assert len(sampler.samples) >= 3 and sampler._memory == []
    sampler.window_start()
    assert sampler.value(memory=True) is None


def test_window_marks_record_the_measured_window_once() -> None:
    sampler = SpeedSampler([0])
    sampler.window_end()  # before a start: ignored
    assert sampler._window == []
    sampler.window_start()
    sampler.window_end()
    first = list(sampler._window)
    sampler.window_end()
    assert sampler._window == first and len(first) == 2 and first[0] <= first[1]


# --- through the one measure path --------------------------------------------------------------------------------

IDENTITY = RunIdentity(
    "r0001",
    1,
    "c",
    "fastapi",
    "uvicorn",
    "def",
    1,
    None,
    "m",
    "synthetic:cpu_us=1",
    "s",
    "closed",
    "/predict",
    1,
    1,
    None,
    0,
    "s001",
    0.0,
)
GATES = Gates(error_rate_limit=0.01, min_requests=1)
NO_SERVER = StartedServer("http://127.0.0.1:9", "s001")  # never contacted: the fake load below answers itself


@dataclass
class WindowedLoad:
    """A load generator stand-in: a warm-up, then a measured window, each long enough for probe samples; or it fails
    (``raises``) inside the window."""

    raises: BaseException | None = None
    threads_inside: list[str] = field(default_factory=list)

    def run(self, spec: Any, *, out_dir: Path, on_window_start: Any, on_window_end: Any, timeout_s: Any) -> Any:
        time.sleep(0.05)
        assert on_window_start is not None and on_window_end is not None
        on_window_start()
        self.threads_inside = [thread.name for thread in threading.enumerate()]
        time.sleep(0.05)
        if self.raises is not None:
            raise self.raises
        on_window_end()
        time.sleep(0.05)
        return fake_result(cast(LoadSpec, SimpleNamespace(warmup_s=0.05, duration_s=0.05)), out_dir)


def _measure(load: WindowedLoad, tmp_path: Path, patch: pytest.MonkeyPatch, memory_steps: int = 100) -> Any:
    patch.setattr(speed, "PROBE_INTERVAL_S", 0.002)  # samples every 2 ms: the 50 ms window gets several
    patch.setattr(speed, "PROBE_ITERATIONS", 200)
    patch.setattr(speed, "MEMORY_PROBE_ITEMS", 2_000)
    return measure(
        IDENTITY,
        lambda: cast(LoadSpec, None),
        NO_SERVER,
        load,
        run_dir=tmp_path,
        gates=GATES,
        speed_cpus=[min(os.sched_getaffinity(0))],
        memory_steps=memory_steps,
    )


def test_measure_records_the_probe_of_the_measured_window_and_stops_it(tmp_path: Path) -> None:
    load = WindowedLoad()
    with pytest.MonkeyPatch.context() as patch:
        record = _measure(load, tmp_path, patch)
    assert "servingbench-speed-probe" in load.threads_inside
    assert record.speed_probe_us is not None and record.speed_probe_us > 0.0
    assert record.memory_probe_us is not None and record.memory_probe_us > 0.0
    assert record.to_json(relative_to=tmp_path)["memory_probe_us"] == record.memory_probe_us
    assert not any(thread.name == "servingbench-speed-probe" for thread in threading.enumerate())


def test_without_memory_steps_measure_records_no_memory_probe(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        record = _measure(WindowedLoad(), tmp_path, patch, memory_steps=0)
    assert record.speed_probe_us is not None and record.memory_probe_us is None
    assert record.to_json(relative_to=tmp_path)["memory_probe_us"] is None


@pytest.mark.parametrize("failure", [OSError("generator crashed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_load_leaves_no_probe_thread_behind(tmp_path: Path, failure: BaseException) -> None:
    load = WindowedLoad(raises=failure)
    with pytest.MonkeyPatch.context() as patch:
        if isinstance(failure, KeyboardInterrupt):
            with pytest.raises(RunInterrupted):
                _measure(load, tmp_path, patch)
        else:
            record = _measure(load, tmp_path, patch)
            assert record.status == "failed" and "generator crashed" in (record.invalid_reason or "")
    assert "servingbench-speed-probe" in load.threads_inside
    assert not any(thread.name == "servingbench-speed-probe" for thread in threading.enumerate())
