"""The verdict and recommendations, computed straight from fixture bundles (no rendering)."""

from __future__ import annotations

from pathlib import Path

from servingbench.reports import load_bundle
from servingbench.reports.verdict import recommendations, verdicts

from .builders import FAST_A, FAST_MODEL, SLOW_C, BundleSpec, ConfigSpec, ScenarioSpec, build_bundle

SCENARIOS = (ScenarioSpec("single-c1", concurrency=1), ScenarioSpec("single-c8", concurrency=8))
ASYNC = ConfigSpec("fastapi-async", "FastAPI / uvicorn (async def)", "fastapi", "uvicorn", "async", 0.9)


def _notes(tmp_path: Path, spec: BundleSpec) -> list[str]:
    bundle = load_bundle(build_bundle(tmp_path, spec))
    return recommendations(bundle, verdicts(bundle))


def test_a_clear_winner_is_recommended_with_its_condition(tmp_path: Path) -> None:
    spec = BundleSpec(configs=(FAST_A, SLOW_C), models=(FAST_MODEL,), scenarios=SCENARIOS, capacity=False)
    (note,) = _notes(tmp_path, spec)
    assert note.startswith("For the model 'fast', prefer FastAPI / uvicorn (def): best or tied for best")
    assert "the serving stack matters here" in note
    assert "Flask / gunicorn sync reaches as little as 0.60" in note


def test_async_route_that_loses_gets_a_note(tmp_path: Path) -> None:
    spec = BundleSpec(configs=(FAST_A, ASYNC), models=(FAST_MODEL,), scenarios=SCENARIOS, capacity=False)
    notes = _notes(tmp_path, spec)
    assert len(notes) == 2
    assert "FastAPI / uvicorn (async def) (async def route) had significantly lower throughput" in notes[1]


def test_a_single_config_has_nothing_to_compare(tmp_path: Path) -> None:
    spec = BundleSpec(configs=(FAST_A,), models=(FAST_MODEL,), scenarios=SCENARIOS[:1], capacity=False)
    bundle = load_bundle(build_bundle(tmp_path, spec))
    (group,) = verdicts(bundle)
    assert [verdict.headline for verdict in group.metrics] == ["only FastAPI / uvicorn (def) has valid runs"] * 3
    assert not any(verdict.decided for verdict in group.metrics)
    (note,) = recommendations(bundle, [group])
    assert "not enough repetitions for an interval" in note


def test_winner_is_decided_only_when_every_other_config_is_significantly_slower(bundle_dir: Path) -> None:
    groups = {(group.info.model, group.info.name): group for group in verdicts(load_bundle(bundle_dir))}
    fast = {verdict.metric.name: verdict for verdict in groups[("fast", "single-c8")].metrics}
    assert list(fast) == ["rps", "p50", "p99"]
    assert not fast["rps"].decided  # two configs tie at the top
    open_loop = {verdict.metric.name for verdict in groups[("fast", "open-r300")].metrics}
    assert open_loop == {"p50", "p99"}
