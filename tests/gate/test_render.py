"""The outputs of a check: Markdown for the job summary, strict JSON, one escaped HTML page."""

from __future__ import annotations

import json
import math

import pytest

from servingbench.files import dumps_finite
from servingbench.gate import CheckResult, FigureKey, GateRow
from servingbench.gate.render import markdown, render_html, terminal_table, to_json
from servingbench.gate.result import no_verdict

ROW = GateRow(
    FigureKey("my|model", "single-c8", "cpu_us_per_request"),
    650.0,
    760.0,
    20,
    math.log(1.17),
    math.log(1.12),
    math.log(1.22),
    0.0004,
    0.05,
    "default",
    "regression",
)
RESULT = CheckResult(
    "ab",
    "regression",
    "regression in 1 of 1 figures; worst: <b>",
    (ROW,),
    ("paired unit: repetition (both servers stay up)",),
    "repetition",
    0.95,
    {"base": {"commit": "a" * 40, "ref": "origin/main"}, "head": {"commit": "b" * 40, "dirty": True}},
)


def test_markdown_escapes_table_cells_and_bolds_the_regression() -> None:
    text = markdown(RESULT)
    assert text.startswith("## :x: servingbench check: REGRESSION")
    assert "my\\|model single-c8 server CPU per request" in text
    assert "| +17.0% [+12.0%, +22.0%] |" in text and "**regression**" in text
    assert "base aaaaaaaaaaaa (origin/main); head bbbbbbbbbbbb with uncommitted changes" in text


def test_json_is_strict_and_carries_every_row() -> None:
    doc = json.loads(dumps_finite(to_json(RESULT)))
    assert doc["exit_code"] == 1
    assert doc["rows"][0]["cost_change"] == pytest.approx(0.17)
    assert doc["rows"][0]["verdict"] == "regression" and doc["context"]["base"]["ref"] == "origin/main"


def test_html_is_one_escaped_page() -> None:
    page = render_html(RESULT)
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "worst: &lt;b&gt;" in page and "<b>" not in page.replace("<body>", "")


def test_a_result_without_rows_still_renders() -> None:
    result = no_verdict("baseline", "the baseline was made on machine x, this run is on y")
    assert result.exit_code == 3
    assert "no verdict: the baseline was made" in markdown(result)
    assert "<table>" not in render_html(result)
    assert terminal_table(result).row_count == 0
