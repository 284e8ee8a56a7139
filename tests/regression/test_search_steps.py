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


def test_a_capacity_that_is_only_a_lower_bound_is_not_gated(tmp_path: Path) -> None:
    """A generator-limited or cut-short search says the server did at least that much, not what it does."""

    def bound_first_search(doc: dict[str, object]) -> None:
        entries = doc["capacity"]
        assert isinstance(entries, list)
        entries[0]["limited_by"] = "load generator"
        entries[1]["converged"] = False

    built = build_bundle(tmp_path, SEARCHES)
    every = sum(len(v) for k, v in series(load_bundle(built)).items() if k.metric == CAPACITY_METRIC)
    bundle = load_bundle(edit_results(built, bound_first_search))
    assert [entry.lower_bound for entry in bundle.capacity[:2]] == [True, True]
    gated = sum(len(v) for k, v in series(bundle).items() if k.metric == CAPACITY_METRIC)
    assert gated == every - 2  # the two lower bounds left out, every other repetition kept
