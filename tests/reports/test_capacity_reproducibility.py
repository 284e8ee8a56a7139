"""`scripts/capacity_reproducibility.py`: the issue's reproducibility check read from bundles with the report's own
code; known answers on synthetic estimates and on one bundle seen in two machine phases."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scripts.capacity_reproducibility import (
    _effects_lines,
    _f_p,
    _own_noise,
    _run_noise,
    agreement,
    all_overlap,
    main,
    order,
    report,
    run_effects,
    worst_deviation,
)
from servingbench.reports import speed
from servingbench.reports.bundle import load_bundle
from servingbench.reports.capacity import CapacityView, capacity_views
from servingbench.reports.speed import SpeedRule, reference_probe
from servingbench.reports.stats import Estimate
from tests.reports.test_capacity_speed import _phase_bundle


def _estimate(value: float, low: float | None, high: float | None, level: float | None = 0.95) -> Estimate:
    return Estimate(value, low, high, 5, None, False, level=level)


def test_the_worst_deviation_is_from_the_median_of_the_runs() -> None:
    assert worst_deviation([90.0, 100.0, 115.0]) == pytest.approx(0.15)
    assert worst_deviation([100.0, 100.0]) == 0.0
    assert worst_deviation([100.0, None, 120.0]) is None  # a run without a value: no figure, not a small one


def test_intervals_overlap_only_when_one_rate_lies_in_all_of_them() -> None:
    assert all_overlap([_estimate(100, 90, 110), _estimate(105, 95, 120), _estimate(90, 80, 94)]) is False
    assert all_overlap([_estimate(100, 90, 110), _estimate(105, 95, 120), _estimate(98, 80, 100)]) is True
    assert all_overlap([_estimate(100, None, 110), _estimate(105, 95, None)]) is True  # open ends reach
    assert all_overlap([_estimate(100, 90, 110), _estimate(100, None, None, level=None)]) is None  # no interval


@pytest.fixture(scope="module")
def phases(curve_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reproducibility")
    return _phase_bundle(curve_bundle_dir, root / "fast", 0.75), _phase_bundle(curve_bundle_dir, root / "slow", 1.25)


def test_one_run_read_twice_agrees_exactly(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[0]))
    rows = [row for row in agreement([view, view]) if row.deviation is not None]
    assert rows and all(row.deviation == 0.0 and row.measured_deviation == 0.0 for row in rows)
    assert all(row.overlap for row in rows)
    ranked = order(view)
    values = [figure.median for config in ranked if (figure := view.at_speed(config) or view.estimate(config))]
    assert len(values) == len(ranked) >= 2 and values == sorted(values, reverse=True)


def test_two_phases_differ_as_measured_and_agree_at_a_shared_reference(phases: tuple[Path, Path]) -> None:
    """The phase bundles scale every capacity by the probe's speed: as measured two runs 1.25 / 0.75 apart deviate
    from their median by about a quarter; at one reference only what the fit leaves of the phase remains."""
    views = [capacity_views(load_bundle(path), SpeedRule(500.0))[0] for path in phases]
    exponent = views[0].speed.exponent if views[0].speed is not None else None
    assert exponent is not None and views[0].adjusted
    ratio = (0.75 / 1.25) ** (exponent - 1.0)  # at-reference fast / slow, as test_capacity_speed shows
    compared = 0
    for row in agreement(views):
        if row.deviation is None or any(figure is None or not figure.median_known for figure in row.figures):
            continue
        compared += 1
        assert row.deviation == pytest.approx(abs(ratio - 1.0) / (ratio + 1.0), rel=1e-6)  # two runs: median = mean
        assert row.measured_deviation == pytest.approx(0.25, abs=0.06)
    assert compared >= 2
    lines = report(list(phases), None)
    assert any(line.startswith("== ") and "capacity at the reference speed" in line for line in lines)
    assert any("same order in every run: True" in line for line in lines)
    # Each run at its own fast speed: these two never left their phase, so their figures differ as measured do.
    own = [row.deviation for row in agreement([capacity_views(load_bundle(path))[0] for path in phases])]
    assert all(deviation == pytest.approx(0.25, rel=1e-6) for deviation in own if deviation is not None)
    # --shared-reference: both at the median of their own references, where they agree as at any one reference.
    references = [reference_probe(load_bundle(path).runs) for path in phases]
    assert None not in references
    shared = report(list(phases), None, shared_reference=True)
    assert shared[0].startswith(f"shared reference {(references[0] + references[1]) / 2:.0f} us")  # type: ignore[operator]
    worst = f"worst deviation {abs(ratio - 1.0) / (ratio + 1.0):.1%}"
    assert any(line.strip().startswith(worst) for line in shared)


def test_the_command_needs_two_bundles_and_names_a_missing_model(
    phases: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([str(phases[0])])
    assert stopped.value.code == 2
    assert main([str(phases[0]), str(phases[1]), "--model", "no-such-model"]) == 0
    assert "no capacity view is in every bundle for model no-such-model" in capsys.readouterr().out


def test_another_reference_scales_every_figure_by_the_exponent(phases: tuple[Path, Path]) -> None:
    (own,) = capacity_views(load_bundle(phases[0]))
    (moved,) = capacity_views(load_bundle(phases[0]), SpeedRule(250.0))
    assert own.speed is not None and moved.speed is not None and moved.speed.reference_us == 250.0
    assert moved.speed.exponent == pytest.approx(own.speed.exponent)  # the fit does not depend on the reference
    scale = (own.speed.reference_us / 250.0) ** own.speed.exponent
    compared = 0
    for config in own.configs:
        before, after = own.at_speed(config), moved.at_speed(config)
        if before is not None and after is not None and before.median_known:
            compared += 1
            assert after.median == pytest.approx(before.median * scale, rel=1e-9)
    assert compared >= 2


def _noisy_steps(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose step runs read the probe with noise: each step's reading times 0.7, 1.0 or 1.3 in
    turn, so every curve's steps disagree about its speed."""
    shutil.copytree(source, target)
    path = target / "results.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    for index, run in enumerate(document["runs"]):
        if run.get("speed_probe_us"):
            run["speed_probe_us"] *= (0.7, 1.0, 1.3)[index % 3]
    path.write_text(json.dumps(document), encoding="utf-8")
    return target


