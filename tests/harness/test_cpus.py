"""CPU allocation from injected affinity and cgroup quotas: disjoint sets, or a clear error, or a marked violation."""

from __future__ import annotations

from pathlib import Path

import pytest

from servingbench.harness.cpus import (
    CpuAllocationError,
    allocate_cpus,
    parse_cfs_quota,
    parse_cpu_max,
    read_cpu_quota,
    usable_cpus,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),
        ("150000 100000\n", 1.5),
        ("200000 100000", 2.0),
        ("50000", 0.5),
        ("", None),
        ("x y", None),
    ],
)
def test_parse_cpu_max(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


def test_parse_cfs_quota() -> None:
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("250000\n", "100000\n") == 2.5
    assert parse_cfs_quota("junk", "100000") is None


def test_usable_cpus_cuts_to_the_quota_rounded_down() -> None:
    assert usable_cpus({3, 1, 2, 0}, None) == (0, 1, 2, 3)
    assert usable_cpus({0, 1, 2, 3}, 1.5) == (0,)
    assert usable_cpus({0, 1, 2, 3}, 2.0) == (0, 1)
    assert usable_cpus({0, 1}, 0.5) == (0,)
    assert usable_cpus({4, 6}, 8.0) == (4, 6)


def test_two_cores_give_one_to_each_side() -> None:
    allocation = allocate_cpus({0, 1}, None)
    assert (allocation.server, allocation.load, allocation.shared) == ((0,), (1,), False)
    assert "pinned to the same CPUs [0]" in allocation.fairness_rules()[0]


def test_four_cores_give_the_rest_to_the_load_generator() -> None:
    allocation = allocate_cpus({0, 1, 2, 3}, None)
    assert (allocation.server, allocation.load) == ((0,), (1, 2, 3))
    allocation = allocate_cpus({0, 1, 2, 3}, None, server_cpus=2)
    assert (allocation.server, allocation.load) == ((0, 1), (2, 3))
    assert not set(allocation.server) & set(allocation.load)


def test_one_core_is_an_error_naming_the_override() -> None:
    with pytest.raises(CpuAllocationError) as info:
        allocate_cpus({5}, None)
    message = str(info.value)
    assert "only 1 usable CPU(s) (affinity [5])" in message
    assert "--allow-shared-cores" in message
    assert "\n" not in message


def test_one_core_with_the_override_is_marked_shared() -> None:
    allocation = allocate_cpus({5}, None, allow_shared=True)
    assert (allocation.server, allocation.load, allocation.shared) == ((5,), (5,), True)
    assert allocation.fairness_rules()[0].startswith("VIOLATED")
    assert allocation.to_json()["shared_cores"] is True


def test_quota_of_one_and_a_half_on_four_cores_leaves_one_usable() -> None:
    with pytest.raises(CpuAllocationError, match=r"cgroup quota 1\.5 CPUs"):
        allocate_cpus({0, 1, 2, 3}, 1.5)
    allocation = allocate_cpus({0, 1, 2, 3}, 2.5)
    assert (allocation.usable, allocation.server, allocation.load) == ((0, 1), (0,), (1,))
    assert allocation.to_json()["cpu_quota"] == 2.5


def test_read_cpu_quota_v2_takes_the_tightest_ancestor(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/outer/inner\n")
    (tmp_path / "fs" / "outer" / "inner").mkdir(parents=True)
    (tmp_path / "fs" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "fs" / "outer" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "fs" / "outer" / "inner" / "cpu.max").write_text("300000 100000\n")
    assert read_cpu_quota(tmp_path / "fs", proc) == 1.5


def test_read_cpu_quota_v1(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/\n")
    (tmp_path / "fs" / "cpu").mkdir(parents=True)
    (tmp_path / "fs" / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "fs" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cpu_quota(tmp_path / "fs", proc) == 2.0


def test_read_cpu_quota_without_cgroups(tmp_path: Path) -> None:
    assert read_cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_without_cpu_pinning_the_error_says_linux_or_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    from servingbench.harness import cpus

    monkeypatch.delattr("os.sched_getaffinity")
    with pytest.raises(cpus.CpuAllocationError, match="needs Linux") as caught:
        cpus.detect_cpus()
    assert "containers" in str(caught.value) and "\n" not in str(caught.value)
