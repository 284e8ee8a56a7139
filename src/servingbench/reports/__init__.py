"""Statistics, the HTML decision report, the console summary, the aggregated figures, and the comparison of two
results bundles.

Reads a bundle directory only; never starts a process.
"""

from __future__ import annotations

from .aggregates import AGGREGATES_CSV, AGGREGATES_JSON, write_aggregates
from .bundle import Bundle, BundleError, load_bundle
from .compare import COMPARE_FILE, Comparison, compare_bundles, compare_metrics
from .console import print_summary
from .metrics import COMPARED_METRICS
from .report import REPORT_FILE, render_report

__all__ = [
    "AGGREGATES_CSV",
    "AGGREGATES_JSON",
    "COMPARED_METRICS",
    "COMPARE_FILE",
    "REPORT_FILE",
    "Bundle",
    "BundleError",
    "Comparison",
    "compare_bundles",
    "compare_metrics",
    "load_bundle",
    "print_summary",
    "render_report",
    "write_aggregates",
]