def test_the_noise_correction_is_off_by_default_and_a_what_if_passes_it_on(
    phases: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the correction the exponent is the clipped fit; with it (the rule before 2026-12-04), the fit over
    the reliability of the curves' probes, below 1 where a curve's steps read its speed with noise."""
    noisy = [_noisy_steps(path, tmp_path / path.name) for path in phases]
    (plain,) = capacity_views(load_bundle(noisy[1]))
    (corrected,) = capacity_views(load_bundle(noisy[1]), SpeedRule(noise_correction=True))
    assert plain.speed is not None and plain.speed.slope is not None and corrected.speed is not None
    assert plain.speed.reliability == 1.0
    assert plain.speed.exponent == pytest.approx(min(max(-plain.speed.slope, 0.0), speed.MAX_EXPONENT))
    assert corrected.speed.slope == plain.speed.slope and corrected.speed.reliability < 0.99
    expected = min(max(-plain.speed.slope / corrected.speed.reliability, 0.0), speed.MAX_EXPONENT)
    assert corrected.speed.exponent == pytest.approx(expected)
    assert main([*map(str, noisy), "--reference-us", "300", "--noise-correction"]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "reference 300 us" in line]
    assert len(shown) == 2 and f"reliability {corrected.speed.reliability:.2f}" in shown[1]  # run 2 is noisy[1]
    assert not any("reliability 1.00" in line for line in shown)
    assert main([*map(str, noisy), "--reference-us", "300"]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "reference 300 us" in line]
    assert shown and all("reliability 1.00" in line for line in shown)


def test_the_command_refuses_a_reference_that_is_no_speed(phases: tuple[Path, Path]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([str(phases[0]), str(phases[1]), "--reference-us", "0"])
    assert stopped.value.code == 2
    with pytest.raises(SystemExit) as stopped:
        main([str(phases[0]), str(phases[1]), "--reference-us", "300", "--shared-reference"])
    assert stopped.value.code == 2


def test_the_view_keeps_the_curves_its_figure_at_the_reference_speed_is_over(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[1]))
    kept = 0
    for config in view.configs:
        figure = view.at_speed(config)
        if figure is None or config not in view.reference_values:
            continue
        kept += 1
        values = [value for _, value in view.reference_values[config]]
        assert len(values) == figure.n
        assert math.exp(sum(math.log(value) for value in values) / len(values)) == pytest.approx(figure.median)
    assert kept >= 2


NOISE = (0.8, 1.1, 0.95, 1.2, 0.9)  # one config's curves at one speed, a pattern every run repeats in another order


def _runs_with(view: CapacityView, effects: list[float], shuffle: bool = True) -> list[CapacityView]:
    """``view`` as several runs: config i's curves are base_i x NOISE (rotated per run, so the repetitions differ)
    times exp(the run's effect)."""
    runs = []
    for index, effect in enumerate(effects):
        pattern = NOISE[index:] + NOISE[:index] if shuffle else NOISE
        values = {
            config: tuple(
                (repetition, (1000.0 + 100.0 * rank) * factor * math.exp(effect))
                for repetition, factor in enumerate(pattern, start=1)
            )
            for rank, config in enumerate(view.configs)
        }
        runs.append(replace(view, reference_values=values, reference_exponent_se={}))
    return runs


def test_a_difference_shared_by_every_config_of_a_run_is_read_as_the_runs_own(phases: tuple[Path, Path]) -> None:
    """Every run has the same curves in another order, times its own factor: the shared part is that factor
    (centred) and nothing is left to each config. The configs of a repetition move together here, so a run's mean is
    as noisy as one config's (about 7 %): a factor of 10 % is within that noise, one of 30 % far beyond it."""
    (view,) = capacity_views(load_bundle(phases[0]))
    assert len(view.configs) >= 2
    small = run_effects(_runs_with(view, [0.1, 0.0, -0.1]))
    assert small is not None and small.configs == view.configs
    assert small.effects == pytest.approx((0.1, 0.0, -0.1))
    assert small.effect_sd == pytest.approx(0.1)
    assert small.own_sd == pytest.approx(0.0, abs=1e-12)
    assert small.effect_noise_sd == pytest.approx(small.own_noise_sd)  # one cluster per repetition
    assert small.effect_p > 0.05
    large = run_effects(_runs_with(view, [0.3, 0.0, -0.3]))
    assert large is not None and large.effect_p < 1e-3
    assert small.effect_df == (2, 3 * (len(NOISE) - 1))  # runs - 1; each run's repetitions less one
    # The same curves with no factor: nothing shared, nothing own, whatever the noise.
    calm = run_effects(_runs_with(view, [0.0, 0.0, 0.0]))
    assert calm is not None and calm.effect_sd == pytest.approx(0.0, abs=1e-12) and calm.effect_p == pytest.approx(1.0)
    assert calm.own_noise_sd > 0.05 and calm.effect_noise_sd > 0.0


def test_a_config_that_moves_alone_is_its_own_difference(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[0]))
    runs = _runs_with(view, [0.0, 0.0, 0.0])
    first = view.configs[0]
    moved = {**runs[1].reference_values}
    moved[first] = tuple((repetition, value * 2.0) for repetition, value in moved[first])
    runs[1] = replace(runs[1], reference_values=moved)
    found = run_effects(runs)
    assert found is not None
    share = math.log(2.0) / len(view.configs)  # what one config's move adds to its run's mean
    assert found.effects[1] == pytest.approx(share * 2 / 3)
    assert found.own_sd > found.own_noise_sd and found.own_p < 0.01


def test_the_run_effects_noise_counts_a_repetitions_configs_as_one_cluster() -> None:
    """Two configs whose curves move together repetition by repetition: their mean is as noisy as one of them, twice
    what an independent reading of the two would give; moving against each other, they nearly cancel."""
    together = {"a": [(1, 100.0), (2, 120.0), (3, 90.0)], "b": [(1, 200.0), (2, 240.0), (3, 180.0)]}
    one = _own_noise(together["a"])
    variance, df = _run_noise(together, ["a", "b"])
    assert variance == pytest.approx(one) and df == 2
    independent = (_own_noise(together["a"]) + _own_noise(together["b"])) / 4
    assert _run_noise(together, ["a", "b"])[0] == pytest.approx(2 * independent)
    opposite = {"a": together["a"], "b": [(1, 240.0), (2, 200.0), (3, 216.0)]}
    assert _run_noise(opposite, ["a", "b"])[0] < _run_noise(together, ["a", "b"])[0] / 4


def test_a_config_with_fewer_repetitions_keeps_its_own_small_sample_correction() -> None:
    """Each config's noise is unbiased for its own count: alone, the variance of its mean; two configs that share no
    repetition, a quarter of the sum of theirs (a count over all repetitions would understate the one with two)."""
    five = [(1, 100.0), (2, 120.0), (3, 90.0), (4, 110.0), (5, 95.0)]
    two = [(6, 200.0), (7, 260.0)]
    assert _run_noise({"a": two}, ["a"])[0] == pytest.approx(_own_noise(two))
    variance, df = _run_noise({"a": five, "b": two}, ["a", "b"])
    assert variance == pytest.approx((_own_noise(five) + _own_noise(two)) / 4) and df == 6


def test_the_fitted_exponents_error_is_part_of_a_runs_noise(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[0]))
    runs = _runs_with(view, [0.1, 0.0, -0.1])
    plain = run_effects(runs)
    widened = run_effects([replace(run, reference_exponent_se=dict.fromkeys(run.configs, 0.05)) for run in runs])
    assert plain is not None and widened is not None
    assert widened.effect_noise_sd**2 == pytest.approx(plain.effect_noise_sd**2 + 0.05**2)
    assert widened.own_noise_sd == plain.own_noise_sd and widened.effect_p > plain.effect_p


