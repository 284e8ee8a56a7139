"""The machine-speed probe: fixed work timed in CPU time on the server's cores while the load runs, without touching
the caller."""

from __future__ import annotations

import os
import threading
import time

import pytest

from servingbench.harness.speed import SpeedSampler


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
    assert len(sampler.samples) == taken


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
    assert sampler.value() == 9.0  # no window marked: every sample
    sampler._window = [1.5, 4.5]
    assert sampler.window_samples() == [7.0, 5.0, 9.0]
    assert sampler.value() == 7.0
    sampler._window = [4.5]  # opened, never closed (the load failed): from the start on
    assert sampler.value() == 200.0
    sampler._window = [5.5, 6.0]  # a window too short for a sample: every sample
    assert sampler.value() == 9.0


def test_window_marks_record_the_measured_window_once() -> None:
    sampler = SpeedSampler([0])
    sampler.window_end()  # before a start: ignored
    assert sampler._window == []
    sampler.window_start()
    sampler.window_end()
    first = list(sampler._window)
    sampler.window_end()
    assert sampler._window == first and len(first) == 2 and first[0] <= first[1]
