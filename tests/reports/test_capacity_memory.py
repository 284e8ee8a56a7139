"""The capacity speed rule's second term, on the memory probe: fitted jointly with the first, each at the run's own
fast reading; both laws recovered and removed; left out (and said why) where the bundle has no readings of a known
kind, a fitted curve lacks one, the memory probe did not move, or it moved only with the first; its error carried
into the interval."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scripts.capacity_reproducibility import main, report
from servingbench.harness.speed import MEMORY_PROBE, SPEED_PROBE
from servingbench.reports.bundle import CapacityResult, CapacityStep, Run
from servingbench.reports.speed import (
    REFERENCE_QUANTILE,
    SpeedRule,
    adjusted,
    curve_probe,
    exponent_log_se,
    probe_readings,
    speed_adjustment,
)

LAW = {"fast": 1000.0, "slow": 600.0, "mid": 800.0}
PROBE_REF = 220.0
MEMORY_REF = 2000.0
MEMORY = SpeedRule(memory=True)
"""The what-if rule with the memory term (the report's rule has none)."""


def _curve(
    config: str, rep: int, capacity: float | None, probe: float, memory: float | None
) -> tuple[CapacityResult, list[Run]]:
    """One curve of three steps whose runs read about ``probe`` and ``memory`` (us)."""
    runs = [
        Run(
            f"{config}-{rep}-{index}", config, "m", "capacity-r1", rep, True, kind="open",
            speed_probe_us=probe * scale, memory_probe_us=None if memory is None else memory * scale,
        )
        for index, scale in enumerate((0.99, 1.0, 1.01))
    ]  # fmt: skip
    steps = tuple(CapacityStep(100.0 * (index + 1), 10.0, 0.0, True, run.id) for index, run in enumerate(runs))
    result = CapacityResult(config, "m", rep, 50.0, capacity, steps, method="curve", grid=(100.0, 200.0))
    return result, runs


def _curves(
    probe_exponent: float, memory_exponent: float, *, noise: float = 0.0, seed: int = 11, reps: int = 12
) -> tuple[dict[str, list[CapacityResult]], dict[str, Run]]:
    """Per config and repetition a curve whose probe and memory probe move independently (the machine's CPU phase
    and its cache contention), its capacity ``law * (probe/PROBE_REF)^-a * (memory/MEMORY_REF)^-b`` times noise."""
    rng = np.random.default_rng(seed)
    by_config: dict[str, list[CapacityResult]] = {}
    runs: dict[str, Run] = {}
    for rep in range(reps):
        phase = PROBE_REF * math.exp(abs(0.3 * rng.standard_normal()))
        contention = MEMORY_REF * math.exp(abs(0.15 * rng.standard_normal()))
        for config, law in LAW.items():
            probe = phase * math.exp(0.02 * rng.standard_normal())
            memory = contention * math.exp(0.02 * rng.standard_normal())
            value = law * (probe / PROBE_REF) ** -probe_exponent * (memory / MEMORY_REF) ** -memory_exponent
            result, mine = _curve(config, rep, value * math.exp(noise * rng.standard_normal()), probe, memory)
            by_config.setdefault(config, []).append(result)
            runs.update({run.id: run for run in mine})
    return by_config, runs


def test_both_laws_are_recovered_jointly() -> None:
    by_config, runs = _curves(1.0, 0.8, noise=0.01)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.applied and speed.memory is not None
    assert speed.slope == pytest.approx(-1.0, abs=0.05)
    assert speed.memory.slope == pytest.approx(-0.8, abs=0.1)
    assert speed.memory.exponent == pytest.approx(-speed.memory.slope)
    assert speed.memory.slope_se is not None and speed.memory.covariance is not None
    readings = probe_readings(runs.values(), memory=True)
    assert len(readings) == speed.memory.readings == 3 * 3 * 12
    assert speed.memory.reference_us == pytest.approx(float(np.quantile(readings, REFERENCE_QUANTILE)))
    assert "memory probe" in speed.text and f"{speed.memory.reference_us:.0f} us" in speed.text


def test_the_first_probe_alone_leaves_the_contention_in_and_biases_its_own_slope() -> None:
    """The two probes' phases are drawn independently here, yet each repetition's contention is felt by every
    config alike: the first probe alone cannot remove it, so its adjusted figures keep the spread."""
    by_config, runs = _curves(1.0, 1.2, noise=0.0)
    joint = speed_adjustment(by_config, runs, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    alone = speed_adjustment(by_config, runs, SPEED_PROBE, SpeedRule(memory=False), memory_kind=MEMORY_PROBE)
    assert joint is not None and alone is not None and alone.memory is None and alone.memory_reason is None

    def spread(speed: object) -> float:
        out = adjusted(by_config, runs, speed)  # type: ignore[arg-type]
        logs = [
            math.log(result.capacity_rps or 1.0) - math.log(LAW[config])
            for config, results in out.items()
            for result in results or []
        ]
        return float(np.std(logs))

    assert spread(joint) < 0.03 < 0.05 < spread(alone)


def test_adjusted_values_are_the_measured_ones_times_both_factors() -> None:
    by_config, runs = _curves(0.9, 0.7, noise=0.05)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.memory is not None
    term = speed.memory
    out = adjusted(by_config, runs, speed)
    for config, results in by_config.items():
        mine = out[config]
        assert mine is not None
        for theirs, result in zip(results, mine, strict=True):
            probe, memory = curve_probe(theirs, runs), curve_probe(theirs, runs, memory=True)
            assert probe is not None and memory is not None
            factor = (probe / speed.reference_us) ** speed.exponent * (memory / term.reference_us) ** term.exponent
            assert result.capacity_rps == pytest.approx((theirs.capacity_rps or 0.0) * factor)
            assert speed.factor(probe, memory) == pytest.approx(factor)
            assert speed.factor(probe) == pytest.approx((probe / speed.reference_us) ** speed.exponent)


def test_the_interval_carries_both_slopes_errors_and_their_covariance() -> None:
    by_config, runs = _curves(1.0, 0.8, noise=0.08)
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.memory is not None and speed.exponent_se is not None
    term = speed.memory
    assert term.slope_se is not None and term.covariance is not None
    for results in by_config.values():
        d0 = float(np.mean([math.log((curve_probe(r, runs) or 1.0) / speed.reference_us) for r in results]))
        d1 = float(np.mean([math.log((curve_probe(r, runs, memory=True) or 1.0) / term.reference_us) for r in results]))
        expected = d0 * d0 * speed.exponent_se**2 + d1 * d1 * term.slope_se**2 + 2 * d0 * d1 * term.covariance
        assert exponent_log_se(results, runs, speed) == pytest.approx(math.sqrt(expected))
        assert exponent_log_se(results, runs, speed) > 0.0


@pytest.mark.parametrize(
    ("memory_kind", "drop", "reason"),
    [
        (None, False, "no memory probe readings of a known kind"),
        ("load-2000it-0.1s", False, "no memory probe readings of a known kind"),
        (MEMORY_PROBE, True, "a fitted curve has no memory probe reading"),
    ],
)
def test_without_readings_the_first_probe_alone_is_fitted_and_the_text_says_why(
    memory_kind: str | None, drop: bool, reason: str
) -> None:
    by_config, runs = _curves(1.0, 0.8, noise=0.02)
    if drop:  # an older run in the bundle: one curve's steps have no memory reading
        first = by_config["fast"][0]
        for step in first.steps:
            run = runs[step.run or ""]
            runs[run.id] = Run(
                run.id, run.config, run.model, run.scenario, run.repetition, True, kind="open",
                speed_probe_us=run.speed_probe_us,
            )  # fmt: skip
    speed = speed_adjustment(by_config, runs, SPEED_PROBE, MEMORY, memory_kind=memory_kind)
    alone = speed_adjustment(by_config, runs, SPEED_PROBE, SpeedRule(memory=False))
    assert speed is not None and alone is not None and speed.applied
    assert speed.memory is None and reason in (speed.memory_reason or "") and reason in speed.text
    assert speed.slope == alone.slope and speed.exponent == alone.exponent


def test_memory_levels_that_differ_only_between_configs_are_a_probe_that_did_not_move() -> None:
    """Each server evicts the caches by its own amount: a memory probe flat within every config, at a different
    level per config, says nothing of how capacity follows it."""
    by_config, runs = _curves(1.0, 0.0, noise=0.02)
    levels = {"fast": 1500.0, "slow": 2600.0, "mid": 2000.0}
    flat = {
        key: Run(
            run.id, run.config, run.model, run.scenario, run.repetition, True, kind="open",
            speed_probe_us=run.speed_probe_us, memory_probe_us=levels[run.config],
        )
        for key, run in runs.items()
    }  # fmt: skip
    speed = speed_adjustment(by_config, flat, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.memory is None and speed.memory_reason == "the memory probe hardly moved"


def test_a_curve_without_a_memory_reading_in_a_config_the_fit_did_not_use_has_no_figure() -> None:
    by_config, runs = _curves(1.0, 0.8, noise=0.02)
    lone, mine = _curve("lone", 0, 700.0, 230.0, None)  # one curve: not in the fit, and no memory reading
    runs.update({run.id: run for run in mine})
    speed = speed_adjustment({**by_config, "lone": [lone]}, runs, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.memory is not None
    out = adjusted({**by_config, "lone": [lone]}, runs, speed)
    assert out["lone"] is None and all(out[config] is not None for config in by_config)


def test_the_noise_correction_is_refused_with_the_memory_term() -> None:
    with pytest.raises(ValueError, match="not with the memory term"):
        SpeedRule(noise_correction=True, memory=True)
    with pytest.raises(SystemExit):
        main(["--memory", "--noise-correction", "a", "b"])


def test_a_memory_probe_that_did_not_move_or_moved_only_with_the_first_is_left_out() -> None:
    by_config, runs = _curves(1.0, 0.0, noise=0.02)
    flat = {
        key: Run(
            run.id, run.config, run.model, run.scenario, run.repetition, True, kind="open",
            speed_probe_us=run.speed_probe_us, memory_probe_us=MEMORY_REF,
        )
        for key, run in runs.items()
    }  # fmt: skip
    speed = speed_adjustment(by_config, flat, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.memory is None and speed.memory_reason == "the memory probe hardly moved"
    locked = {
        key: Run(
            run.id, run.config, run.model, run.scenario, run.repetition, True, kind="open",
            speed_probe_us=run.speed_probe_us, memory_probe_us=10.0 * (run.speed_probe_us or 1.0),
        )
        for key, run in runs.items()
    }  # fmt: skip
    speed = speed_adjustment(by_config, locked, SPEED_PROBE, MEMORY, memory_kind=MEMORY_PROBE)
    assert speed is not None and speed.applied and speed.memory is None
    assert speed.memory_reason == "the two probes did not move independently"


def _contention_bundle(source: Path, target: Path, contention: Callable[[int], float], exponent: float = 1.0) -> Path:
    """A copy of the curve bundle whose step runs read the first probe at a per-curve speed and the memory probe at
    ``contention(key)`` times the lowest (``key`` tells the curves apart), every capacity divided by the first probe's
    ratio and by the memory probe's ratio to the power ``exponent``, as a CPU-bound server slowed by both would be."""
    shutil.copytree(source, target)
    path = target / "results.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    document["environment"]["speed_probe"] = SPEED_PROBE
    document["environment"]["memory_probe"] = MEMORY_PROBE
    runs = {run["id"]: run for run in document["runs"]}
    for entry in document["capacity"]:
        key = entry["repetition"] * 2 + len(entry["config"])
        probe = PROBE_REF * (1.0 + 0.07 * (key % 5 - 2))
        memory = MEMORY_REF * contention(key)
        factor = (PROBE_REF / probe) * (MEMORY_REF / memory) ** exponent
        for name in ("capacity_rps", "bound_rps"):
            if entry.get(name) is not None:
                entry[name] *= factor
        for step in entry["steps"]:
            if step.get("run") in runs:
                runs[step["run"]].update(speed_probe_us=probe, memory_probe_us=memory)
    path.write_text(json.dumps(document), encoding="utf-8")
    return target


def _shifted(shift: int) -> Callable[[int], float]:
    """Per-curve contention in four levels, ``shift`` reordering which curves met which (every bundle meets the
    lowest)."""
    return lambda key: 1.0 + 0.15 * ((key + shift) % 4)


def _throughout(level: float) -> Callable[[int], float]:
    """A run that met contention ``level`` times the lowest throughout, moving a little by curve within it."""
    return lambda key: level * (1.0 + 0.05 * (key % 3))


def _worst(lines: list[str]) -> float:
    (line,) = [line for line in lines if line.startswith("  worst deviation")]
    return float(line.split()[2].rstrip("%"))


def test_two_runs_that_met_different_contention_agree_only_with_the_memory_term(
    curve_bundle_dir: Path, tmp_path: Path
) -> None:
    paths = [_contention_bundle(curve_bundle_dir, tmp_path / f"run{shift}", _shifted(shift)) for shift in (0, 1, 3)]
    with_memory = report(paths, None, memory=True)
    without = report(paths, None)

    # With the term only the runs' own references differ (each the 10th percentile of its own readings): 1.2 %.
    assert _worst(with_memory) < 3.0 < 10.0 < _worst(without)
    terms = [line for line in with_memory if line.startswith("    memory probe: reference")]
    exponents = [float(line.split("exponent ")[1].split()[0]) for line in terms]
    assert len(exponents) == 3 and all(abs(exponent - 1.0) < 0.1 for exponent in exponents)
    assert not any("memory probe" in line for line in without)
    assert main_lines(["--memory", *map(str, paths)]) == with_memory
    assert main_lines([str(path) for path in paths]) == without


def main_lines(argv: list[str]) -> list[str]:
    """What the script's command prints for ``argv``."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue().splitlines()


def test_a_run_that_met_more_contention_throughout_agrees_only_at_a_shared_memory_speed(
    curve_bundle_dir: Path, tmp_path: Path
) -> None:
    """Each run's own references cancel a difference the whole run met (the report's rule, and the fitted memory
    term at the run's own memory reference); brought to one memory speed shared by the runs with the exponent the
    runs followed, the runs agree."""
    levels = (1.0, 1.1, 1.25)
    paths = [
        _contention_bundle(curve_bundle_dir, tmp_path / f"run{index}", _throughout(level), 1.5)
        for index, level in enumerate(levels)
    ]
    plain = report(paths, None)
    spread = 1.0 - (1.1 / 1.25) ** 1.5  # the run that met the most contention, below the median one
    assert _worst(plain) == pytest.approx(spread * 100.0, abs=0.2)
    shared = report(paths, None, memory_exponent=1.5)
    assert _worst(shared) < 0.2
    expected = statistics.median(MEMORY_REF * level for level in levels)  # each run's 10th percentile is its lowest
    assert any(f"shared memory speed {expected:.0f} us" in line for line in shared)
    effects = next(line for line in shared if "shared by every config of a run" in line)
    shown = effects.split("run: ")[1].split(" (sd")[0].split(", ")
    assert len(shown) == 3 and all(abs(float(value.rstrip("%"))) < 0.05 for value in shown)
    moved = next(line for line in shared if line.startswith("  what if:"))
    assert re.search(r": (\d+) of \1 configs in every run", moved)  # every config moved
    assert main_lines(["--memory-exponent", "1.5", *map(str, paths)]) == shared
    # Exponent 0: the report's own figures (the what-if's interval leaves out the first exponent's error).
    flat = report(paths, None, memory_exponent=0.0)
    assert [line.split("  worst")[0].split(":")[0] for line in flat if line.startswith("  ") and "worst" in line] == [
        line.split("  worst")[0].split(":")[0] for line in plain if line.startswith("  ") and "worst" in line
    ]
    assert _worst(flat) == _worst(plain)


def test_no_shared_memory_speed_without_memory_readings(curve_bundle_dir: Path, tmp_path: Path) -> None:
    paths = [_contention_bundle(curve_bundle_dir, tmp_path / "with", _shifted(0)), tmp_path / "without"]
    shutil.copytree(curve_bundle_dir, paths[1])
    lines = report(paths, None, memory_exponent=1.5)
    assert any("no shared memory speed: a run or a curve has no memory probe reading" in line for line in lines)


@pytest.mark.parametrize(
    "argv", [["--memory-exponent", "-0.5"], ["--memory-exponent", "9"], ["--memory", "--memory-exponent", "1"]]
)
def test_the_command_refuses_a_memory_exponent_out_of_range_or_with_the_fitted_term(
    curve_bundle_dir: Path, argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, str(curve_bundle_dir), str(curve_bundle_dir)])
    assert stopped.value.code == 2
