"""The machine-speed probe: fixed work timed in CPU time on the server's cores, without touching the caller."""

from __future__ import annotations

import os
import threading

import pytest

from servingbench.harness.speed import PROBE_SAMPLES, probe_speed_us, run_speed_us


def test_the_probe_runs_on_the_given_core_and_leaves_the_caller_where_it_was() -> None:
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
        samples = probe_speed_us([core], iterations=2_000)
    assert seen == [{core}]
    assert len(samples) == PROBE_SAMPLES and all(sample > 0.0 for sample in samples)
    assert os.sched_getaffinity(0) == before


def test_more_work_takes_more_cpu_time() -> None:
    core = min(os.sched_getaffinity(0))
    small = sorted(probe_speed_us([core], iterations=1_000, samples=5))[2]
    large = sorted(probe_speed_us([core], iterations=100_000, samples=5))[2]
    assert large > small  # 100 times the work; no timing bound beyond the order


def test_no_cores_or_a_core_that_cannot_be_used_give_no_samples() -> None:
    assert probe_speed_us([]) == []
    assert probe_speed_us([10_000], iterations=10) == []  # no such CPU: EINVAL, caught in the thread


def test_a_run_s_value_is_the_median_of_its_samples_before_and_after() -> None:
    assert run_speed_us([3.0, 1.0], [2.0, 10.0, 4.0]) == 3.0
    assert run_speed_us([], [5.0]) == 5.0
    assert run_speed_us([], []) is None