def test_under_no_run_effect_the_test_calls_one_about_as_often_as_its_level(phases: tuple[Path, Path]) -> None:
    """Seeded simulations of three runs of nine repetitions, each repetition a phase every config shares: with no run
    effect about 5 % are called beyond the noise; with a run effect three times the noise, most are."""
    (view,) = capacity_views(load_bundle(phases[0]))
    rng = np.random.default_rng(20261205)

    def called(run_sd: float, sets: int = 300) -> float:
        count = 0
        for _ in range(sets):
            runs = []
            for _ in range(3):
                effect = rng.normal(0.0, run_sd)
                phases_ = rng.normal(0.0, 0.05, 9)
                values = {
                    config: tuple(
                        (rep, 1000.0 * math.exp(effect + phases_[rep] + rng.normal(0.0, 0.13))) for rep in range(9)
                    )
                    for config in view.configs
                }
                runs.append(replace(view, reference_values=values, reference_exponent_se={}))
            found = run_effects(runs)
            assert found is not None
            count += found.effect_p < 0.05
        return count / sets

    assert 0.02 <= called(0.0) <= 0.09
    assert called(0.15) > 0.5


def test_configs_with_a_single_curve_in_some_run_are_left_out_and_named(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[0]))
    runs = _runs_with(view, [0.0, 0.0, 0.0])
    first = view.configs[0]
    single = {**runs[2].reference_values, first: runs[2].reference_values[first][:1]}
    runs[2] = replace(runs[2], reference_values=single)
    found = run_effects(runs)
    assert found is not None and first not in found.configs and found.dropped == (first,)
    assert f"left out, a censored or single curve in some run: {first}" in _effects_lines(found)[0]


