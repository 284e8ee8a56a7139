"""Statistics, the HTML decision report, and the comparison of two results bundles.

Reads a bundle directory only; never starts a process.
"""

from __future__ import annotations

from .bundle import Bundle, BundleError, load_bundle
from .compare import COMPARE_FILE, Comparison, compare_bundles, compare_metrics
from .metrics import COMPARED_METRICS
from .report import REPORT_FILE, render_report

__all__ = [
    "COMPARED_METRICS",
    "COMPARE_FILE",
    "REPORT_FILE",
    "Bundle",
    "BundleError",
    "Comparison",
    "compare_bundles",
    "compare_metrics",
    "load_bundle",
    "render_report",
]
