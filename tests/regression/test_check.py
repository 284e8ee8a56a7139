"""The regression gate on fixture bundles: identical, slower, faster, too noisy, invalid, another machine."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from servingbench.reports.regression import (
    ABSOLUTE,
    EXIT_PASS,
    EXIT_REGRESSION,
    EXIT_UNUSABLE,
    MIN_EFFECT,
    NOISE_FILE,
    RELATIVE,
    SUMMARY_FILE,
    CheckResult,
    check,
    markdown_summary,
    run_check,
)
from tests.reports.builders import BundleSpec, ModelSpec, build_bundle

from .fixtures import (
    SPEC,
    edit_results,
    make_baseline,
    move_to_other_machine,
    with_model,
    with_overhead,
    with_reference,
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_baseline(tmp_path_factory.mktemp("calibrated"))


def _current(tmp_path: Path, spec: BundleSpec = SPEC, name: str = "current") -> Path:
    return build_bundle(tmp_path / name, spec)


def _verdicts(result: CheckResult, metric: str | None = None, model: str = "fast") -> set[str]:
    """The verdicts of one metric (or of every metric) of one model."""
    return {row.verdict for row in result.rows if row.key.model == model and metric in (None, row.key.metric)}


def test_identical_runs_pass(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path))
    assert result.exit_code == EXIT_PASS
    assert result.status == "pass"
    assert result.basis == ABSOLUTE
    assert _verdicts(result) | _verdicts(result, model="reference") <= {"not significant", "within noise"}
    metrics = {row.key.metric for row in result.rows}
    assert metrics == {"rps", "p50", "p99", "cpu_us_per_request", "capacity_rps"}


SLOWER_MODEL = with_model(predict_ms=0.2)  # 0.15 ms more per request: +40 % cost, the yardstick unchanged


def test_clearly_slower_is_a_regression(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, SLOWER_MODEL))
    assert result.exit_code == EXIT_REGRESSION
    assert result.status == "regression"
    assert "regression" in _verdicts(result, "cpu_us_per_request")
    assert "regression" in _verdicts(result, "rps")
    for row in result.regressions:
        assert row.cost_change > row.threshold
        assert row.p_worse < 0.05
    assert result.reason.startswith("regression in ")


def test_clearly_faster_passes_and_reports_the_improvement(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, with_model(predict_ms=0.001)))
    assert result.exit_code == EXIT_PASS
    assert "improvement" in _verdicts(result, "cpu_us_per_request")
    assert "regression" not in _verdicts(result)
    assert "improvement" in result.reason


def test_the_reference_model_is_a_yardstick_not_a_gate(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, with_reference(predict_ms=0.3)))
    assert result.exit_code != EXIT_REGRESSION
    assert "yardstick slower" in _verdicts(result, "cpu_us_per_request", model="reference")
    assert all(not row.gated for row in result.rows if row.key.model == "reference")


def test_a_steady_yardstick_is_judged_on_absolute_figures(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, SLOWER_MODEL))
    assert result.basis == ABSOLUTE
    assert result.reason.startswith("regression in 5 of 5 figures")  # the model's five, not the yardstick's


def test_when_the_yardstick_moves_only_a_model_that_moved_further_fails(baseline: Path, tmp_path: Path) -> None:
    # The framework part is 50 % slower (the yardstick +47 %), and the model costs 0.15 ms more on top (+81 %).
    slower_machine = with_overhead(1.5).with_(models=SLOWER_MODEL.models)
    result = check(baseline, _current(tmp_path, slower_machine))
    assert result.exit_code == EXIT_REGRESSION
    assert result.basis == ABSOLUTE
    assert "yardstick moved" in result.notes[0]
    assert all(row.threshold_source == "yardstick drift" for row in result.regressions)


def test_everything_slower_alike_gives_no_verdict_with_the_reason(baseline: Path, tmp_path: Path) -> None:
    # A slower machine and a slower serving stack look alike: the check says so instead of guessing.
    result = check(baseline, _current(tmp_path, with_overhead(1.5)))
    assert result.exit_code == EXIT_UNUSABLE
    assert "yardstick moved" in result.reason
    assert "make baseline" in result.reason


def test_a_dependency_bump_that_slows_everything_is_a_regression(baseline: Path, tmp_path: Path) -> None:
    bumped = with_overhead(1.5).with_(packages={"fastapi": "0.200.0", "flask": "3.1.3"}, fingerprint="d" * 64)
    result = check(baseline, _current(tmp_path, bumped))
    assert result.exit_code == EXIT_REGRESSION
    assert result.basis == ABSOLUTE
    assert any("fastapi 0.165.0 -> 0.200.0" in note for note in result.notes)


def test_a_small_change_inside_the_noise_passes(baseline: Path, tmp_path: Path) -> None:
    # 2 % more framework cost: significant on the noiseless CPU figure, but below the 10 % minimum effect.
    result = check(baseline, _current(tmp_path, with_overhead(1.02)))
    assert result.exit_code == EXIT_PASS
    assert _verdicts(result, "cpu_us_per_request") <= {"within noise", "not significant"}


def test_a_change_hidden_in_wide_spread_is_not_significant(baseline: Path, tmp_path: Path) -> None:
    # Throughput and latency swing by +-25 % between repetitions; the model got 3 % slower.
    result = check(baseline, _current(tmp_path, with_model(noise=0.25, predict_ms=0.06)))
    assert result.exit_code == EXIT_PASS
    for metric in ("rps", "p50", "p99"):
        assert _verdicts(result, metric) <= {"not significant", "too noisy"}


def test_a_quiet_figure_still_catches_what_the_noisy_ones_hide(baseline: Path, tmp_path: Path) -> None:
    # The model got 16 % slower: lost in the throughput spread, plain in the (noiseless) CPU per request.
    result = check(baseline, _current(tmp_path, with_model(noise=0.25, predict_ms=0.11)))
    assert result.exit_code == EXIT_REGRESSION
    assert _verdicts(result, "rps") <= {"not significant", "too noisy"}
    assert _verdicts(result, "cpu_us_per_request") == {"regression"}


def test_a_run_too_noisy_to_judge_says_so(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, with_model(noise=0.7)))
    assert result.exit_code == EXIT_PASS
    assert "too noisy" in _verdicts(result, "p50")
    assert "too noisy" in result.reason
    assert any("cannot judge" in note for note in result.notes)


def test_thresholds_come_from_the_calibration(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path))
    sources = {row.threshold_source for row in result.rows}
    assert not any("no calibration" in source for source in sources)
    assert all(row.threshold >= MIN_EFFECT for row in result.rows)


def test_without_noise_file_the_check_says_so(baseline: Path, tmp_path: Path) -> None:
    plain = build_bundle(tmp_path / "uncalibrated", SPEC)
    result = check(plain, _current(tmp_path))
    assert result.exit_code == EXIT_PASS
    assert any(NOISE_FILE in note for note in result.notes)


def test_an_incomplete_current_run_is_invalid(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, SPEC.with_(complete=False)))
    assert result.exit_code == EXIT_UNUSABLE
    assert result.reason.startswith("invalid current run:")
    assert "incomplete" in result.reason


def _invalidate_model_runs(doc: dict[str, Any]) -> None:
    for run in doc["runs"]:
        if run["model"] == "fast" and run["repetition"] < 4:
            run.update(valid=False, invalid_reason="load generator saturated (97% CPU)")


def test_too_few_valid_repetitions_is_an_invalid_run_with_the_reason(baseline: Path, tmp_path: Path) -> None:
    current = edit_results(_current(tmp_path), _invalidate_model_runs)
    result = check(baseline, current)
    assert result.exit_code == EXIT_UNUSABLE
    assert "2 valid repetitions" in result.reason
    assert "load generator saturated" in result.reason


def test_one_invalid_repetition_is_noted_and_the_rest_judged(baseline: Path, tmp_path: Path) -> None:
    def invalidate_one(doc: dict[str, Any]) -> None:
        doc["runs"][0].update(valid=False, invalid_reason="error rate 5.0% over the limit 1.0%")

    result = check(baseline, edit_results(_current(tmp_path), invalidate_one))
    assert result.exit_code == EXIT_PASS
    assert any("error rate 5.0%" in note for note in result.notes)


def _starve(repetitions: range) -> Any:
    """Halve the server's CPU share in some repetitions of the model: another process took its core."""

    def change(doc: dict[str, Any]) -> None:
        for run in doc["runs"]:
            if run["model"] == "fast" and run["repetition"] in repetitions:
                run["server_cpu_s"] = run["server_cpu_s"] / 2

    return change


