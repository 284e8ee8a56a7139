"""The gate judges a capacity search by its capacity entry, never its steps one by one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from servingbench.reports import load_bundle
from servingbench.reports.regression import CAPACITY_METRIC, disturbed_runs, expected_cpu_share, series
from tests.reports.builders import SearchSpec, build_bundle

from .fixtures import SPEC, edit_results

SEARCHES = SPEC.with_(capacity=False, searches=(SearchSpec(), SearchSpec(arrivals="constant")))
STARVED_CPU_S = 0.5  # a tenth of the usual server CPU of a run: would be "disturbed" if it were judged


def test_series_holds_capacities_not_steps(tmp_path: Path) -> None:
    bundle = load_bundle(build_bundle(tmp_path, SEARCHES))
    assert bundle.step_runs
    figures = series(bundle)
    assert not [key for key in figures if key.scenario.startswith("capacity-r")]
    capacity = sorted(key.scenario for key in figures if key.metric == CAPACITY_METRIC)
    assert capacity == ["capacity at p99 <= 5 ms", "capacity at p99 <= 5 ms, constant arrivals"]  # one per search
    assert all(len(samples) == SPEC.repetitions for key, samples in figures.items() if key.metric == CAPACITY_METRIC)


def test_steps_are_never_disturbed_runs(tmp_path: Path) -> None:
    def starve(doc: dict[str, object]) -> None:
        runs = doc["runs"]
        assert isinstance(runs, list)
        for run in runs:
            if run.get("search") is not None or run["order"] == 1:
                run["server_cpu_s"] = STARVED_CPU_S

    bundle = load_bundle(edit_results(build_bundle(tmp_path, SEARCHES), starve))
    expected = expected_cpu_share([bundle])
    assert not [key for key in expected if key[2].startswith("capacity-r")]
    disturbed = disturbed_runs(bundle, expected)
    assert list(disturbed) == [bundle.runs[0].id]


def test_a_search_step_leaves_the_scenario_series_alone(tmp_path: Path) -> None:
    with_steps = series(load_bundle(build_bundle(tmp_path / "steps", SEARCHES)))
    plain = series(load_bundle(build_bundle(tmp_path / "plain", dataclasses.replace(SEARCHES, searches=()))))
    assert {key: value for key, value in with_steps.items() if key.metric != CAPACITY_METRIC} == plain
