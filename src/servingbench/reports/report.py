"""Render the HTML decision report of one bundle: verdict first, then how it was measured, plots, tables.

The page is one self-contained file (inline CSS and SVG, no JavaScript, no network) built from the bundle
alone, so it can be re-rendered at any time.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import Bundle, load_bundle
from .charts import render_charts
from .html import environment, write_atomic
from .metrics import METRICS, VERDICT_METRICS
from .stats import MIN_REPETITIONS_FOR_INTERVAL
from .tables import SUMMARY_METRICS, error_rows, measurement, run_rows, search_rows, summary_rows
from .verdict import capacity_tables, plan_margin, recommendations, verdicts

__all__ = ["REPORT_FILE", "REPORT_TEMPLATE", "build_report_html", "render_report"]

REPORT_FILE = "index.html"
REPORT_TEMPLATE = "report.html.j2"


def build_report_html(bundle: Bundle) -> str:
    """The report page for a loaded bundle, as HTML text."""
    groups = verdicts(bundle)
    return (
        environment()
        .get_template(REPORT_TEMPLATE)
        .render(
            bundle=bundle,
            capacity=capacity_tables(bundle),
            recommendations=recommendations(bundle, groups),
            groups=groups,
            verdict_metrics=[METRICS[name] for name in VERDICT_METRICS],
            margin=plan_margin(bundle),
            min_pairs=MIN_REPETITIONS_FOR_INTERVAL,
            measured=measurement(bundle),
            configs=list(bundle.configs.values()),
            invalid_runs=bundle.invalid_runs,
            charts=render_charts(bundle),
            summary=summary_rows(bundle),
            summary_metrics=[METRICS[name] for name in SUMMARY_METRICS],
            errors=error_rows(bundle),
            searches=search_rows(bundle),
            runs=run_rows(bundle),
        )
    )


def render_report(bundle_dir: Path | str) -> Path:
    """Write ``bundle_dir/index.html`` from the bundle and return its path. Raises ``BundleError`` on a bad bundle."""
    bundle = load_bundle(bundle_dir)
    return write_atomic(bundle.path / REPORT_FILE, build_report_html(bundle))
