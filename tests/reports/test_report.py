"""The HTML report: one self-contained file, the verdict first and right, nothing hidden."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from servingbench.reports import BundleError, load_bundle, render_report
from servingbench.reports.bundle import Run
from servingbench.reports.tables import artifact_link, speed_text

from .builders import FAST_MODEL, HEAVY_MODEL, BundleSpec, ScenarioSpec, build_bundle

# slow: each test renders a whole report with its plots (make test-fast leaves it out)
pytestmark = pytest.mark.slow

MAX_REPORT_BYTES = 3_000_000
NETWORK_LOAD = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
SMALL = BundleSpec(
    models=(FAST_MODEL,), scenarios=(ScenarioSpec("single-c8", concurrency=8),), repetitions=3, capacity=False
)


def _outcome(html: str, model: str, scenario: str, config: str, metric: str) -> str:
    """The data-outcome of one config x metric cell in the verdict of one model x scenario."""
    group = re.search(
        rf'<article class="group"[^>]*data-model="{model}" data-scenario="{scenario}">(.*?)</article>', html, re.S
    )
    assert group is not None, f"no verdict for {model} / {scenario}"
    cell = re.search(rf'data-config="{config}" data-metric="{metric}" data-outcome="([a-z-]+)"', group.group(1))
    assert cell is not None, f"no {metric} verdict for {config}"
    return cell.group(1)


@pytest.fixture(scope="module")
def html(rendered_report: Path) -> str:
    return rendered_report.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(rendered_report: Path, html: str) -> None:
    assert rendered_report.name == "index.html"
    assert html.count("<svg") >= 5
    assert NETWORK_LOAD.search(html) is None
    assert "<script" not in html.lower()
    assert '<link rel="stylesheet"' not in html
    assert "@import" not in html
    assert rendered_report.stat().st_size < MAX_REPORT_BYTES


def test_verdict_same_cost_is_never_called_different_and_slower_config_is_slower(html: str) -> None:
    for scenario in ("single-c1", "single-c8"):
        for metric in ("rps", "p50", "p99"):
            assert _outcome(html, "fast", scenario, "flask-gthread", metric) in ("equivalent", "inconclusive")
            assert _outcome(html, "fast", scenario, "flask-sync", metric) == "slower"
            assert _outcome(html, "fast", scenario, "fastapi-uvicorn", metric) == "best"
    assert "Flask / gunicorn gthread is equivalent within ±5% at 1.00\u00d7 [0.9" in html
    assert re.search(
        r"Flask / gunicorn sync is slower at 0\.\d\d\u00d7 \[0\.\d\d\u20130\.\d\d\] "
        r"\(95% simultaneous, Bonferroni over 3 pairs; 5 pairs\)",
        html,
    )
    assert 'data-config="flask-sync" data-metric="rps" data-outcome="slower" data-pairs="5"' in html
    assert "no significant difference" not in html and "within noise" not in html


def test_open_loop_verdict_compares_latency_only(html: str) -> None:
    assert _outcome(html, "fast", "open-r300", "flask-sync", "p99") == "slower"
    with pytest.raises(AssertionError, match="no rps verdict"):
        _outcome(html, "fast", "open-r300", "flask-sync", "rps")


def test_recommendation_follows_the_verdicts(html: str) -> None:
    recommendation = html[html.index('id="recommendation"') : html.index("Per model and scenario")]
    for model in ("fast", "heavy"):
        assert (
            f"For the model &#39;{model}&#39;, not settled between FastAPI / uvicorn (def) and Flask / gunicorn "
            "gthread: run about"
        ) in recommendation
    assert "Predict takes 75% of the mean request latency at the lowest load" in recommendation
    assert "other grounds" not in recommendation and "within noise" not in recommendation


def test_method_states_the_test_the_correction_the_margin_and_the_limits(html: str) -> None:
    method = html[html.index('id="method"') : html.index("<h3>Server configs</h3>")]
    for text in (
        "paired t interval on the per-repetition log ratios",
        "Bonferroni",
        "k (k - 1) / 2",
        "equivalent within ±5%",
        "two one-sided tests",
        "Fewer than 5 pairs: no interval and no verdict",
        "What a figure cannot show",
        "order statistics",
    ):
        assert text in method.replace("&#34;", '"'), text


def test_capacity_is_the_headline_of_the_report(html: str) -> None:
    headline = html.index('id="headline"')
    assert headline < html.index('class="capacity-headline"') < html.index('id="recommendation"')
    assert html.index('id="recommendation"') < html.index('id="verdict"') < html.index('id="capacity"')
    first_screen = html[headline : html.index('id="recommendation"')]
    assert re.search(r"Flask / gunicorn sync</td><td class=\"num\"><span class=\"value\">[\d,.]+</span> "
                     r"<span class=\"ci\"[^>]*>\[[\d,.]+\u2013[\d,.]+\]</span>", first_screen)  # fmt: skip
    assert 'o-slower">slower</span>' in first_screen and 'o-equivalent">equivalent within ±5%' in first_screen
    capacity = html[html.index('id="capacity"') : html.index("<h3>Per model and scenario</h3>")]
    assert 'data-config="flask-sync" data-metric="capacity_rps" data-outcome="slower"' in capacity
    assert 'data-config="flask-gthread" data-metric="capacity_rps" data-outcome="equivalent"' in capacity


def test_how_it_was_measured_hides_nothing(html: str) -> None:
    measured = html[html.index('id="measured"') : html.index('id="plots"')]
    for text in (
        "every server config on CPU 0, the load generator on CPU 1",
        "Synthetic CPU @ 3.0GHz",
        "fastapi",
        "0.165.0",
        "12345",
        "2 s",
        "keep-alive",
        "load generator saturated (97% CPU)",
        "error rate 12.0% over the 1% limit",
    ):
        assert text in measured, text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in measured  # the log tail is escaped, not executed


def test_plots_have_titles_axes_and_legends(html: str) -> None:
    for chart in ("chart-throughput", "chart-latency", "chart-spectrum-fast", "chart-breakdown", "chart-resources"):
        assert f'<svg id="{chart}"' in html, chart
    assert '<svg id="chart-open-fast"' in html
    for label in ("throughput (req/s)", "latency (ms)", "concurrency (users)", "percentile", "99.9%", "µs", "MB"):
        assert label in html, label
    assert "Flask / gunicorn sync" in html[html.index('id="plots"') :]


def test_tables_link_each_runs_locust_report(bundle_dir: Path, html: str) -> None:
    links = re.findall(r'<a href="(runs/[^"]+/locust\.html)">', html)
    assert len(links) == len(re.findall(r'<tr data-run="', html[html.index('class="runs"') :]))
    assert all((bundle_dir / link).is_file() for link in links)
    errors = html[html.index("Errors by kind") : html.index("Every run, in executed order")]
    assert "HTTP 503" in errors and ">100<" in errors


def test_rendering_again_gives_the_same_file(bundle_dir: Path, rendered_report: Path) -> None:
    before = rendered_report.read_bytes()
    assert render_report(bundle_dir).read_bytes() == before


def test_incomplete_bundle_says_so_first(tmp_path: Path) -> None:
    html = render_report(build_bundle(tmp_path, SMALL.with_(complete=False))).read_text()
    assert 'id="incomplete"' in html
    assert html.index("INCOMPLETE") < html.index('id="verdict"')


def test_one_repetition_is_not_enough_for_an_interval(tmp_path: Path) -> None:
    spec = SMALL.with_(repetitions=1, invalid_runs=False)
    html = render_report(build_bundle(tmp_path, spec)).read_text()
    assert _outcome(html, "fast", "single-c8", "flask-sync", "rps") == "range"
    assert "(range of 1 repetition)" in html and "no verdict" in html
    assert 'id="capacity"' not in html
    assert "None: every run was valid." in html


def test_heavy_model_twins_are_not_settled_and_say_what_would_settle_them(tmp_path: Path) -> None:
    spec = BundleSpec(models=(HEAVY_MODEL,), scenarios=SMALL.scenarios, repetitions=5, capacity=False)
    html = render_report(build_bundle(tmp_path, spec)).read_text()
    assert _outcome(html, "heavy", "single-c8", "flask-gthread", "rps") == "inconclusive"
    advice = r'not settled</span><br><span class="ratio">[^<]+</span><span class="pairs">[^<]+; 5 pairs</span>'
    advice += r'<span class="pairs">run about \d+ more repetitions</span>'
    assert re.search(advice, html)
    assert _outcome(html, "heavy", "single-c8", "flask-sync", "rps") == "slower"
    assert "slower (by less than the ±5% margin)" in html


def test_bundle_with_no_valid_runs_still_renders(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path, SMALL.with_(repetitions=0))
    html = render_report(bundle).read_text()
    assert "No valid runs in this bundle" in html
    assert "did not count" in html


def test_bad_bundle_raises_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        render_report(tmp_path)
    assert not (tmp_path / "index.html").exists()


def test_corrupt_histogram_is_a_bundle_error_naming_the_run(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path, SMALL.with_(invalid_runs=False))
    doc = json.loads((bundle / "results.json").read_text())
    doc["runs"][1]["histograms"]["total"] = "HISTFAAAAgarbage"
    (bundle / "results.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=rf"run {doc['runs'][1]['id']}: histograms.total"):
        render_report(bundle)


def test_missing_or_unsafe_artifacts_are_not_linked(tmp_path: Path) -> None:
    bundle_dir = build_bundle(tmp_path, SMALL.with_(invalid_runs=False))
    bundle = load_bundle(bundle_dir)
    run = bundle.runs[0]
    assert artifact_link(bundle, run, "locust_html") == f"runs/{run.id}/locust.html"
    for path in ("../outside.html", "/etc/passwd", "https://example.com/x.html", f"runs/{run.id}/nope.html"):
        assert artifact_link(bundle, dataclasses.replace(run, artifacts={"locust_html": path}), "locust_html") is None
    (bundle_dir / "runs" / run.id / "locust.html").unlink()
    html = render_report(bundle_dir).read_text()
    assert "no Locust report" in html


def test_the_report_names_each_model_and_an_imported_models_schema(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path, SMALL.with_(invalid_runs=False))
    doc = json.loads((bundle / "results.json").read_text())
    doc["models"]["fast"].update(
        spec="models/churn.skops",
        name="churn",
        version="3",
        kind="sklearn",
        input={"named": True, "columns": [
            {"name": "age", "kind": "integer", "nullable": False},
            {"name": "city", "kind": "category", "nullable": True, "categories": ["Oslo", "Lima", "Pune"]},
        ]},
        output={"method": "predict_proba", "kind": "probabilities", "classes": ["no", "yes"]},
        sample_source="model",
    )  # fmt: skip
    (bundle / "results.json").write_text(json.dumps(doc))
    html = render_report(bundle).read_text()
    models = html[html.index('id="models"') : html.index('id="method"')]
    assert "churn v3, sha256 2fad07866ee7" in models and "models/churn.skops" in models
    assert "2 named columns (1 integer, 1 category)" in models
    assert "<code>city</code>: category, 3 categories, may be null" in models
    assert "class probabilities over 2 classes (predict_proba)" in models
    assert "drawn from what the model records" in models and "not real samples" in models
    headline = html[html.index('id="headline"') : html.index('id="recommendation"')]
    assert "churn v3, sha256 2fad07866ee7" in headline and "2 named columns" in headline


def test_a_bundled_model_is_named_and_its_rows_are_its_own(rendered_report: Path) -> None:
    html = rendered_report.read_text()
    models = html[html.index('id="models"') : html.index('id="method"')]
    assert '<tr data-model="fast">' in models and '<tr data-model="heavy">' in models
    assert "a list of 10 numbers per row" in models and "the model&#39;s own example rows" in models


def test_the_machine_s_speed_is_stated_where_runs_recorded_it() -> None:
    runs = [Run(f"r{i}", "c", "m", "s", 0, True, speed_probe_us=value) for i, value in enumerate((100.0, 110.0, 90.0))]
    text = speed_text([*runs, Run("r9", "c", "m", "s", 0, True)])
    assert text is not None and text.startswith("speed probe median 100 us over 3 runs") and "higher is slower" in text
    assert "(an older probe: only with runs of it)" in text
    with_kind = speed_text(runs, "load-2000it-0.1s")
    assert with_kind is not None and with_kind.endswith("(probe load-2000it-0.1s: only with runs of the same probe)")
    assert speed_text([Run("r0", "c", "m", "s", 0, True)]) is None
    assert "memory probe" not in with_kind  # no run recorded one
    both = [
        Run(f"r{i}", "c", "m", "s", 0, True, speed_probe_us=100.0, memory_probe_us=value)
        for i, value in enumerate((2000.0, 2200.0, 2100.0, 2400.0))
    ]
    text = speed_text(both, "load-2000it-0.1s", "chase-5000of2000000-0.1s")
    assert text is not None and text.startswith("speed probe median 100 us over 4 runs")
    assert "; memory probe median 2150 us over 4 runs (P10 2030, P90 2340, probe chase-5000of2000000-0.1s)" in text
