"""Compare two bundles: ratios B / A with intervals, as data and as HTML, with an environment warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from servingbench.reports import Comparison, compare_bundles, compare_metrics, load_bundle

from .builders import FAST_A, FAST_B, FAST_MODEL, SLOW_C, BundleSpec, ScenarioSpec, build_bundle

SPEC = BundleSpec(
    models=(FAST_MODEL,),
    scenarios=(ScenarioSpec("single-c1", concurrency=1), ScenarioSpec("single-c8", concurrency=8)),
    repetitions=5,
    capacity=False,
    invalid_runs=False,
)
REGRESSED_A = dataclasses.replace(FAST_A, overhead_ms=0.6)  # FastAPI got twice as slow in B


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("baseline"), SPEC)


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SPEC.with_(configs=(REGRESSED_A, FAST_B, SLOW_C), fingerprint="b" * 64, packages={"fastapi": "0.200.0"})
    return build_bundle(tmp_path_factory.mktemp("regressed"), spec)


def _find(comparisons: list[Comparison], config: str, scenario: str, metric: str) -> Comparison:
    (found,) = [c for c in comparisons if (c.config, c.scenario, c.metric) == (config, scenario, metric)]
    return found


def test_comparison_fields_are_the_public_contract() -> None:
    names = [field.name for field in dataclasses.fields(Comparison)]
    assert names[:11] == [
        "config",
        "model",
        "scenario",
        "metric",
        "baseline_median",
        "current_median",
        "ratio",
        "ci_low",
        "ci_high",
        "significant",
        "direction",
    ]


def test_a_bundle_against_itself_is_all_the_same(baseline: Path) -> None:
    comparisons = compare_metrics(baseline, baseline)
    assert len(comparisons) == 3 * 2 * 4  # configs x scenarios x (rps, p50, p99, cpu_us_per_request)
    for item in comparisons:
        assert item.ratio == 1.0 and not item.significant and item.direction == "same"
        assert item.baseline_n == item.current_n == 5


def test_a_regression_is_significant_and_worse(baseline: Path, regressed: Path) -> None:
    comparisons = compare_metrics(load_bundle(baseline), load_bundle(regressed))
    rps = _find(comparisons, "fastapi-uvicorn", "single-c8", "rps")
    assert rps.ratio is not None and rps.ratio < 0.7
    assert rps.ci_high is not None and rps.ci_high < 1.0
    assert rps.significant and rps.direction == "worse"
    for metric in ("p50", "p99", "cpu_us_per_request"):
        item = _find(comparisons, "fastapi-uvicorn", "single-c8", metric)
        assert item.direction == "worse" and item.ratio is not None and item.ratio > 1.0
    assert _find(comparisons, "flask-gthread", "single-c8", "rps").direction == "same"


def test_an_improvement_is_better(baseline: Path, regressed: Path) -> None:
    item = _find(compare_metrics(regressed, baseline), "fastapi-uvicorn", "single-c8", "p99")
    assert item.direction == "better" and item.ratio is not None and item.ratio < 1.0


def test_only_groups_in_both_bundles_are_compared(baseline: Path, tmp_path: Path) -> None:
    other = build_bundle(tmp_path / "other", SPEC.with_(scenarios=SPEC.scenarios[1:], configs=(FAST_A,)))
    comparisons = compare_metrics(baseline, other, ["rps"])
    assert [(c.config, c.scenario) for c in comparisons] == [("fastapi-uvicorn", "single-c8")]


def test_unknown_metric_is_rejected(baseline: Path) -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        compare_metrics(baseline, baseline, ["speed"])


def test_compare_page_warns_when_environments_differ(baseline: Path, regressed: Path, tmp_path: Path) -> None:
    page = compare_bundles(baseline, regressed, tmp_path / "out" / "cmp.html")
    html = page.read_text()
    assert page == tmp_path / "out" / "cmp.html"
    assert 'id="environment-warning"' in html and "DIFFERENT environments" in html
    assert "0.165.0" in html and "0.200.0" in html  # the differing package versions are listed
    assert 'data-config="fastapi-uvicorn" data-metric="rps" data-direction="worse"' in html
    assert 'data-config="flask-gthread" data-metric="rps" data-direction="same"' in html
    assert 'class="changed"' in html
    assert "<svg" not in html and "<script" not in html


def test_compare_page_without_warning_for_the_same_environment(baseline: Path, tmp_path: Path) -> None:
    page = compare_bundles(baseline, baseline, tmp_path)
    assert page == tmp_path / "compare.html"
    html = page.read_text()
    assert "environment-warning" not in html
    assert "0 significantly worse" in html


def test_intervals_are_simultaneous_over_the_cells_and_the_counts_say_so(baseline: Path, regressed: Path) -> None:
    comparisons = compare_metrics(baseline, regressed)
    cells = len(comparisons)
    assert cells == 3 * 2 * 4 and {item.family_size for item in comparisons} == {cells}
    assert all(item.level == pytest.approx(1 - 0.05 / cells) for item in comparisons)
    rps = _find(comparisons, "fastapi-uvicorn", "single-c8", "rps")
    assert rps.interval_label == f"95% simultaneous over {cells} cells (Bonferroni; Welch t on logs, unpaired)"
    only_rps = _find(compare_metrics(baseline, regressed, ["rps"]), "fastapi-uvicorn", "single-c8", "rps")
    assert only_rps.family_size == 6 and only_rps.ci_low is not None and rps.ci_low is not None
    assert only_rps.ci_low > rps.ci_low  # fewer cells looked at: a narrower interval
    html = compare_bundles(baseline, regressed, Path(baseline).parent / "counts.html").read_text()
    assert f"Corrected for {cells} cells" in html and "not shown different" in html


def test_fewer_than_five_repetitions_a_side_give_no_interval(tmp_path: Path) -> None:
    small = build_bundle(tmp_path / "small", SPEC.with_(repetitions=4))
    item = _find(compare_metrics(small, small), "fastapi-uvicorn", "single-c8", "rps")
    assert not item.has_interval and item.direction == "same"
    assert item.interval_label == "fewer than 5 repetitions a side: no interval"