def test_no_run_effects_without_two_configs_in_every_run(phases: tuple[Path, Path]) -> None:
    (view,) = capacity_views(load_bundle(phases[0]))
    runs = _runs_with(view, [0.0, 0.1])
    keep = view.configs[0]
    runs[1] = replace(runs[1], reference_values={keep: runs[1].reference_values[keep]})
    assert run_effects(runs) is None
    assert run_effects(runs[:1]) is None


def test_the_report_says_where_the_runs_differ(phases: tuple[Path, Path]) -> None:
    lines = report(list(phases), None)
    start = next(index for index, line in enumerate(lines) if "where the runs differ" in line)
    assert lines[start + 1].strip().startswith("shared by every config of a run:")
    assert lines[start + 2].strip().startswith("each config's own:")
    assert "p = " in lines[start + 1] and "p = " in lines[start + 2]


def test_the_test_against_the_noise_has_an_answer_without_noise() -> None:
    assert _f_p(0.0, 0.0, (2, 10)) == 1.0  # nothing moved and nothing could: no difference
    assert _f_p(1e-20, 1e-20, (2, 10)) == 1.0  # rounding is not a difference
    assert _f_p(0.01, 0.0, (2, 10)) == 0.0  # something moved where nothing could
    assert _f_p(0.02, 0.01, (2, 10**7)) == pytest.approx(math.exp(-2.0), rel=1e-4)  # F 2 on (2, inf): chi2 4 on 2
    assert math.isnan(_f_p(0.02, 0.01, (2, 0)))  # no degrees of freedom for the noise: no test
