"""The console summary: the report's own grouping and statistics as terminal tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from servingbench.cli import main
from servingbench.reports import load_bundle, print_summary
from servingbench.reports.capacity import capacity_views
from servingbench.reports.numbers import estimate_text
from servingbench.reports.verdict import verdicts

from .builders import FAST_A, FAST_B, FAST_MODEL, SLOW_C, BundleSpec, ScenarioSpec, build_bundle

WIDE = 200  # columns: nothing wraps, so every figure can be found whole


def _printed(bundle_dir: Path) -> str:
    console = Console(record=True, width=WIDE, color_system=None)
    print_summary(bundle_dir, console)
    return console.export_text()


def test_the_summary_prints_the_reports_figures_and_words(curve_bundle_dir: Path) -> None:
    text = _printed(curve_bundle_dir)
    bundle = load_bundle(curve_bundle_dir)
    (view,) = capacity_views(bundle)
    assert "capacity · fast · capacity · Poisson arrivals · p99 ≤ 5 ms" in text
    for outcome in view.outcomes:  # the very estimate the HTML shows, interval included
        assert estimate_text(outcome.estimate) in text
    slow = next(item for item in view.outcomes if item.config == SLOW_C.name)
    assert slow.comparison is not None and f"slower {slow.comparison.ratio:.2f}\N{MULTIPLICATION SIGN}" in text
    for group in verdicts(bundle):
        assert f"{group.held} · {group.info.name}" in text
        for verdict in group.metrics:
            for item in verdict.outcomes:
                assert estimate_text(item.estimate) in text
    for name in (FAST_A.name, FAST_B.name, SLOW_C.name):
        assert name in text
    assert "Bonferroni" in text and "no verdict below 5 pairs" in text
    assert "For the model 'fast'" in text  # the recommendations follow


def test_too_few_repetitions_print_no_verdict_word(tmp_path: Path) -> None:
    spec = BundleSpec(models=(FAST_MODEL,), scenarios=(ScenarioSpec("single-c8", concurrency=8),), repetitions=2)
    text = _printed(build_bundle(tmp_path, spec.with_(capacity=False, invalid_runs=False)))
    assert "no verdict" in text and "(n=2)" in text
    for word in ("slower", "faster", "equivalent"):
        assert word not in text.split("median [interval]")[0]


@pytest.mark.slow
def test_servingbench_report_prints_the_summary_then_the_page(
    curve_bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(curve_bundle_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(curve_bundle_dir / "index.html")
    text = "\n".join(out)
    assert "capacity · fast · capacity" in text and "For the model 'fast'" in text
    assert (curve_bundle_dir / "aggregates.csv").is_file()


def test_servingbench_report_of_a_bad_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "results.json" in captured.err
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "aggregates.json").exists()
