"""The time estimate learns what runs and server starts cost on this machine from the last bundle written here."""

from __future__ import annotations

import json
from pathlib import Path

from servingbench.harness.costs import RunCosts, learned_costs

HERE = {"hostname": "vm-1", "cpu_model": "AMD EPYC"}


def write_latest(root: Path, environment: dict[str, str], overheads: list[float], starts: list[float]) -> None:
    bundle = root / "20261202T000000Z"
    bundle.mkdir(parents=True)
    runs = [{"status": "ok", "warmup_s": 0.3, "duration_s": 1.5, "wall_s": 1.8 + overhead} for overhead in overheads]
    sessions = [{"id": f"s{i}", "start_s": start} for i, start in enumerate(starts)]
    document = {"created": "2026-12-02T00:00:00Z", "environment": environment, "runs": runs, "sessions": sessions}
    (bundle / "results.json").write_text(json.dumps(document))
    (root / "latest").symlink_to(bundle.name)


def test_costs_come_from_the_last_bundle_of_this_machine(tmp_path: Path) -> None:
    write_latest(tmp_path, HERE, [0.2, 0.4, 0.3], [5.0, 6.0, 7.0])
    costs = learned_costs(tmp_path, HERE)
    assert round(costs.run_overhead_s, 6) == 0.3 and costs.start_s == 6.0
    assert "measured" in costs.source


def test_another_machine_or_no_bundle_falls_back_to_the_constants(tmp_path: Path) -> None:
    assert learned_costs(tmp_path, HERE) == RunCosts()
    write_latest(tmp_path, {"hostname": "vm-2", "cpu_model": "AMD EPYC"}, [0.2, 0.4, 0.3], [5.0, 6.0, 7.0])
    assert learned_costs(tmp_path, HERE) == RunCosts()


def test_too_few_samples_keep_the_constant(tmp_path: Path) -> None:
    write_latest(tmp_path, HERE, [0.2], [5.0, 6.0, 7.0])
    costs = learned_costs(tmp_path, HERE)
    assert costs.run_overhead_s == RunCosts().run_overhead_s and costs.start_s == 6.0
