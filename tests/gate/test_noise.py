"""Run-to-run noise: calibration's values per figure, its prediction interval, the noise file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from servingbench.gate import NOISE_FILE, NoiseError, load_noise, measure_noise
from servingbench.gate.calibrate import build_baseline, wide_figures
from servingbench.gate.figures import FigureKey
from servingbench.gate.noise import SPEED_EXTRAPOLATION, SpeedFit, prediction_half_width, run_speed
from servingbench.harness.speed import SPEED_PROBE
from servingbench.reports.bundle import load_bundle

from .canned import CONFIG, MODEL, OTHER_MACHINE, SCENARIO, Shape, calibration_bundles, single_bundle

QUIET = Shape(drift_sd=0.02, noise_sd=0.01)
CPU = FigureKey(MODEL, SCENARIO, "cpu_us_per_request")


def test_each_run_gives_its_median_and_the_interval_is_t_with_sqrt_one_plus_one_over_n(tmp_path: Path) -> None:
    paths = calibration_bundles(tmp_path, QUIET)
    bundles = [load_bundle(path) for path in paths]
    noise = measure_noise(bundles)
    entry = noise.entries[(CONFIG, CPU)]
    medians = [
        float(np.median([run.server_cpu_us_per_request for run in bundle.runs if run.server_cpu_us_per_request]))
        for bundle in bundles
    ]
    assert entry.run_values == pytest.approx(medians)
    logs = np.log(medians)
    assert entry.log_sd == pytest.approx(float(np.std(logs, ddof=1)))
    expected = scipy_stats.t.ppf(0.975, 4) * np.std(logs, ddof=1) * math.sqrt(1 + 1 / 5)
    assert entry.half_width(0.95) == pytest.approx(expected)
    assert prediction_half_width(0.1, 5, 0.95) == pytest.approx(scipy_stats.t.ppf(0.975, 4) * 0.1 * math.sqrt(1.2))
    # The mean of 5 new runs against 5 calibration runs: sqrt(1/5 + 1/5) instead of sqrt(1 + 1/5).
    five = prediction_half_width(0.1, 5, 0.95, runs=5)
    assert five == pytest.approx(scipy_stats.t.ppf(0.975, 4) * 0.1 * math.sqrt(0.4))
    with pytest.raises(ValueError, match="at least 1 new run"):
        prediction_half_width(0.1, 5, 0.95, runs=0)


def test_calibration_needs_five_runs_of_one_plan_on_one_machine(tmp_path: Path) -> None:
    paths = calibration_bundles(tmp_path, QUIET)
    with pytest.raises(NoiseError, match="at least 5 runs"):
        measure_noise([load_bundle(path) for path in paths[:4]])
    other = single_bundle(tmp_path / "other", QUIET.with_(machine_id=OTHER_MACHINE))
    with pytest.raises(NoiseError, match="ran on fedcba9876543210"):
        measure_noise([load_bundle(path) for path in [*paths[:4], other]])
    longer = single_bundle(tmp_path / "longer", QUIET.with_(repetitions=30))
    with pytest.raises(NoiseError, match="another plan"):
        measure_noise([load_bundle(path) for path in [*paths[:4], longer]])
    cut = single_bundle(tmp_path / "cut", QUIET.with_(complete=False))
    with pytest.raises(NoiseError, match="incomplete"):
        measure_noise([load_bundle(path) for path in [*paths[:4], cut]])


def test_the_noise_file_round_trips(tmp_path: Path) -> None:
    noise = build_baseline(calibration_bundles(tmp_path / "runs", QUIET), tmp_path / "baseline")
    assert noise.path == tmp_path / "baseline" / NOISE_FILE
    loaded = load_noise(tmp_path / "baseline" / NOISE_FILE)
    assert loaded.runs == 5 and loaded.machine == noise.machine and loaded.plan == noise.plan
    assert loaded.entries[(CONFIG, CPU)].run_values == pytest.approx(noise.entries[(CONFIG, CPU)].run_values)
    assert loaded.software["python"] == "3.11.7"
    doc = json.loads((tmp_path / "baseline" / NOISE_FILE).read_text())
    figure = next(item for item in doc["figures"] if item["metric"] == "cpu_us_per_request")
    low, high = figure["prediction_interval"]
    assert low < math.exp(figure["log_mean"]) < high


def test_unusable_noise_files_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(NoiseError, match="no noise file"):
        load_noise(tmp_path / NOISE_FILE)
    path = tmp_path / NOISE_FILE
    path.write_text(json.dumps({"format": "servingbench-noise", "version": 1, "entries": []}))
    with pytest.raises(NoiseError, match="version 1, this servingbench reads version 2"):
        load_noise(path)
    path.write_text("{not json")
    with pytest.raises(NoiseError, match="unusable noise file"):
        load_noise(path)


def test_wide_intervals_are_named(tmp_path: Path) -> None:
    paths = calibration_bundles(tmp_path, QUIET, factors=(1.0, 1.5, 0.7, 1.3, 0.8))
    noise = measure_noise([load_bundle(path) for path in paths])
    assert any("server CPU per request" in item for item in wide_figures(noise))
    quiet = measure_noise([load_bundle(path) for path in calibration_bundles(tmp_path / "quiet", QUIET)])
    assert wide_figures(quiet) == []


def test_the_speed_fit_is_least_squares_with_the_regression_prediction_interval() -> None:
    x = [0.0, 0.1, -0.05, 0.2, 0.05, -0.1]
    noise = [0.01, -0.02, 0.015, 0.0, -0.01, 0.005]
    y = [6.5 + 0.4 * xi + ei for xi, ei in zip(x, noise, strict=True)]
    fit = SpeedFit.of(x, y)
    assert fit is not None
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope) and fit.expected(0.3) == pytest.approx(intercept + slope * 0.3)
    residuals = np.asarray(y) - (intercept + slope * np.asarray(x))
    s = math.sqrt(float(np.sum(residuals**2)) / 4)
    assert fit.resid_sd == pytest.approx(s)
    sxx = float(np.sum((np.asarray(x) - np.mean(x)) ** 2))
    expected = scipy_stats.t.ppf(0.975, 4) * s * math.sqrt(1 / 3 + 1 / 6 + (0.15 - np.mean(x)) ** 2 / sxx)
    assert fit.half_width(0.95, 0.15, runs=3) == pytest.approx(expected)
    assert fit.half_width(0.95, 0.2) > fit.half_width(0.95, float(np.mean(x)))  # farther from the mean: wider
    slack = SPEED_EXTRAPOLATION * 0.3  # that share of the range (-0.1 to 0.2) past either end
    assert fit.covers(0.2 + slack) and fit.covers(-0.1 - slack)
    assert not fit.covers(0.2 + slack + 0.001) and not fit.covers(-0.1 - slack - 0.001)
    assert 0.9 < fit.explained < 1.0
    assert SpeedFit.of(x[:5], y[:5]) is None  # fewer than MIN_SPEED_RUNS
    assert SpeedFit.of([0.1] * 6, y) is None  # a probe that never moved explains nothing


def test_the_speeds_round_trip_and_a_file_without_them_still_reads(tmp_path: Path) -> None:
    probed = QUIET.with_(probe=True)
    speeds = (1.0, 1.1, 0.9, 1.2, 1.05, 0.95)
    paths = calibration_bundles(tmp_path / "runs", probed, (1.0,) * 6, speeds)
    noise = build_baseline(paths, tmp_path / "baseline")
    entry = noise.entries[(CONFIG, CPU)]
    assert len(entry.speeds) == 6 and entry.speed_fit is not None
    assert [run_speed(load_bundle(path), CONFIG) for path in paths] == pytest.approx(entry.speeds)
    loaded = load_noise(tmp_path / "baseline" / NOISE_FILE)
    assert loaded.entries[(CONFIG, CPU)].speeds == pytest.approx(entry.speeds)
    doc = json.loads((tmp_path / "baseline" / NOISE_FILE).read_text())
    figure = next(item for item in doc["figures"] if item["metric"] == "cpu_us_per_request")
    assert figure["speed_fit"]["slope"] == pytest.approx(0.5, abs=0.15)
    figure["speeds"] = figure["speeds"][:3]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    with pytest.raises(NoiseError, match="one positive probe per run value"):
        load_noise(tmp_path / "broken.json")
    for item in doc["figures"]:
        item.pop("speeds", None)
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert all(item.speed_fit is None for item in load_noise(tmp_path / "old.json").entries.values())


def test_a_calibration_where_one_run_lacks_the_probe_keeps_no_speeds(tmp_path: Path) -> None:
    probed = calibration_bundles(tmp_path / "probed", QUIET.with_(probe=True), (1.0,) * 5)
    old = single_bundle(tmp_path / "old", QUIET.with_(seed=300))
    noise = measure_noise([load_bundle(path) for path in [*probed, old]])
    assert all(entry.speeds == () and entry.speed_fit is None for entry in noise.entries.values())


def test_speeds_of_another_probe_kind_are_never_fitted(tmp_path: Path) -> None:
    """The probe's kind travels with the speeds: a noise file made with another probe (the first one wrote no kind)
    and a bundle of another probe keep their figures but lose the speed fit, so two kinds are never mixed."""
    paths = calibration_bundles(
        tmp_path / "runs", QUIET.with_(probe=True), (1.0,) * 6, (1.0, 1.1, 0.9, 1.2, 1.05, 0.95)
    )
    build_baseline(paths, tmp_path / "baseline")
    doc = json.loads((tmp_path / "baseline" / NOISE_FILE).read_text())
    assert doc["speed_probe"] == SPEED_PROBE
    assert load_noise(tmp_path / "baseline" / NOISE_FILE).stale_probe is None
    for kind, stale in (("load-9it-9s", "load-9it-9s"), (None, "before/after the load, 20,000 iterations")):
        if kind is None:
            doc.pop("speed_probe")
        else:
            doc["speed_probe"] = kind
        (tmp_path / "other.json").write_text(json.dumps(doc))
        other = load_noise(tmp_path / "other.json")
        assert other.stale_probe == stale and other.speed_fit is None
        assert (
            other.entries[(CONFIG, CPU)].run_values
            == load_noise(tmp_path / "baseline" / NOISE_FILE).entries[(CONFIG, CPU)].run_values
        )
    results = paths[0] / "results.json"
    bundle = json.loads(results.read_text())
    assert run_speed(load_bundle(results.parent), CONFIG) is not None
    bundle["environment"]["speed_probe"] = "load-9it-9s"
    results.write_text(json.dumps(bundle))
    assert run_speed(load_bundle(results.parent), CONFIG) is None


def test_a_calibration_too_short_for_the_fit_still_names_its_probe(tmp_path: Path) -> None:
    """Five probed runs keep their speeds but are one short of the fit; the file names the probe's kind, so reading
    it back does not take its speeds for an older probe's."""
    paths = calibration_bundles(tmp_path / "runs", QUIET.with_(probe=True), (1.0,) * 5, (1.0, 1.1, 0.9, 1.2, 1.05))
    noise = build_baseline(paths, tmp_path / "baseline")
    assert noise.speed_fit is None and all(len(entry.speeds) == 5 for entry in noise.entries.values())
    loaded = load_noise(tmp_path / "baseline" / NOISE_FILE)
    assert loaded.stale_probe is None and all(len(entry.speeds) == 5 for entry in loaded.entries.values())
