"""Judging an A/B bundle: the decision on canned bundles with known effects (pure, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servingbench.gate import EXIT_NO_VERDICT, EXIT_PASS, EXIT_REGRESSION, GATE_METRICS, judge_ab, measure_noise
from servingbench.gate.ab import material_threshold
from servingbench.gate.figures import MIN_UNITS, FigureKey
from servingbench.reports.bundle import load_bundle

from .canned import MODEL, OTHER_MACHINE, SCENARIO, Shape, ab_bundle, calibration_bundles, document, write_bundle


def _verdicts(tmp_path: Path, shape: Shape) -> dict[str, str]:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", shape)))
    return {row.key.metric: row.verdict for row in result.rows}


def test_unchanged_code_passes_with_every_figure_judged(tmp_path: Path) -> None:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab")))
    assert result.exit_code == EXIT_PASS and result.status == "pass"
    assert {row.key.metric for row in result.rows} == set(GATE_METRICS)
    assert all(row.n == Shape().repetitions for row in result.rows)
    assert all(row.verdict in ("equivalent", "inconclusive", "below threshold") for row in result.rows)
    assert result.family_level == pytest.approx(1 - 0.05 / len(GATE_METRICS))
    assert result.reason.startswith("no regression in 4 figures")


def test_fifteen_percent_more_cost_is_a_regression_on_every_cost_figure(tmp_path: Path) -> None:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", Shape(head_factor=1.15))))
    assert result.exit_code == EXIT_REGRESSION
    by_metric = {row.key.metric: row for row in result.rows}
    for metric in ("rps", "p50", "cpu_us_per_request"):
        row = by_metric[metric]
        assert row.verdict == "regression"
        assert row.cost_change == pytest.approx(0.15, abs=0.03)  # + means more cost, throughput included
        assert row.low is not None and row.low > 0
    assert result.reason.startswith("regression in ")


def test_cheaper_head_passes_and_says_improvement(tmp_path: Path) -> None:
    verdicts = _verdicts(tmp_path, Shape(head_factor=0.8))
    assert verdicts["cpu_us_per_request"] == verdicts["rps"] == "improvement"
    result = judge_ab(load_bundle(tmp_path / "ab"))
    assert result.exit_code == EXIT_PASS and "improvement" in result.reason


def test_a_significant_change_below_the_threshold_passes(tmp_path: Path) -> None:
    verdicts = _verdicts(tmp_path, Shape(head_factor=1.03, noise_sd=0.003))
    assert verdicts["cpu_us_per_request"] == "below threshold"
    assert judge_ab(load_bundle(tmp_path / "ab")).exit_code == EXIT_PASS


def test_drift_shared_by_both_arms_cancels_in_the_pairs(tmp_path: Path) -> None:
    # The machine's speed swings 40 % between repetitions; each pair shares it, so 10 % still shows.
    verdicts = _verdicts(tmp_path, Shape(head_factor=1.10, drift_sd=0.4, noise_sd=0.01))
    assert verdicts["cpu_us_per_request"] == "regression"


def test_too_few_repetitions_is_no_verdict(tmp_path: Path) -> None:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", Shape(repetitions=MIN_UNITS - 1, head_factor=2.0))))
    assert result.exit_code == EXIT_NO_VERDICT and result.status == "no verdict"
    assert f"(need {MIN_UNITS})" in result.reason
    assert {row.verdict for row in result.rows} == {"too few"}


def test_a_base_that_never_ran_is_no_verdict_with_the_reason(tmp_path: Path) -> None:
    shape = Shape(invalid=frozenset(("base", rep) for rep in range(20)))
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", shape)))
    assert result.exit_code == EXIT_NO_VERDICT
    assert "base: 20 of 20 runs invalid (error rate" in result.reason


def test_invalid_runs_drop_their_pairs_only(tmp_path: Path) -> None:
    shape = Shape(invalid=frozenset({("head", 3), ("base", 7)}))
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", shape)))
    assert result.exit_code == EXIT_PASS
    assert {row.n for row in result.rows} == {18}
    assert any(note.startswith("head: 1 of 20 runs invalid") for note in result.notes)


def test_restarts_make_blocks_the_unit(tmp_path: Path) -> None:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", Shape(restart_every=4))))
    assert {row.n for row in result.rows} == {5}
    assert result.unit == "block of 4 repetitions"
    assert "paired unit: block of 4 repetitions (the repetitions of one server start)" in result.notes


def test_an_incomplete_run_or_a_bundle_without_arms_is_no_verdict(tmp_path: Path) -> None:
    incomplete = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", Shape(complete=False))))
    assert incomplete.exit_code == EXIT_NO_VERDICT and "did not finish" in incomplete.reason
    single = write_bundle(tmp_path / "single", document(Shape(), ("fastapi-uvicorn",)))
    result = judge_ab(load_bundle(single))
    assert result.exit_code == EXIT_NO_VERDICT and "not an A/B run" in result.reason


def test_calibration_from_this_machine_raises_thresholds_above_the_defaults(tmp_path: Path) -> None:
    noisy = calibration_bundles(tmp_path / "cal", Shape(drift_sd=0.02), factors=(1.0, 1.2, 0.85, 1.1, 0.9))
    noise = measure_noise([load_bundle(path) for path in noisy])
    key = FigureKey(MODEL, SCENARIO, "cpu_us_per_request")
    threshold, source = material_threshold(key, noise)
    assert threshold > GATE_METRICS["cpu_us_per_request"].default_threshold
    assert source.startswith("A/A noise (5 runs)")
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab", Shape(head_factor=1.08, noise_sd=0.005))), noise=noise)
    row = next(row for row in result.rows if row.key == key)
    assert row.threshold == pytest.approx(threshold) and row.verdict == "below threshold"
    assert any("thresholds from calibration" in note for note in result.notes)


def test_calibration_from_another_machine_is_not_used(tmp_path: Path) -> None:
    paths = calibration_bundles(tmp_path / "cal", Shape(drift_sd=0.02), factors=(1.0, 1.2, 0.85, 1.1, 0.9))
    noise = measure_noise([load_bundle(path) for path in paths])
    bundle = ab_bundle(tmp_path / "ab", Shape(machine_id=OTHER_MACHINE))
    result = judge_ab(load_bundle(bundle), noise=noise)
    assert {row.threshold_source for row in result.rows} == {"default"}
    assert any("not used for thresholds" in note and "machine" in note for note in result.notes)


def test_the_check_reads_the_head_commit_from_the_bundle(tmp_path: Path) -> None:
    result = judge_ab(load_bundle(ab_bundle(tmp_path / "ab")))
    assert result.context["head"] == {"commit": "1" * 40, "dirty": False}
    assert json.dumps(result.context)  # plain data, for check.json
