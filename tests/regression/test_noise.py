"""The pieces under the gate: Holm, the one-sided test, A/A noise, pooling calibration runs, the CI plan."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from servingbench.harness.calibrate import (
    CI_PLAN,
    CalibrationError,
    build_baseline,
    calibrate,
    pool_documents,
    run_calibrate,
    unsteady,
)
from servingbench.harness.plan import load_plan
from servingbench.reports import load_bundle
from servingbench.reports.regression import (
    ABSOLUTE,
    MIN_REPETITIONS,
    NOISE_FILE,
    REFERENCE_MODEL,
    RELATIVE,
    GateRow,
    SeriesKey,
    holm,
    load_noise,
    measure_noise,
    one_sided_p,
    series,
)
from tests.reports.builders import build_bundle

from .fixtures import A_A_DRIFT, SPEC, edit_results, with_overhead

CPU_KEY = SeriesKey("fastapi-uvicorn", "fast", "single-c8", "cpu_us_per_request")


def test_holm_matches_the_textbook_example() -> None:
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005 x4, 0.01 x3, 0.03 x2, 0.04 x1, made monotone.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_one_sided_p_points_one_way() -> None:
    low, high = [1.0, 1.1, 1.2, 1.3, 1.4], [2.0, 2.1, 2.2, 2.3, 2.4]
    assert one_sided_p(low, high, current_greater=True) == pytest.approx(1 / 252)  # exact: 1 / C(10, 5)
    assert one_sided_p(low, high, current_greater=False) > 0.99
    assert one_sided_p([3.0] * 5, [3.0] * 5, current_greater=True) == 1.0


def test_one_sided_p_on_interleaved_samples_is_not_significant() -> None:
    assert one_sided_p([1.0, 3.0, 5.0, 7.0], [2.0, 4.0, 6.0, 8.0], current_greater=True) > 0.2


def test_measure_noise_keeps_the_spread_between_runs(tmp_path: Path) -> None:
    first = load_bundle(build_bundle(tmp_path / "a", SPEC))
    second = load_bundle(build_bundle(tmp_path / "b", with_overhead(A_A_DRIFT)))
    noise = measure_noise([first, second])
    entry = noise.get(ABSOLUTE, CPU_KEY)
    assert entry is not None
    assert len(entry.run_medians) == 2
    assert 0.0 < entry.spread < 0.01  # 1 % more framework overhead is under 1 % of the whole request
    assert noise.get(RELATIVE, CPU_KEY) is not None
    assert noise.get(RELATIVE, CPU_KEY._replace(model=REFERENCE_MODEL)) is None


def test_measure_noise_needs_two_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        measure_noise([load_bundle(build_bundle(tmp_path / "a", SPEC))])


def test_relative_series_divide_by_the_reference_of_the_same_repetition(tmp_path: Path) -> None:
    bundle = load_bundle(build_bundle(tmp_path / "a", SPEC))
    absolute, relative = series(bundle, ABSOLUTE), series(bundle, RELATIVE)
    reference = absolute[CPU_KEY._replace(model=REFERENCE_MODEL)]
    assert relative[CPU_KEY] == pytest.approx([a / r for a, r in zip(absolute[CPU_KEY], reference, strict=True)])
    assert len(relative[CPU_KEY]) == SPEC.repetitions >= MIN_REPETITIONS


def test_build_baseline_writes_a_slim_pooled_bundle_and_its_noise(tmp_path: Path) -> None:
    dirs = [build_bundle(tmp_path / "a", SPEC), build_bundle(tmp_path / "b", with_overhead(A_A_DRIFT))]
    calibration = build_baseline(dirs, tmp_path / "baseline")
    out = calibration.baseline_dir
    assert sorted(path.name for path in out.iterdir()) == ["noise.json", "results.json", "summary.csv"]
    pooled = load_bundle(out)
    assert len(pooled.runs) == 2 * len(load_bundle(dirs[0]).runs)
    assert len({run.id for run in pooled.runs}) == len(pooled.runs)
    assert all(not run.histograms and not run.artifacts for run in pooled.runs)
    assert len(series(pooled, ABSOLUTE)[CPU_KEY]) == 2 * SPEC.repetitions
    assert len(series(pooled, RELATIVE)[CPU_KEY]) == 2 * SPEC.repetitions  # pairs survive the renumbering
    loaded = load_noise(out)
    assert loaded is not None and loaded.runs == 2
    assert loaded.get(ABSOLUTE, CPU_KEY) == calibration.noise.get(ABSOLUTE, CPU_KEY)
    assert json.loads((out / NOISE_FILE).read_text())["format"] == "servingbench-noise"


def test_pooling_renumbers_repetitions_after_the_previous_run() -> None:
    docs = [
        {
            "created": "t1",
            "complete": True,
            "runs": [{"id": "r0001", "repetition": 0}, {"id": "r0002", "repetition": 1}],
        },
        {"created": "t2", "complete": True, "runs": [{"id": "r0001", "repetition": 0}]},
    ]
    pooled = pool_documents(docs)
    assert [(run["id"], run["repetition"]) for run in pooled["runs"]] == [
        ("a1-r0001", 0),
        ("a1-r0002", 1),
        ("a2-r0001", 2),
    ]
    assert pooled["calibration"] == {"runs": 2, "created": ["t1", "t2"]}


def test_calibration_refuses_incomplete_runs(tmp_path: Path) -> None:
    dirs = [build_bundle(tmp_path / "a", SPEC), build_bundle(tmp_path / "b", SPEC.with_(complete=False))]
    with pytest.raises(CalibrationError, match="incomplete"):
        build_baseline(dirs, tmp_path / "baseline")


def test_calibration_refuses_runs_from_different_machines(tmp_path: Path) -> None:
    other = edit_results(
        build_bundle(tmp_path / "b", SPEC), lambda doc: doc["environment"].update(fingerprint="e" * 64)
    )
    with pytest.raises(CalibrationError, match="different environments"):
        build_baseline([build_bundle(tmp_path / "a", SPEC), other], tmp_path / "baseline")


def test_calibrate_needs_two_runs_before_running_anything(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="at least 2"):
        calibrate(runs=1, out_root=tmp_path / "results", baseline_dir=tmp_path / "baseline")
    assert not (tmp_path / "results").exists()


def test_run_calibrate_from_existing_bundles(tmp_path: Path) -> None:
    dirs = [build_bundle(tmp_path / "a", SPEC), build_bundle(tmp_path / "b", SPEC)]
    stdout = io.StringIO()
    code = run_calibrate(
        plan_path=None,
        runs=2,
        out_root=tmp_path / "unused",
        baseline_dir=tmp_path / "baseline",
        from_bundles=dirs,
        console=Console(file=stdout, width=200),
    )
    assert code == 0
    assert "A/A spread" in stdout.getvalue()
    assert (tmp_path / "baseline" / NOISE_FILE).is_file()


def test_run_calibrate_reports_an_error_in_one_line(tmp_path: Path) -> None:
    stderr = io.StringIO()
    code = run_calibrate(
        plan_path=None,
        runs=2,
        out_root=tmp_path,
        baseline_dir=tmp_path / "baseline",
        from_bundles=[tmp_path / "missing"],
        stderr=stderr,
    )
    assert code == 2
    assert len(stderr.getvalue().splitlines()) == 1


def test_the_ci_plan_is_short_repeated_and_has_the_reference() -> None:
    plan = load_plan(CI_PLAN)
    assert plan.repetitions >= 2 * MIN_REPETITIONS
    names = {model.name for model in plan.models}
    assert REFERENCE_MODEL in names and len(names) >= 2
    reference = next(model for model in plan.models if model.name == REFERENCE_MODEL)
    for model in plan.models:
        assert set(model.scenarios) <= set(reference.scenarios)  # every figure has its yardstick
    for preset in ("quick", "default", "rigorous"):
        assert load_plan(CI_PLAN, preset).repetitions == plan.repetitions


def _gate_row(model: str, ratio: float, threshold: float, *, gated: bool) -> GateRow:
    return GateRow(
        key=SeriesKey("fastapi-uvicorn", model, "single-c8", "rps"),
        basis=ABSOLUTE,
        baseline_median=100.0,
        current_median=100.0 * ratio,
        ratio=ratio,
        ci_low=None,
        ci_high=None,
        baseline_n=6,
        current_n=6,
        threshold=threshold,
        threshold_source="minimum effect",
        gated=gated,
    )


def test_gated_thresholds_rise_to_the_yardstick_drift() -> None:
    from servingbench.reports.regression import _widen_by_drift

    rows = [_gate_row("model", 0.88, 0.10, gated=True), _gate_row(REFERENCE_MODEL, 1 / 1.19, 0.20, gated=False)]
    model, reference = _widen_by_drift(rows)
    assert model.threshold == pytest.approx(0.19)  # the yardstick's throughput fell to 1/1.19: +19 % cost
    assert model.threshold_source == "yardstick drift"
    assert reference == rows[1]
    faster = _widen_by_drift([rows[0], _gate_row(REFERENCE_MODEL, 1.05, 0.20, gated=False)])
    assert faster[0].threshold == 0.10  # a 5 % drift stays under the 10 % floor


def test_calibration_on_an_unsteady_machine_warns(tmp_path: Path) -> None:
    dirs = [build_bundle(tmp_path / "a", SPEC), build_bundle(tmp_path / "b", with_overhead(1.5))]
    stdout = io.StringIO()
    code = run_calibrate(
        plan_path=None,
        runs=2,
        out_root=tmp_path / "unused",
        baseline_dir=tmp_path / "baseline",
        from_bundles=dirs,
        console=Console(file=stdout, width=400),
    )
    assert code == 0
    assert "not steady during calibration" in stdout.getvalue()
    assert unsteady(build_baseline(dirs[:1] * 2, tmp_path / "steady").noise) == []