def test_a_repetition_starved_of_cpu_is_left_out_and_noted(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, edit_results(_current(tmp_path), _starve(range(1))))
    assert result.exit_code == EXIT_PASS
    starved = [row for row in result.rows if row.key.model == "fast" and row.key.scenario == "single-c8"]
    assert starved and all(row.current_n == SPEC.repetitions - 1 for row in starved)
    assert any("left out" in note and "0.45 CPU-s/s against 0.90 expected" in note for note in result.notes)


def test_a_run_starved_of_cpu_gives_no_verdict(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, edit_results(_current(tmp_path), _starve(range(4))))
    assert result.exit_code == EXIT_UNUSABLE
    assert result.reason.startswith("invalid current run:")
    assert "4 disturbed runs" in result.reason
    assert "machine was busy" in result.reason


def test_a_missing_figure_in_the_current_run_is_invalid(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, SPEC.with_(capacity=False)))
    assert result.exit_code == EXIT_UNUSABLE
    assert "capacity" in result.reason


def test_another_machine_is_compared_relative_to_the_reference(baseline: Path, tmp_path: Path) -> None:
    # The other machine is twice as fast for everything: absolute figures halve, relative ones do not move.
    faster = with_overhead(0.5).with_(models=tuple(_halved(model) for model in SPEC.models))
    result = check(baseline, edit_results(_current(tmp_path, faster), move_to_other_machine))
    assert result.exit_code == EXIT_PASS
    assert result.basis == RELATIVE
    assert {row.key.model for row in result.rows} == {"fast"}
    assert "different machine" in result.notes[0]
    assert "cpu_model" in result.notes[0]


