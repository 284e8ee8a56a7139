"""Capacity searches, as bundles before capacity curves recorded them: still read, ranked and shown step by step.

Steps are runs, but never scenarios. A search's capacity that is only a lower bound counts as censored above it, one
that never met the SLO as censored below the lowest rate it tried.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from servingbench.reports import BundleError, Comparison, compare_metrics, load_bundle, render_report
from servingbench.reports.bundle import Bundle
from servingbench.reports.capacity import CapacityView, capacity_views
from servingbench.reports.tables import error_rows, search_rows, summary_rows
from servingbench.reports.verdict import verdicts

from .builders import (
    FAST_A,
    FAST_B,
    FAST_MODEL,
    SEARCH,
    SEARCH_SCENARIOS,
    SEARCH_SPEC,
    SLOW_C,
    BundleSpec,
    SearchSpec,
    build_bundle,
)

# slow: each test renders a whole report with its plots (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

SVG = "{http://www.w3.org/2000/svg}"
OPEN_CHART = "chart-open-fast"
CAPACITY_CHART = "chart-capacity-fast"


def _edit(bundle: Path, change: Any) -> Path:
    path = bundle / "results.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return bundle


def _capacity_section(html: str) -> str:
    return html[html.index('id="capacity"') : html.index("<h3>Per model and scenario</h3>")]


def _capacity_row(html: str, config: str) -> str:
    row = re.search(rf'<tr data-config="{config}">(.*?)</tr>', _capacity_section(html), re.S)
    assert row is not None, f"no capacity row for {config}"
    return row.group(1)


def _svg(html: str, chart_id: str) -> ET.Element:
    start = html.index(f'<svg id="{chart_id}"')
    return ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])


def _points(svg: ET.Element, gid: str) -> int:
    """Markers drawn in the SVG group ``gid`` (matplotlib writes a line's markers as <use> elements)."""
    group = next((element for element in svg.iter(f"{SVG}g") if element.get("id") == gid), None)
    return 0 if group is None else len(list(group.iter(f"{SVG}use")))


@pytest.fixture(scope="module")
def bundle(search_bundle_dir: Path) -> Bundle:
    return load_bundle(search_bundle_dir)


@pytest.fixture(scope="module")
def html(rendered_search_report: Path) -> str:
    return rendered_search_report.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def without_searches(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The same plan as :data:`SEARCH_SPEC` without its searches."""
    return load_bundle(build_bundle(tmp_path_factory.mktemp("plain"), SEARCH_SPEC.with_(searches=())))


def test_old_capacity_entries_load_with_defaults(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.capacity and not bundle.step_runs
    for result in bundle.capacity:
        assert (result.id, result.scenario, result.arrivals, result.converged) == (None, "capacity", "poisson", True)
        assert (result.limited_by, result.theory, result.theory_rps, result.service_ms) == (None, None, None, None)
        assert not result.lower_bound
        assert all(step.reason is None and step.achieved_rps is None for step in result.steps)
    assert all(run.search is None and run.step_ok is None for run in bundle.runs)
    assert bundle.scenario_runs == bundle.valid_runs


def test_search_fields_are_read(bundle: Bundle) -> None:
    steps = bundle.step_runs
    assert len(steps) == len(SEARCH.factors) * 3 * SEARCH_SPEC.repetitions
    assert all(run.kind == "open" and run.scenario.startswith("capacity-r") for run in steps)
    failed = [run for run in steps if run.step_ok is False]
    assert failed and all(run.step_reason for run in failed)
    assert any(run.valid for run in failed)  # failing the SLO is not an invalid measurement
    assert len(bundle.valid_runs) > len(bundle.scenario_runs)
    by_id = {result.id: result for result in bundle.capacity}
    assert set(by_id) == {run.search for run in steps}
    sync = next(result for result in bundle.capacity if result.config == SLOW_C.name)
    assert (sync.theory, sync.service_ms) == ("M/D/1", 0.62) and sync.theory_rps is not None
    assert sync.steps[0].achieved_rps is not None and sync.steps[0].requests
    limited = next(result for result in bundle.capacity if result.config == FAST_A.name)
    assert limited.limited_by == "load generator" and limited.lower_bound
    assert not next(r for r in bundle.capacity if (r.config, r.repetition) == (FAST_B.name, 0)).converged


def test_a_wrongly_typed_step_field_is_a_bundle_error(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path, SEARCH_SPEC.with_(repetitions=1))
    _edit(bundle, lambda doc: doc["runs"][-3].update(step_ok="yes"))
    with pytest.raises(BundleError, match="'step_ok' must be true or false"):
        load_bundle(bundle)


def test_duplicate_capacity_ids_are_a_bundle_error(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path, SEARCH_SPEC.with_(repetitions=1))
    _edit(bundle, lambda doc: doc["capacity"][1].update(id=doc["capacity"][0]["id"]))
    with pytest.raises(BundleError, match="duplicate capacity id 'k001'"):
        load_bundle(bundle)


def test_steps_never_form_verdict_groups_or_summary_rows(bundle: Bundle, without_searches: Bundle) -> None:
    assert {group.info.name for group in verdicts(bundle)} == {scenario.name for scenario in SEARCH_SCENARIOS}
    assert verdicts(bundle) == verdicts(without_searches)
    assert summary_rows(bundle) == summary_rows(without_searches)
    assert error_rows(bundle) == error_rows(without_searches)


def test_steps_are_no_compared_figures(search_bundle_dir: Path, without_searches: Bundle) -> None:
    def keys(comparisons: list[Comparison]) -> set[tuple[str, str, str, str]]:
        return {(c.config, c.model, c.scenario, c.metric) for c in comparisons}

    itself = compare_metrics(search_bundle_dir, search_bundle_dir)
    assert keys(itself) == keys(compare_metrics(without_searches, without_searches))
    assert not [c for c in itself if c.scenario.startswith("capacity-r")]
    assert all(c.ratio == 1.0 for c in compare_metrics(search_bundle_dir, without_searches))


def _view(bundle: Bundle) -> CapacityView:
    (view,) = capacity_views(bundle)
    return view


def test_capacity_table_shows_theory_gap_and_lower_bounds(bundle: Bundle, html: str) -> None:
    view = _view(bundle)
    assert (view.model, view.scenario, view.arrivals, view.slo_p99_ms) == ("fast", "capacity", "poisson", 5.0)
    assert not view.curve and view.grid == ()
    assert set(view.theory) == {SLOW_C.name}
    gap = view.theory[SLOW_C.name].gap
    assert gap is not None and -0.2 < gap < 0.0  # the synthetic theory is 8 % optimistic, the search stops below
    assert view.notes[FAST_A.name] == ("lower bound in 3 reps: load generator limit",)
    assert view.notes[FAST_B.name] == ("lower bound in 1 rep: the search did not converge",)
    assert view.notes[SLOW_C.name] == ()
    limited = view.estimate(FAST_A.name)  # every repetition a lower bound: censored above
    assert limited is not None and limited.censored_above == 3 and limited.median_at_least
    section = _capacity_section(html)
    assert "Poisson arrivals" in section and "queueing theory" in section
    assert "an upper bound for servers whose service time varies" in section
    sync = _capacity_row(html, SLOW_C.name)
    assert "req/s" in sync and "M/D/1" in sync and f"{gap * 100:+.1f}%" in sync
    assert 'data-metric="capacity_rps" data-outcome="range"' in sync  # 2 measured pairs: a range, no verdict
    assert "range of 2 repetitions" in sync and "1 censored pair left out" in sync and "95%" not in sync
    fast = _capacity_row(html, FAST_A.name)
    assert "lower bound in 3 reps: load generator limit" in fast and "\u2265" in fast
    assert 'data-outcome="censored"' in fast  # no repetition measured a value: nothing to pair
    assert "does not apply" in fast
    assert "lower bound in 1 rep: the search did not converge" in _capacity_row(html, FAST_B.name)
    assert 'class="rates"' not in section  # searches share no grid: no p99-by-rate table


def test_theory_columns_only_when_some_entry_has_theory(rendered_report: Path) -> None:
    section = _capacity_section(rendered_report.read_text(encoding="utf-8"))
    assert 'data-metric="capacity_rps"' in section
    assert "queueing theory" not in section and "lower bound in" not in section


def test_the_headline_shows_a_winner_that_is_only_a_lower_bound_as_at_least(tmp_path: Path) -> None:
    spec = BundleSpec(
        configs=(FAST_A, SLOW_C), models=(FAST_MODEL,), scenarios=SEARCH_SCENARIOS[:1], repetitions=3,
        capacity=False, invalid_runs=False, searches=(SearchSpec(limited_configs=(FAST_A.name,)),),
    )  # fmt: skip
    html = render_report(build_bundle(tmp_path, spec)).read_text()
    headline = html[html.index('id="headline"') : html.index('id="recommendation"')]
    row = re.search(rf'<tr data-config="{FAST_A.name}">(.*?)</tr>', headline, re.S)
    assert row is not None and "\u2265" in row.group(1)  # "at least": the generator stopped it, not the server


def test_a_config_that_never_met_the_slo_says_so(tmp_path: Path) -> None:
    def never(doc: dict[str, Any]) -> None:
        for entry in doc["capacity"]:
            if entry["config"] == SLOW_C.name:
                entry["capacity_rps"] = None
                for step in entry["steps"]:
                    step["ok"] = False

    html = render_report(_edit(build_bundle(tmp_path, SEARCH_SPEC), never)).read_text()
    row = _capacity_row(html, SLOW_C.name)
    assert "met the SLO at no rate measured in 3 reps: below" in row
    assert "\u2264" in row and 'data-outcome="censored"' in row and "no measured capacity" in row
    assert "unsettled" not in row and 'data-outcome="slower"' not in row


def test_a_search_that_met_the_slo_once_but_found_no_capacity_is_unsettled_not_never_met(tmp_path: Path) -> None:
    def unsettled(doc: dict[str, Any]) -> None:
        for entry in doc["capacity"]:
            if entry["config"] == SLOW_C.name:  # its steps keep their passes: re-measurements failed, budget ran out
                entry.update(capacity_rps=None, converged=False, stop_reason="step budget (8) spent while halving")

    html = render_report(_edit(build_bundle(tmp_path, SEARCH_SPEC), unsettled)).read_text()
    row = _capacity_row(html, SLOW_C.name)
    assert "no capacity found" in row and "unsettled in 3 reps" in row
    assert "met the SLO at no rate" not in row


def test_step_by_step_table_lists_every_step(bundle: Bundle, html: str) -> None:
    table = html[html.index('id="searches"') : html.index("Every run, in executed order")]
    rows = re.findall(r'<tr data-search="(k\d+)" data-step-run="(r\d+)" data-step-ok="(yes|no)">', table)
    assert len(rows) == len(bundle.step_runs)
    expected = [
        (str(row.id), str(step.run), "yes" if step.ok else "no") for row in search_rows(bundle) for step in row.steps
    ]
    assert sorted(rows) == sorted(expected)
    for result in bundle.capacity:
        assert [run for search, run, _ in rows if search == result.id] == [step.run for step in result.steps]
    for _, run_id, _ in rows:
        assert f'href="#run-{run_id}"' in table and f'id="run-{run_id}"' in html
    assert "p99 " in table and "over the SLO 5 ms" in table
    assert "load generator fell behind" in table and "(run invalid: not counted)" in table


def test_unfinished_search_is_still_listed(tmp_path: Path) -> None:
    bundle_dir = _edit(build_bundle(tmp_path, SEARCH_SPEC.with_(repetitions=1)), lambda doc: doc["capacity"].pop())
    rows = search_rows(load_bundle(bundle_dir))
    unfinished = [row for row in rows if row.result is None]
    assert len(unfinished) == 1 and len(unfinished[0].steps) == len(SEARCH.factors)
    assert "not finished (no capacity entry)" in render_report(bundle_dir).read_text()


def test_invalid_steps_are_listed_with_the_invalid_runs(bundle: Bundle, html: str) -> None:
    invalid_steps = [run for run in bundle.invalid_runs if run.is_step]
    assert invalid_steps and all(run.config == FAST_A.name for run in invalid_steps)
    listed = html[html.index('id="invalid-runs"') : html.index('id="plots"')]
    assert all(f'data-run="{run.id}"' in listed for run in invalid_steps)


def test_search_steps_are_drawn_on_the_capacity_chart_and_not_the_fixed_rate_one(bundle: Bundle, html: str) -> None:
    svg = _svg(html, CAPACITY_CHART)
    groups = {element.get("id") for element in svg.iter(f"{SVG}g")}
    for config in SEARCH_SPEC.configs:
        assert f"{CAPACITY_CHART}-0-{config.name}-p99-median" in groups or (
            f"{CAPACITY_CHART}-0-{config.name}-p99-bound" in groups
        )
        assert f"{CAPACITY_CHART}-0-capacity-{config.name}" in groups
    assert f"{CAPACITY_CHART}-0-theory-{SLOW_C.name}" in groups
    fixed = _svg(html, OPEN_CHART)
    assert "fixed offered rates" in "".join(fixed.itertext())
    assert not [element for element in fixed.iter(f"{SVG}g") if "capacity" in (element.get("id") or "")]


def test_a_search_whose_server_never_started_says_not_measured(tmp_path: Path) -> None:
    def unmeasured(doc: dict[str, Any]) -> None:
        for entry in doc["capacity"]:
            if entry["config"] == SLOW_C.name:
                entry.update(capacity_rps=None, converged=False, steps=[], stop_reason="server failed to start: exit 3")

    html = render_report(_edit(build_bundle(tmp_path, SEARCH_SPEC), unmeasured)).read_text()
    row = _capacity_row(html, SLOW_C.name)
    assert "no capacity found" in row and "not measured in 3 reps (server failed to start: exit 3)" in row
    assert "met the SLO at no rate" not in row and "unsettled" not in row


def test_a_capacity_below_a_rate_that_passed_once_is_a_lower_bound(tmp_path: Path) -> None:
    def passed_above(doc: dict[str, Any]) -> None:
        for entry in doc["capacity"]:
            if entry["config"] == SLOW_C.name and entry["capacity_rps"] is not None:
                high = entry["capacity_rps"] * 1.5
                entry["steps"].append({**entry["steps"][0], "rate": high, "ok": True, "run": None})
                entry["steps"].append({**entry["steps"][0], "rate": high, "ok": False, "run": None})

    built = _edit(build_bundle(tmp_path, SEARCH_SPEC), passed_above)
    slow = [entry for entry in load_bundle(built).capacity if entry.config == SLOW_C.name]
    assert slow and all(entry.passed_above and entry.lower_bound and entry.censoring == "above" for entry in slow)
    row = _capacity_row(render_report(built).read_text(), SLOW_C.name)
    assert "lower bound in 3 reps: a higher rate passed once but was not confirmed" in row


def test_capacity_is_ranked_by_pairs_and_a_never_met_repetition_is_censored(tmp_path: Path) -> None:
    def never_once(doc: dict[str, Any]) -> None:
        for entry in doc["capacity"]:
            if (entry["config"], entry["repetition"]) == (SLOW_C.name, 1):
                entry["capacity_rps"] = None
                for step in entry["steps"]:
                    step["ok"] = False

    spec = SEARCH_SPEC.with_(repetitions=6, searches=(SearchSpec(),))
    view = _view(load_bundle(_edit(build_bundle(tmp_path, spec), never_once)))
    slow = next(outcome for outcome in view.outcomes if outcome.config == SLOW_C.name)
    assert slow.comparison is not None and slow.comparison.pairs == 5  # the never-met repetition drops out...
    assert view.left_out[SLOW_C.name] == 1  # ...and is counted; its bound agrees with "slower", so that stands
    assert slow.outcome == "slower" and "Bonferroni over 3 pairs; 5 pairs" in slow.interval_text
    assert slow.estimate.n == 6 and slow.estimate.censored == 1 and slow.estimate.open_below
