"""Like with like: the machine identity recorded in bundles, and what makes two plans the same."""

from __future__ import annotations

from pathlib import Path

from servingbench.gate.fingerprint import Machine, machine_mismatch, plan_identity, plan_mismatch, software_changes
from servingbench.harness.environment import machine_id

from .canned import CONFIG, Shape, document


def _files(tmp_path: Path, text: str | None) -> tuple[Path, ...]:
    path = tmp_path / "machine-id"
    if text is not None:
        path.write_text(text)
    return (path, tmp_path / "missing")


def test_the_machine_id_is_a_stable_hash_and_never_the_raw_id(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU @ 2.0GHz\n")
    one = machine_id(_files(tmp_path, "abc123\n"), cpuinfo)
    assert one is not None and len(one) == 16 and "abc123" not in one
    assert machine_id(_files(tmp_path, "abc123"), cpuinfo) == one
    assert machine_id(_files(tmp_path, "def456"), cpuinfo) != one
    cpuinfo.write_text("model name\t: Another CPU\n")
    assert machine_id(_files(tmp_path, "abc123"), cpuinfo) != one


def test_no_machine_id_file_means_no_identity(tmp_path: Path) -> None:
    assert machine_id((tmp_path / "none",), tmp_path / "cpuinfo") is None
    assert machine_id(_files(tmp_path, "  \n"), tmp_path / "cpuinfo") is None


def test_machines_compare_by_identity_only() -> None:
    here = Machine("a" * 16, "CPU", 2)
    assert machine_mismatch(here, Machine("a" * 16, "CPU", 2)) is None
    assert "this run is on" in (machine_mismatch(here, Machine("b" * 16, "CPU", 2)) or "")
    assert "no machine identity" in (machine_mismatch(Machine(None, "CPU", 2), here) or "")
    assert "no stable identity" in (machine_mismatch(here, Machine(None, "CPU", 2)) or "")
    assert Machine.of({"machine_id": "x", "cpu_model": "CPU", "logical_cpus": True}).logical_cpus is None


def test_an_ab_plan_and_its_one_config_plan_are_the_same_plan() -> None:
    ab = plan_identity(document(Shape())["plan"])
    single = plan_identity(document(Shape(), (CONFIG,))["plan"])
    assert ab == single
    longer = plan_identity(document(Shape(repetitions=30), (CONFIG,))["plan"])
    assert plan_mismatch(single, longer) == "knobs.repetitions: 20 vs 30"
    moved = document(Shape(), (CONFIG,))["plan"]
    moved["models"]["model"]["spec"] = "/elsewhere/models/model.skops"
    other = document(Shape(), (CONFIG,))["plan"]
    other["models"]["model"]["spec"] = "/checkout/models/model.skops"
    assert plan_identity(moved) == plan_identity(other)  # a model file by its name: checkouts differ in place


def test_the_memory_probe_is_part_of_the_plan_only_when_it_is_on() -> None:
    """It takes a share of the server's core, so a baseline made without it does not judge a run with it; off (0 or
    absent, as in every plan before it existed) the identity is the one stored before the knob existed."""
    plain = document(Shape(), (CONFIG,))["plan"]
    assert "memory_probe_steps" not in plan_identity(plain)["knobs"]
    assert plan_identity({**plain, "memory_probe_steps": 0}) == plan_identity(plain)
    probed = plan_identity({**plain, "memory_probe_steps": 5000})
    assert plan_mismatch(plan_identity(plain), probed) == "knobs.memory_probe_steps: None vs 5000"


def test_software_changes_list_python_and_packages() -> None:
    old = {"python": "3.11.7", "packages": {"fastapi": "0.115.0", "flask": "3.0.0"}}
    new = {"python": "3.11.9", "packages": {"fastapi": "0.116.0", "flask": "3.0.0"}}
    assert software_changes(old, new) == ["python 3.11.7 -> 3.11.9", "fastapi 0.115.0 -> 0.116.0"]
    assert software_changes(old, old) == []
