"""The aggregated figures beside the bundle: aggregates.json and aggregates.csv, the same numbers the report shows,
and the pandas recipe of docs/results-format.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

from servingbench.reports import AGGREGATES_CSV, AGGREGATES_JSON, load_bundle, render_report
from servingbench.reports.aggregates import CSV_COLUMNS
from servingbench.reports.capacity import capacity_views
from servingbench.reports.verdict import verdicts

from .builders import CURVE_SPEC as SPEC
from .builders import FAST_A, SLOW_C, CurveSpec, build_bundle

# slow: each test renders a whole report (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def document(rendered_curve_report: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((rendered_curve_report.parent / AGGREGATES_JSON).read_text())
    return loaded


def _rows(document: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [row for row in document["rows"] if all(row[key] == value for key, value in match.items())]


def test_the_report_writes_both_files_with_the_same_rows(rendered_curve_report: Path, document: dict[str, Any]) -> None:
    assert (document["format"], document["version"], document["results_version"]) == ("servingbench-aggregates", 1, 1)
    with (rendered_curve_report.parent / AGGREGATES_CSV).open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(document["rows"])
    assert {row["kind"] for row in rows} == {"metric", "capacity", "curve"}


def test_metric_rows_carry_the_verdicts(curve_bundle_dir: Path, document: dict[str, Any]) -> None:
    for group in verdicts(load_bundle(curve_bundle_dir)):
        for verdict in group.metrics:
            for item in verdict.outcomes:
                (row,) = _rows(document, kind="metric", model=group.info.model, scenario=group.info.name,
                               config=item.config, metric=verdict.metric.name)  # fmt: skip
                assert row["outcome"] == item.outcome and row["reference"] == verdict.reference
                assert row["median"] == pytest.approx(item.estimate.median, rel=1e-5)
                assert row["repetitions"] == item.estimate.n and row["level"] == pytest.approx(item.estimate.level)
                if item.comparison is not None and item.comparison.has_interval:
                    assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"]
                    assert row["pairs"] == item.comparison.pairs and "Bonferroni" in row["interval"]
    (slow,) = _rows(document, kind="metric", scenario="single-c8", config=SLOW_C.name, metric="rps")
    assert slow["outcome"] == "slower" and slow["ratio_high"] < 1.0
    assert _rows(document, kind="metric", metric="p90") and _rows(document, metric="p90")[0]["outcome"] is None


def test_capacity_and_curve_rows(curve_bundle_dir: Path, document: dict[str, Any]) -> None:
    (view,) = capacity_views(load_bundle(curve_bundle_dir))
    capacity = _rows(document, kind="capacity")
    assert {row["config"] for row in capacity} == {outcome.config for outcome in view.outcomes}
    (slow,) = [row for row in capacity if row["config"] == SLOW_C.name]
    assert slow["outcome"] == "slower" and slow["unit"] == "req/s" and slow["slo_p99_ms"] == 5.0
    assert slow["arrivals"] == "poisson" and slow["ci_low"] <= slow["median"] <= slow["ci_high"]
    curve = _rows(document, kind="curve", config=SLOW_C.name, metric="p99")
    assert sorted(row["offered_rps"] for row in curve) == [
        row.rate for row in view.rows if row.cells[SLOW_C.name].repetitions
    ]
    top = max(curve, key=lambda row: row["offered_rps"])
    assert top["median_bound"] == "at least" and top["ci_high"] is None and top["censored_above"] == SPEC.repetitions


def test_censored_capacities_are_marked(tmp_path: Path) -> None:
    spec = SPEC.with_(curves=(CurveSpec(never_met=((FAST_A.name, 0),)),), repetitions=5)
    render_report(build_bundle(tmp_path, spec))
    document = json.loads((tmp_path / AGGREGATES_JSON).read_text())
    (fast,) = _rows(document, kind="capacity", config=FAST_A.name)
    assert fast["censored_below"] == 1 and fast["ci_low"] is None


def test_the_pandas_recipe_in_the_docs_runs(curve_bundle_dir: Path) -> None:
    """The recipe of docs/results-format.md, as written there."""
    bundle = curve_bundle_dir
    results = json.loads((bundle / "results.json").read_text())
    runs = pd.json_normalize([run for run in results["runs"] if run["valid"] and not run.get("search")])
    medians = runs.groupby(["model", "scenario", "config"])["rps"].median()
    assert medians.loc[("fast", "single-c8", SLOW_C.name)] < medians.loc[("fast", "single-c8", FAST_A.name)]
    run = runs.iloc[0]
    histogram = HdrHistogram.decode(run["histograms.total"])  # microseconds, 1 us .. 60 s, 3 significant digits
    p99_ms = histogram.get_value_at_percentile(99.0) / 1000.0
    assert p99_ms == pytest.approx(run["latency_ms.p99"], rel=0.01)
    aggregates = pd.read_csv(bundle / AGGREGATES_CSV)
    capacity = aggregates[aggregates["kind"] == "capacity"].set_index("config")["median"]
    assert capacity[SLOW_C.name] < capacity[FAST_A.name]
