"""A check's result for people and machines: a terminal table, Markdown (the CI job summary), JSON and HTML.

Every output says what was compared, the status with its one-line reason, one row per figure and the notes; the
Markdown and HTML end with how the gate decides.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from servingbench.files import dumps_finite, write_atomic

from .figures import MIN_UNITS
from .result import CheckResult, GateRow

__all__ = [
    "CHECK_FORMAT",
    "CHECK_VERSION",
    "HTML_FILE",
    "JSON_FILE",
    "MARKDOWN_FILE",
    "markdown",
    "render_html",
    "terminal_table",
    "to_json",
    "write_outputs",
]

MARKDOWN_FILE = "check.md"
JSON_FILE = "check.json"
HTML_FILE = "check.html"
CHECK_FORMAT = "servingbench-check"
CHECK_VERSION = 1
STATUS_TITLE = {"pass": "no regression", "regression": "REGRESSION", "no verdict": "no verdict"}
STATUS_ICON = {"pass": ":white_check_mark:", "regression": ":x:", "no verdict": ":warning:"}
VERDICT_STYLE = {"regression": "bold red", "improvement": "green", "inconclusive": "yellow", "too few": "yellow"}
MODE_TITLE = {"ab": "base vs head, interleaved in one run", "baseline": "against the committed baseline"}


def _number(row: GateRow, value: float | None) -> str:
    return "-" if value is None else f"{value:.{row.metric.decimals}f} {row.metric.unit}"


def _percent(log_value: float | None) -> str:
    return "-" if log_value is None else f"{math.expm1(log_value):+.1%}"


def _change(result: CheckResult, row: GateRow) -> str:
    """The cost change with its interval (A/B) or beside the A/A prediction interval (baseline)."""
    if row.low is None or row.high is None:
        return _percent(row.cost_log)
    interval = f"[{_percent(row.low)}, {_percent(row.high)}]"
    return f"{_percent(row.cost_log)} {interval}" if result.mode == "ab" else f"{_percent(row.cost_log)} vs {interval}"


def _headers(result: CheckResult) -> tuple[str, ...]:
    if result.mode == "ab":
        return ("figure", "base", "head", "cost change [interval]", "threshold", "units", "p (adj.)", "verdict")
    return ("figure", "baseline", "this run", "cost change vs A/A interval", "threshold", "runs", "p (adj.)", "verdict")


def _cells(result: CheckResult, row: GateRow) -> list[str]:
    more = f" (~{row.more_units} units would settle it)" if row.more_units else ""
    return [
        f"{row.key.model} {row.key.scenario} {row.metric.label}",
        _number(row, row.base),
        _number(row, row.head),
        _change(result, row),
        f"{row.threshold:.0%} ({row.threshold_source})",
        str(row.n),
        "-" if row.p_adjusted is None else f"{row.p_adjusted:.2g}",
        row.verdict + more,
    ]


def _compared(result: CheckResult) -> str:
    context = result.context
    base = context.get("base") or {}
    head = context.get("head") or {}
    parts = [MODE_TITLE[result.mode]]
    if base:
        parts.append(f"base {str(base.get('commit', ''))[:12]} ({base.get('ref')})")
    if head.get("commit"):
        dirty = " with uncommitted changes" if head.get("dirty") else ""
        parts.append(f"head {str(head['commit'])[:12]}{dirty}")
    if context.get("baseline"):
        parts.append(f"baseline {context['baseline']}")
    if context.get("bundle"):
        parts.append(f"run {context['bundle']}")
    return "; ".join(parts)


def _legend(result: CheckResult) -> str:
    level = "" if result.family_level is None else f" ({result.family_level:.2%} each)"
    if result.mode == "ab":
        return (
            f"Each unit (a {result.unit}) gives one log ratio head / base; the interval is a paired t interval on "
            f"them, Bonferroni-corrected over the {len(result.rows)} figures so that all hold together at 95%{level}. "
            "A **regression** is significant (the interval lies above 0) **and** larger than the material threshold "
            "(the metric's default, or one run-to-run standard deviation from `servingbench calibrate` on this "
            f"machine when larger). Fewer than {MIN_UNITS} units: no verdict. Cost change: + is more time or CPU per "
            "request (for throughput, base / head - 1). See docs/bench-ci.md."
        )
    return (
        "This run's value (its median over repetitions) against the baseline's A/A runs on this machine: the "
        f"interval is where one more run of unchanged code falls, Bonferroni-corrected over the figures{level}. "
        "A **regression** lies above that interval **and** beyond the material threshold. See docs/bench-ci.md."
    )


def terminal_table(result: CheckResult) -> Table:
    """The rows as a terminal table, titled with the status."""
    table = Table(*_headers(result), title=f"servingbench check: {STATUS_TITLE[result.status]}", box=box.SIMPLE)
    for row in result.rows:
        table.add_row(*_cells(result, row), style=VERDICT_STYLE.get(row.verdict))
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(result: CheckResult) -> str:
    """GitHub-flavoured Markdown, fit for ``$GITHUB_STEP_SUMMARY``."""
    lines = [
        f"## {STATUS_ICON[result.status]} servingbench check: {STATUS_TITLE[result.status]}",
        "",
        f"**{_md(result.reason)}** (exit {result.exit_code})",
        "",
        _md(_compared(result)) + ".",
    ]
    if result.rows:
        headers = _headers(result)
        lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in result.rows:
            cells = [_md(cell) for cell in _cells(result, row)]
            if row.verdict == "regression":
                cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
    if result.notes:
        lines += ["", "Notes:", *(f"- {_md(note)}" for note in result.notes)]
    lines += ["", _legend(result)]
    return "\n".join(lines) + "\n"


def to_json(result: CheckResult) -> dict[str, Any]:
    """The result as the ``check.json`` document."""
    return {
        "format": CHECK_FORMAT,
        "version": CHECK_VERSION,
        "mode": result.mode,
        "status": result.status,
        "exit_code": result.exit_code,
        "reason": result.reason,
        "unit": result.unit,
        "family_level": result.family_level,
        "rows": [row.to_json() for row in result.rows],
        "notes": list(result.notes),
        "context": result.context,
    }


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}table{border-collapse:collapse}"
    "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}.regression{color:#b00;font-weight:bold}"
    ".improvement{color:#070}.pass{color:#070}.no-verdict{color:#a60}.muted{color:#666}"
)


def render_html(result: CheckResult) -> str:
    """One self-contained HTML page (no script, no network)."""
    esc: Callable[[str], str] = html.escape
    status_class = result.status.replace(" ", "-")
    head = "".join(f"<th>{esc(cell)}</th>" for cell in _headers(result))
    body = "".join(
        f'<tr class="{esc(row.verdict.replace(" ", "-"))}">'
        + "".join(f"<td>{esc(cell)}</td>" for cell in _cells(result, row))
        + "</tr>"
        for row in result.rows
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in result.notes)
    legend = esc(_legend(result)).replace("**", "")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>servingbench check: '
        f"{esc(STATUS_TITLE[result.status])}</title><style>{CSS}</style></head><body>"
        f'<h1 class="{status_class}">servingbench check: {esc(STATUS_TITLE[result.status])}</h1>'
        f"<p><strong>{esc(result.reason)}</strong> (exit {result.exit_code})</p>"
        f'<p class="muted">{esc(_compared(result))}</p>'
        + (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if result.rows else "")
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + f'<p class="muted">{legend}</p></body></html>\n'
    )


def write_outputs(result: CheckResult, out_dir: Path) -> dict[str, Path]:
    """Write ``check.md``, ``check.json`` and ``check.html`` into ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "markdown": write_atomic(out_dir / MARKDOWN_FILE, markdown(result)),
        "json": write_atomic(out_dir / JSON_FILE, dumps_finite(to_json(result))),
        "html": write_atomic(out_dir / HTML_FILE, render_html(result)),
    }
