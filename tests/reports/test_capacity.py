"""Capacity as a measured curve: p99 at each offered rate of a shared grid, the capacity with its interval and
censoring, the paired ranking guarded by the censored repetitions, the chart, and the step-by-step table."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from servingbench.reports import load_bundle, render_report
from servingbench.reports.bundle import Bundle, CapacityResult
from servingbench.reports.capacity import CapacityView, capacity_views, censored_guard, grid_spacing
from servingbench.reports.numbers import format_number
from servingbench.reports.stats import Family, compare_pair

from .builders import CURVE, CURVE_SPEC, FAST_A, FAST_B, SLOW_C, CurveSpec, build_bundle, curve_grid

SVG = "{http://www.w3.org/2000/svg}"
CHART = "chart-capacity-fast"
GENERATOR_LIMITED = 'data-generator-limited="yes"'


@pytest.fixture(scope="module")
def bundle(curve_bundle_dir: Path) -> Bundle:
    return load_bundle(curve_bundle_dir)


@pytest.fixture(scope="module")
def view(bundle: Bundle) -> CapacityView:
    (found,) = capacity_views(bundle)
    return found


@pytest.fixture(scope="module")
def html(rendered_curve_report: Path) -> str:
    return rendered_curve_report.read_text(encoding="utf-8")


def _section(html: str) -> str:
    return html[html.index('id="capacity"') : html.index("<h3>Per model and scenario</h3>")]


def _svg(html: str, chart_id: str) -> ET.Element:
    start = html.index(f'<svg id="{chart_id}"')
    return ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])


def _groups(svg: ET.Element) -> set[str]:
    return {element.get("id") or "" for element in svg.iter(f"{SVG}g")}


def _counted_p99s(bundle: Bundle, config: str, rate: float) -> list[float]:
    """The p99 of every counted step of ``config`` at ``rate``, one per repetition."""
    runs = {run.id: run for run in bundle.runs}
    return [
        step.p99_ms
        for result in bundle.capacity
        if result.config == config
        for step in result.steps
        if step.rate == rate and not step.generator_limited and runs[step.run or ""].counted and step.p99_ms
    ]


def test_curve_entries_are_read(bundle: Bundle) -> None:
    grid = curve_grid(CURVE_SPEC, CURVE)
    assert bundle.capacity and all(result.is_curve and result.grid == grid for result in bundle.capacity)
    assert all(result.outcome == "capacity" and result.censoring is None for result in bundle.capacity)
    assert all(result.fitted and not result.lower_bound for result in bundle.capacity)
    limited = [step for result in bundle.capacity for step in result.steps if step.generator_limited]
    assert len(limited) == CURVE_SPEC.repetitions  # one per FastAPI curve, re-run at its rate
    runs = {run.id: run for run in bundle.runs}
    assert all(not runs[step.run or ""].valid for step in limited)


def test_every_grid_rate_has_a_row_with_each_configs_median_p99(bundle: Bundle, view: CapacityView) -> None:
    grid = curve_grid(CURVE_SPEC, CURVE)
    assert view.curve and view.grid == grid and [row.rate for row in view.rows] == list(grid)
    for row in view.rows:
        for config in (FAST_A.name, FAST_B.name, SLOW_C.name):
            cell = row.cells[config]
            measured = _counted_p99s(bundle, config, row.rate)
            assert cell.measured == len(measured)  # generator-limited steps never count
            estimate = cell.estimates["p99"]
            if measured and not cell.past:
                assert estimate is not None and estimate.median == pytest.approx(float(np.median(measured)))
    lowest, top = view.rows[0].cells[SLOW_C.name], view.rows[-1].cells[SLOW_C.name]
    assert lowest.repetitions == 0  # its climb starts above the lowest rate: not measured there
    assert top.past == CURVE_SPEC.repetitions and top.measured == 0  # stopped below after two failures
    at_least = top.estimates["p99"]
    assert at_least is not None and at_least.median_at_least and at_least.censored_above == CURVE_SPEC.repetitions
    assert at_least.median >= CURVE.slo_p99_ms and top.estimates["p50"] is None


def test_capacity_is_the_median_with_an_interval_and_the_slower_config_is_called_slower(view: CapacityView) -> None:
    by_config = {outcome.config: outcome for outcome in view.outcomes}
    assert view.outcomes[0].config in (FAST_A.name, FAST_B.name) and view.outcomes[0].outcome == "best"
    slow = by_config[SLOW_C.name]
    assert slow.outcome == "slower" and slow.comparison is not None and slow.comparison.pairs == 6
    assert "Bonferroni over 3 pairs; 6 pairs" in slow.interval_text
    assert by_config[FAST_B.name].outcome in ("equivalent", "best", "inconclusive")
    for outcome in view.outcomes:
        estimate = outcome.estimate
        assert estimate.n == 6 and estimate.level is not None and estimate.level >= 0.95 and not estimate.censored
        assert estimate.ci_low is not None and estimate.ci_high is not None
        assert estimate.ci_low <= estimate.median <= estimate.ci_high
    assert view.left_out == {FAST_B.name: 0, SLOW_C.name: 0} or set(view.left_out.values()) == {0}


@pytest.mark.slow
def test_censored_repetitions_count_below_and_above(tmp_path: Path) -> None:
    curve = CurveSpec(never_met=((SLOW_C.name, 2),), always_met=((FAST_B.name, 2),))  # one repetition: 5 pairs left
    bundle = load_bundle(build_bundle(tmp_path, CURVE_SPEC.with_(curves=(curve,))))
    (view,) = capacity_views(bundle)
    never = next(r for r in bundle.capacity if (r.config, r.repetition) == (SLOW_C.name, 2))
    assert (never.outcome, never.censoring, never.bound) == ("never met", "below", min(s.rate for s in never.steps))
    slow, fast = view.estimate(SLOW_C.name), view.estimate(FAST_B.name)
    assert slow is not None and slow.n == 6 and slow.censored_below == 1 and slow.open_below
    assert fast is not None and fast.n == 6 and fast.censored_above == 1 and fast.open_above
    assert any("met the SLO at no rate measured in 1 rep: below" in note for note in view.notes[SLOW_C.name])
    assert any("met the SLO at every rate measured in 1 rep: at least" in note for note in view.notes[FAST_B.name])
    slow_outcome = next(item for item in view.outcomes if item.config == SLOW_C.name)
    assert slow_outcome.outcome == "slower"  # its censored pair says the same: its bound is below the best's value
    assert slow_outcome.comparison is not None and slow_outcome.comparison.pairs == 5
    assert view.left_out[SLOW_C.name] == 1
    html = render_report(bundle.path).read_text()
    assert "[below\u2013" in _section(html) and "\u2013above]" in _section(html)


def _result(
    rep: int, *, value: float | None = None, below: float | None = None, above: float | None = None
) -> CapacityResult:
    censored = "below" if below is not None else "above" if above is not None else None
    return CapacityResult(
        "x", "m", rep, 50.0, value, method="curve", censored=censored, bound_rps=below or above,
        steps=(),
    )  # fmt: skip


def test_a_censored_pair_against_the_verdict_leaves_it_not_settled() -> None:
    logs = np.log(np.array([0.80, 0.82, 0.79, 0.81, 0.80]))
    family = Family(0.95, 1, "named")
    slower = compare_pair("arm", "ref", logs, family=family, higher_is_better=True)
    assert slower.outcome == "worse"
    reference = [_result(rep, value=100.0) for rep in range(6)]
    agreeing = [*(_result(rep, value=80.0) for rep in range(5)), _result(5, below=90.0)]
    kept, left_out, against = censored_guard(slower, agreeing, reference)
    assert (kept.outcome, left_out, against) == ("worse", 1, 0)
    contradicting = [*(_result(rep, value=80.0) for rep in range(5)), _result(5, above=120.0)]
    downgraded, left_out, against = censored_guard(slower, contradicting, reference)
    assert (downgraded.outcome, left_out, against) == ("inconclusive", 1, 1)
    unknown = [*(_result(rep, value=80.0) for rep in range(5)), _result(5, above=95.0)]  # at least 95 vs 100: open
    assert censored_guard(slower, unknown, reference)[0].outcome == "worse"
    equal = compare_pair("arm", "ref", np.zeros(5), family=family, higher_is_better=True)
    assert equal.outcome == "equivalent"
    assert censored_guard(equal, unknown, reference)[0].outcome == "inconclusive"  # no equivalence beyond the grid


def test_the_report_shows_p99_at_each_rate_and_what_the_figures_cannot_show(view: CapacityView, html: str) -> None:
    section = _section(html)
    table = section[section.index('class="rates"') :]
    rates = re.findall(r'<tr data-rate="([\d.]+)"', table)
    assert [float(rate) for rate in rates] == [row.rate for row in view.rows]
    assert "met the SLO in 6 of 6" in table and "6 past: not reached" in table and "\u2265" in table
    spacing = grid_spacing(view.grid)
    assert spacing is not None and f"neighbouring rates are about {spacing:.0%} apart" in section
    assert "A censored repetition only bounds the capacity" in section
    assert "M/D/1" in section and "an upper bound for servers whose service time varies" in section


def test_each_config_is_compared_with_the_one_ranked_just_above(view: CapacityView, html: str) -> None:
    """Two configs below the best can swap places between runs while both differ from it: the report says, for
    every neighbouring pair, whether their order is settled (in the family of all three pairs)."""
    first, second, third = (outcome.config for outcome in view.outcomes)
    assert first not in view.above and set(view.above) == {second, third}
    assert third == SLOW_C.name
    neighbour = view.above[third]
    assert neighbour.comparison is not None and neighbour.comparison.reference == second
    assert neighbour.outcome == "slower" and "Bonferroni over 3 pairs; 6 pairs" in neighbour.interval_text
    close = view.above[second]
    assert close.comparison is not None and close.comparison.reference == first
    assert close.outcome in ("equivalent", "inconclusive", "slower")
    headline = html[html.index('id="headline"') : html.index('id="recommendation"')]
    rows = dict(re.findall(r'<tr data-config="([^"]+)">(.*?)</tr>', headline, re.S))
    assert "vs the row above" in headline
    assert 'class="above" data-outcome="slower"' in rows[third]
    assert 'class="above" data-outcome=""' in rows[first]


def test_the_headline_gives_capacity_with_intervals_and_verdict_words(html: str) -> None:
    headline = html[html.index('id="headline"') : html.index('id="recommendation"')]
    rows = dict(re.findall(r'<tr data-config="([^"]+)">(.*?)</tr>', headline, re.S))
    assert set(rows) == {FAST_A.name, FAST_B.name, SLOW_C.name}
    assert all(re.search(r"\[[\d,.]+\u2013[\d,.]+\]", row) for row in rows.values())
    assert 'o-slower">slower</span>' in rows[SLOW_C.name]
    for word in ("significant", "no difference", "within noise"):
        assert word not in headline


def test_generator_limited_steps_are_listed_as_rerun_and_not_counted(bundle: Bundle, html: str) -> None:
    table = html[html.index('id="searches"') : html.index("Every run, in executed order")]
    assert table.count(GENERATOR_LIMITED) == CURVE_SPEC.repetitions
    assert table.count("(generator: re-run, not counted)") == CURVE_SPEC.repetitions
    steps = sum(len(result.steps) for result in bundle.capacity)
    assert len(re.findall(r'<tr data-search="c\d+" data-step-run="r\d+"', table)) == steps
    assert "p99 " in table and "over the SLO 5 ms" in table


def test_the_chart_draws_every_config_its_capacity_and_theory(html: str) -> None:
    svg = _svg(html, CHART)
    groups = _groups(svg)
    for config in (FAST_A.name, FAST_B.name, SLOW_C.name):
        for metric in ("p99", "p50"):
            assert f"{CHART}-0-{config}-{metric}-median" in groups
        assert f"{CHART}-0-capacity-{config}" in groups and f"{CHART}-0-capacity-interval-{config}" in groups
    assert f"{CHART}-0-{SLOW_C.name}-p99-bound" in groups  # past the SLO above where its climb stopped
    assert f"{CHART}-0-theory-{SLOW_C.name}" in groups and f"{CHART}-0-theory-{FAST_A.name}" not in groups
    text = "".join(svg.itertext())
    assert "SLO 5 ms" in text and "offered rate (req/s, log)" in text and "queueing theory" in text
    caption = html[html.index(f'id="figure-{CHART}"') :]
    caption = caption[: caption.index("</figcaption>")]
    assert "an upper bound for servers whose service time varies" in caption and "hollow" in caption


@pytest.mark.slow
def test_the_expected_traffic_gets_its_own_row_and_line(tmp_path: Path) -> None:
    spec = CURVE_SPEC.with_(traffic_rps=1000.0, repetitions=2)
    bundle = load_bundle(build_bundle(tmp_path, spec))
    (view,) = capacity_views(bundle)
    traffic = [row for row in view.rows if row.traffic]
    assert [row.rate for row in traffic] == [1000.0] and 1000.0 in view.grid
    html = render_report(bundle.path).read_text()
    assert '<tr data-rate="1000" class="traffic">' in html and "your traffic" in "".join(_svg(html, CHART).itertext())


@pytest.mark.parametrize(("resolution", "said"), [(None, False), (0.0, False), (0.15, True), (5.0, False)])
def test_the_limits_say_when_midpoints_refined_the_crossing(
    bundle: Bundle, view: CapacityView, resolution: float | None, said: bool
) -> None:
    """Midpoints are named where the plan's resolution is finer than the grid's spacing (coarser: none was taken)."""
    plan = {key: value for key, value in bundle.plan.items() if key != "capacity_resolution"}
    if resolution is not None:
        plan["capacity_resolution"] = resolution
    (found,) = capacity_views(replace(bundle, plan=plan))
    sentence = next(limit for limit in found.limits if limit.startswith("Grid resolution"))
    assert ("measured their geometric midpoint until a passing and a failing rate were within 15%" in sentence) == said
    assert sentence.startswith(next(limit for limit in view.limits if limit.startswith("Grid resolution")))


def test_grid_spacing_is_the_median_step() -> None:
    assert grid_spacing([100.0, 120.0, 144.0]) == pytest.approx(0.2)
    assert grid_spacing([100.0]) is None
    assert math.isclose(grid_spacing([100.0, 110.0, 200.0]) or 0.0, (0.1 + 200 / 110 - 1) / 2)


def _inflate_peak(source: Path, target: Path, config: str, factor: float) -> Path:
    """A copy of ``source`` in which every closed-loop run of ``config`` served ``factor`` times as much, and its
    first one ten times more again but marked invalid (it must not count)."""
    import json
    import shutil

    shutil.copytree(source, target)
    path = target / "results.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    closed = [
        run
        for run in document["runs"]
        if run["config"] == config and run.get("kind", "closed") == "closed" and run.get("rps")
    ]
    for run in closed:
        run["rps"] *= factor
    closed[0].update(rps=closed[0]["rps"] * 10.0, valid=False, invalid_reason="a test's invalid run")
    path.write_text(json.dumps(document), encoding="utf-8")
    return target


def test_a_capacity_far_below_its_closed_loop_peak_says_why_with_its_p99_at_half_the_peak(
    curve_bundle_dir: Path, view: CapacityView, tmp_path: Path
) -> None:
    from rich.console import Console

    from servingbench.reports.console import print_summary

    # As built, every config meets the SLO above half its peak: no note.
    assert view.far_below_peak == {}
    assert all((share := view.peak_share(config)) is not None and share > 0.5 for config in view.configs)
    target = "flask-gthread"
    bundle = load_bundle(_inflate_peak(curve_bundle_dir, tmp_path / "inflated", target, 2.5))
    (inflated,) = capacity_views(bundle)
    # The peak is the highest median over counted repetitions of a closed-loop scenario (invalid runs left out).
    closed = [run for run in bundle.runs if run.config == target and run.kind == "closed" and not run.is_step]
    by_scenario: dict[str, list[float]] = {}
    for run in closed:
        if run.counted and run.rps:
            by_scenario.setdefault(run.scenario, []).append(run.rps)
    assert len(closed) > sum(len(values) for values in by_scenario.values())  # some were invalid
    peak = max(float(np.median(values)) for values in by_scenario.values())
    assert inflated.peaks[target] == pytest.approx(peak)
    assert inflated.peaks[target] == pytest.approx(2.5 * view.peaks[target], rel=0.05)  # one run fewer
    with_invalid = max(
        float(np.median([run.rps for run in closed if run.scenario == scenario and run.rps]))
        for scenario in by_scenario
    )
    assert inflated.peaks[target] != pytest.approx(with_invalid)  # the invalid run did not count
    share = inflated.peak_share(target)
    assert share is not None and share < 0.5
    assert set(inflated.far_below_peak) == {target}
    note = inflated.far_below_peak[target]
    assert note in inflated.notes[target]
    assert f"capacity {share:.2f} of the closed-loop peak" in note
    # The p99 it states are the per-rate table's medians at the measured rates on either side of half the peak.
    half = peak / 2
    rows = [row for row in inflated.rows if row.cells[target].estimates.get("p99") is not None]
    below = max((row for row in rows if row.rate <= half), key=lambda row: row.rate)
    above = min((row for row in rows if row.rate > half), key=lambda row: row.rate)
    for row in (below, above):
        p99 = row.cells[target].estimates["p99"]
        assert p99 is not None
        assert f"{format_number(p99.median)} ms at {format_number(row.rate)} req/s" in note
    html = render_report(bundle.path).read_text(encoding="utf-8")
    assert "of the closed-loop peak" in _section(html)
    console = Console(record=True, width=400)
    print_summary(bundle, console)
    assert f"{target}: capacity {share:.2f} of the closed-loop peak" in console.export_text()