def _halved(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, validate_ms=model.validate_ms / 2, predict_ms=model.predict_ms / 2)


def test_another_machine_still_catches_a_slower_model(baseline: Path, tmp_path: Path) -> None:
    slower = with_model(predict_ms=0.2)  # the model costs 0.15 ms more per request; the reference does not
    result = check(baseline, edit_results(_current(tmp_path, slower), move_to_other_machine))
    assert result.basis == RELATIVE
    assert result.exit_code == EXIT_REGRESSION


def test_another_machine_without_a_reference_is_refused(tmp_path: Path) -> None:
    spec = SPEC.with_(models=SPEC.models[:1])
    base = make_baseline(tmp_path / "base", spec)
    result = check(base, edit_results(_current(tmp_path, spec), move_to_other_machine))
    assert result.exit_code == EXIT_UNUSABLE
    assert "different machine" in result.reason
    assert "'reference'" in result.reason
    assert "make baseline" in result.reason


def test_new_package_versions_are_judged_on_the_same_machine(baseline: Path, tmp_path: Path) -> None:
    spec = SPEC.with_(fingerprint="d" * 64, packages={"fastapi": "0.200.0", "flask": "3.1.3"})
    result = check(baseline, _current(tmp_path, spec))
    assert result.basis == ABSOLUTE
    assert result.exit_code == EXIT_PASS
    assert any("fastapi 0.165.0 -> 0.200.0" in note for note in result.notes)


def test_missing_baseline_exits_2_with_one_line(tmp_path: Path) -> None:
    stderr, stdout = io.StringIO(), io.StringIO()

    code = run_check(tmp_path / "nowhere", _current(tmp_path), console=Console(file=stdout), stderr=stderr)
    assert code == EXIT_UNUSABLE
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("servingbench check: error: baseline not found:")
    assert "make baseline" in lines[0]


def test_a_broken_baseline_is_unusable(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    result = check(broken, _current(tmp_path))
    assert result.exit_code == EXIT_UNUSABLE
    assert result.reason.startswith("unusable baseline:")


def test_a_malformed_noise_file_is_unusable(tmp_path: Path) -> None:
    base = make_baseline(tmp_path / "base")
    (base / NOISE_FILE).write_text('{"format": "servingbench-noise", "version": 1, "entries": [{"basis": "x"}]}')
    result = check(base, _current(tmp_path))
    assert result.exit_code == EXIT_UNUSABLE
    assert NOISE_FILE in result.reason


def test_run_check_prints_the_table_and_writes_the_reports(baseline: Path, tmp_path: Path) -> None:

    out, summary = tmp_path / "out", tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    stdout = io.StringIO()
    code = run_check(
        baseline,
        _current(tmp_path, SLOWER_MODEL),
        out_dir=out,
        summary=summary,
        console=Console(file=stdout, width=200),
    )
    assert code == EXIT_REGRESSION
    text = stdout.getvalue()
    assert "CPU per request" in text and "regression" in text
    assert (out / SUMMARY_FILE).is_file()
    assert (out / "compare.html").is_file()
    assert summary.read_text().startswith("earlier step\n## ")  # appended, as GitHub expects


def test_the_markdown_summary_holds_the_verdict_the_table_and_the_rule(baseline: Path, tmp_path: Path) -> None:
    result = check(baseline, _current(tmp_path, SLOWER_MODEL), out_dir=tmp_path / "out")
    text = markdown_summary(result)
    assert text.startswith("## :x: servingbench check: REGRESSION")
    assert "(exit 1)" in text
    assert "| config | model | scenario | metric | baseline | current | ratio [95% CI] |" in text
    assert "| fastapi-uvicorn | fast | single-c8 | CPU per request |" in text
    assert "**regression** |" in text
    assert "Holm" in text and "Mann-Whitney" in text
    assert result.summary_path is not None and result.summary_path.read_text() == text


def test_the_markdown_summary_of_an_error_gives_the_reason(tmp_path: Path) -> None:
    result = check(tmp_path / "nowhere", tmp_path / "nothing", out_dir=tmp_path / "out")
    text = (tmp_path / "out" / SUMMARY_FILE).read_text()
    assert result.exit_code == EXIT_UNUSABLE
    assert text.startswith("## :warning: servingbench check: no verdict")
    assert "baseline not found" in text
    assert "| config |" not in text
    assert not (tmp_path / "out" / "compare.html").exists()
