"""The verdict and recommendations, computed straight from fixture bundles (no rendering)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from servingbench.reports import load_bundle
from servingbench.reports.verdict import (
    GroupVerdict,
    MetricVerdict,
    predict_kind,
    predict_wall_over_cpu,
    recommendations,
    verdicts,
)

from .builders import (
    FAST_A,
    FAST_B,
    FAST_MODEL,
    HEAVY_MODEL,
    SLOW_C,
    BundleSpec,
    ConfigSpec,
    ModelSpec,
    ScenarioSpec,
    build_bundle,
)

SCENARIOS = (ScenarioSpec("single-c1", concurrency=1), ScenarioSpec("single-c8", concurrency=8))
ASYNC = ConfigSpec("fastapi-async", "FastAPI / uvicorn (async def)", "fastapi", "uvicorn", "async", 0.9)
SLEEP_MODEL = ModelSpec("sleep10", validate_ms=0.02, predict_ms=10.0, noise=0.01, waits=True)
NOISY_MODEL = ModelSpec("noisy", validate_ms=0.02, predict_ms=0.05, noise=0.3)  # twins too noisy to settle
SPEC = BundleSpec(models=(FAST_MODEL,), scenarios=SCENARIOS, capacity=False, invalid_runs=False)


def _groups(tmp_path: Path, spec: BundleSpec) -> tuple[list[GroupVerdict], list[str]]:
    bundle = load_bundle(build_bundle(tmp_path, spec))
    groups = verdicts(bundle)
    return groups, recommendations(bundle, groups)


def _metric(groups: list[GroupVerdict], scenario: str, metric: str) -> MetricVerdict:
    (group,) = [group for group in groups if group.info.name == scenario]
    (found,) = [verdict for verdict in group.metrics if verdict.metric.name == metric]
    return found


def _outcomes(verdict: MetricVerdict) -> dict[str, str]:
    return {item.config: item.outcome for item in verdict.outcomes}


def test_a_clear_winner_is_recommended(tmp_path: Path) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A, SLOW_C)))
    rps = _metric(groups, "single-c8", "rps")
    assert _outcomes(rps) == {FAST_A.name: "best", SLOW_C.name: "slower"}
    assert rps.decided and rps.family.size == 1
    assert note.startswith("For the model 'fast', prefer FastAPI / uvicorn (def): the only config significantly")
    assert "Flask / gunicorn sync is slower on throughput in single-c" in note and "0.60\u00d7" in note
    assert "95% paired t interval; 5 pairs" in note
    assert "Predict takes" in note and "choose" not in note


def test_twins_are_equivalent_where_the_interval_fits_the_margin_and_not_settled_where_it_does_not(
    tmp_path: Path,
) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A, FAST_B, SLOW_C)))
    rps, p99 = _metric(groups, "single-c8", "rps"), _metric(groups, "single-c8", "p99")
    assert _outcomes(rps) == {FAST_A.name: "best", FAST_B.name: "equivalent", SLOW_C.name: "slower"}
    assert rps.family.size == 3 and "Bonferroni over 3 pairs" in rps.headline
    twin = next(item for item in rps.outcomes if item.config == FAST_B.name)
    assert twin.outcome_text == "equivalent within ±5%" and "5 pairs" in twin.interval_text
    assert _outcomes(p99)[FAST_B.name] == "inconclusive"  # p99 is noisier: its interval spans the margin
    assert "not settled between FastAPI / uvicorn (def) and Flask / gunicorn gthread: run about" in note
    assert "Flask / gunicorn sync is slower on throughput" in note and "significantly worse in 6 of 6 verdicts" in note


def test_a_wider_margin_makes_the_twins_equivalent_everywhere(tmp_path: Path) -> None:
    spec = SPEC.with_(configs=(FAST_A, FAST_B, SLOW_C), plan={"equivalence_margin": 0.15})
    groups, (note,) = _groups(tmp_path, spec)
    assert {_outcomes(verdict)[FAST_B.name] for group in groups for verdict in group.metrics} == {"equivalent"}
    assert "FastAPI / uvicorn (def) and Flask / gunicorn gthread are equivalent within ±15%" in note
    assert "choose between them on other grounds" in note


def test_noisy_twins_are_not_settled_and_the_report_says_how_many_repetitions_would_settle_it(tmp_path: Path) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A, FAST_B), models=(NOISY_MODEL,)))
    rps = _metric(groups, "single-c8", "rps")
    twin = next(item for item in rps.outcomes if item.comparison is not None)
    assert twin.outcome == "inconclusive" and twin.outcome_text == "not settled"
    assert twin.advice.startswith("run about ") and twin.advice.endswith(" more repetitions")
    assert "not settled between" in note and "run about" in note
    assert "within noise" not in note and "other grounds" not in note


def test_a_named_reference_is_the_reference_of_every_verdict(tmp_path: Path) -> None:
    spec = SPEC.with_(configs=(FAST_A, FAST_B, SLOW_C), plan={"reference": SLOW_C.name, "equivalence_margin": 0.1})
    groups, (note,) = _groups(tmp_path, spec)
    rps = _metric(groups, "single-c8", "rps")
    assert rps.named and rps.reference == SLOW_C.name and rps.margin == 0.1
    assert rps.family.size == 2 and "Bonferroni over 2 comparisons with the reference" in rps.headline
    assert _outcomes(rps) == {SLOW_C.name: "reference", FAST_A.name: "faster", FAST_B.name: "faster"}
    assert rps.headline.startswith("against the reference Flask / gunicorn sync;")
    assert note.startswith("For the model 'fast', against the reference Flask / gunicorn sync: FastAPI / uvicorn (def)")
    assert "FastAPI / uvicorn (def) is faster in 6 of 6 verdicts" in note and "prefer" not in note


def test_an_unknown_reference_falls_back_to_the_best(tmp_path: Path) -> None:
    groups, _ = _groups(tmp_path, SPEC.with_(configs=(FAST_A, SLOW_C), plan={"reference": "nope"}))
    rps = _metric(groups, "single-c8", "rps")
    assert not rps.named and rps.reference == FAST_A.name


def test_fewer_than_five_repetitions_give_ranges_and_no_verdict_words(tmp_path: Path) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A, SLOW_C), repetitions=3))
    rps = _metric(groups, "single-c8", "rps")
    slow = next(item for item in rps.outcomes if item.config == SLOW_C.name)
    assert slow.outcome == "range" and slow.outcome_text == "no verdict"
    assert "(range of 3 repetitions)" in slow.interval_text and "95%" not in slow.interval_text
    assert "no comparison rests on 5 pairs, so there is no verdict" in rps.headline
    assert not rps.decided
    assert "fewer than 5 repetitions: no interval with every config measured, so there is no verdict" in note
    assert "prefer" not in note and "slower" not in note


def test_an_invalid_run_drops_out_of_its_pair_only(tmp_path: Path) -> None:
    spec = SPEC.with_(configs=(FAST_A, FAST_B, SLOW_C), repetitions=6, invalid=((SLOW_C.name, 2),))
    groups, _ = _groups(tmp_path, spec)
    rps = _metric(groups, "single-c8", "rps")
    pairs = {item.config: item.comparison.pairs for item in rps.outcomes if item.comparison is not None}
    assert pairs[SLOW_C.name] == 5 and sorted(pairs.values()) == [5, 6]  # the twin that is not best: 6 pairs
    (group,) = [group for group in groups if group.info.name == "single-c8"]
    assert group.valid_runs == {FAST_A.name: 6, FAST_B.name: 6, SLOW_C.name: 5}


def test_a_single_config_has_nothing_to_compare(tmp_path: Path) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A,), scenarios=SCENARIOS[:1]))
    (group,) = groups
    assert [verdict.headline for verdict in group.metrics] == ["only FastAPI / uvicorn (def) has valid runs"] * 3
    assert not any(verdict.decided for verdict in group.metrics)
    assert "only FastAPI / uvicorn (def) has valid runs: nothing to compare" in note


def test_two_models_on_one_stack_are_the_arms(tmp_path: Path) -> None:
    costly = dataclasses.replace(FAST_MODEL, name="costly", predict_ms=0.087)  # 10 % more per request
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A,), models=(FAST_MODEL, costly)))
    assert {group.arms for group in groups} == {"models"}
    assert {group.held for group in groups} == {FAST_A.label}
    rps = _metric(groups, "single-c8", "rps")
    assert _outcomes(rps) == {"fast": "best", "costly": "slower"}
    slower = next(item for item in rps.outcomes if item.config == "costly")
    assert slower.comparison is not None and slower.comparison.ratio == pytest.approx(0.9, abs=0.01)
    assert note.startswith("On FastAPI / uvicorn (def), comparing the models: throughput in single-c1: fast is best;")


def test_async_note_names_a_blocking_wait_for_a_model_that_sleeps(tmp_path: Path) -> None:
    notes = _groups(tmp_path, SPEC.with_(configs=(FAST_A, ASYNC), models=(SLEEP_MODEL,)))[1]
    assert len(notes) == 2
    assert "FastAPI / uvicorn (async def) (async def route) had significantly lower throughput" in notes[1]
    assert "predict mostly waits" in notes[1] and "blocking call on the event loop" in notes[1]
    assert "CPU-bound" not in notes[1]


def test_async_note_names_a_cpu_bound_predict_for_a_model_that_computes(tmp_path: Path) -> None:
    heavy = dataclasses.replace(HEAVY_MODEL, noise=0.01)
    notes = _groups(tmp_path, SPEC.with_(configs=(FAST_A, ASYNC), models=(heavy,)))[1]
    assert len(notes) == 2 and "predict is CPU-bound and runs on the event loop" in notes[1]
    assert "blocking call" not in notes[1]


def test_no_async_note_where_the_measurement_does_not_show_the_cause(tmp_path: Path) -> None:
    notes = _groups(tmp_path, SPEC.with_(configs=(FAST_A, ASYNC)))[1]  # predict is a small share of the CPU
    assert len(notes) == 1 and "slower" in notes[0]


def test_predict_kind_thresholds() -> None:
    assert predict_kind(None) is None
    assert predict_kind(12.0) == "waiting" and predict_kind(2.0) == "waiting"
    assert predict_kind(1.0) == "cpu-bound" and predict_kind(0.5) == "cpu-bound" and predict_kind(1.25) == "cpu-bound"
    assert predict_kind(0.2) is None and predict_kind(1.6) is None
    assert predict_wall_over_cpu([]) is None


def test_winner_is_decided_only_when_every_other_config_is_significantly_slower(bundle_dir: Path) -> None:
    groups = {(group.info.model, group.info.name): group for group in verdicts(load_bundle(bundle_dir))}
    fast = {verdict.metric.name: verdict for verdict in groups[("fast", "single-c8")].metrics}
    assert list(fast) == ["rps", "p50", "p99"]
    assert not fast["rps"].decided  # two configs tie at the top
    open_loop = {verdict.metric.name for verdict in groups[("fast", "open-r300")].metrics}
    assert open_loop == {"p50", "p99"}


def test_a_leader_with_unsettled_comparisons_is_not_recommended_outright(tmp_path: Path) -> None:
    groups, (note,) = _groups(tmp_path, SPEC.with_(configs=(FAST_A, SLOW_C), models=(HEAVY_MODEL,)))
    outcomes = {item.outcome for group in groups for verdict in group.metrics for item in verdict.outcomes}
    assert {"slower", "inconclusive"} <= outcomes
    assert note.startswith("For the model 'heavy', FastAPI / uvicorn (def) leads: every other config is significantly")
    assert "of its comparisons are not settled: run about" in note and "prefer" not in note
