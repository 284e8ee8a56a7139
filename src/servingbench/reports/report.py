"""Render the HTML decision report of one bundle: the headline first (capacity with intervals and the verdicts'
words), then the verdict in full, where the time goes, how it was measured, plots and tables.

The page is one self-contained file (inline CSS and SVG, no JavaScript, no network) built from the bundle
alone, so it can be re-rendered at any time. Rendering also writes the aggregated figures beside it
(:mod:`servingbench.reports.aggregates`).
"""

from __future__ import annotations

from pathlib import Path

from servingbench.files import write_atomic

from .aggregates import write_aggregates
from .bundle import Bundle, load_bundle
from .capacity import capacity_views, grid_spacing
from .charts import capacity_chart, config_styles, render_charts, time_breakdown_chart
from .html import environment
from .metrics import METRICS, VERDICT_METRICS
from .stats import MIN_REPETITIONS_FOR_INTERVAL
from .tables import SUMMARY_METRICS, error_rows, measurement, model_facts, run_rows, search_rows, summary_rows
from .tax import tax_tables
from .verdict import plan_margin, recommendations, verdicts

__all__ = ["REPORT_FILE", "REPORT_TEMPLATE", "build_report_html", "render_report"]

REPORT_FILE = "index.html"
REPORT_TEMPLATE = "report.html.j2"


def build_report_html(bundle: Bundle) -> str:
    """The report page for a loaded bundle, as HTML text."""
    groups = verdicts(bundle)
    views = capacity_views(bundle)
    styles = config_styles(bundle)
    models = list(dict.fromkeys([*(view.model for view in views), *(run.model for run in bundle.valid_runs)]))
    curve_charts = {
        model: chart for model in models if (chart := capacity_chart(bundle, styles, model, views)) is not None
    }
    return (
        environment()
        .get_template(REPORT_TEMPLATE)
        .render(
            bundle=bundle,
            views=views,
            curve_charts=curve_charts,
            grid_spacing=grid_spacing,
            recommendations=recommendations(bundle, groups),
            groups=groups,
            verdict_metrics=[METRICS[name] for name in VERDICT_METRICS],
            margin=plan_margin(bundle),
            min_pairs=MIN_REPETITIONS_FOR_INTERVAL,
            models=model_facts(bundle),
            tax=tax_tables(bundle),
            breakdown=time_breakdown_chart(bundle),
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
    """Write ``bundle_dir/index.html`` (and ``aggregates.json``, ``aggregates.csv``) from the bundle and return the
    page's path. Raises ``BundleError`` on a bad bundle, before anything is written."""
    bundle = load_bundle(bundle_dir)
    html = build_report_html(bundle)
    write_aggregates(bundle)
    return write_atomic(bundle.path / REPORT_FILE, html)
