"""Where the time goes: which configs pair up (framework tax, idiomatic cost, framework vs framework), the CPU
difference and the ratios with their intervals, and the section of the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from servingbench.reports import load_bundle, render_report
from servingbench.reports.tax import TaxTable, tax_pairs, tax_tables

from .builders import (
    ASGI_FLOOR,
    FAST_A,
    FAST_B,
    FAST_GRANIAN,
    FAST_IDIOMATIC,
    FAST_MODEL,
    FLASK_GRANIAN,
    TAX_SPEC,
    WSGI_FLOOR,
    ConfigSpec,
    build_bundle,
)

CPU_US_PER_MS = 900.0  # the builders' server CPU per request: 0.9 ms of CPU per ms of service time


@pytest.fixture(scope="module")
def tax_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("tax"), TAX_SPEC)


@pytest.fixture(scope="module")
def table(tax_bundle: Path) -> TaxTable:
    (found,) = tax_tables(load_bundle(tax_bundle))
    return found


def _cpu_us(config: ConfigSpec) -> float:
    return round((FAST_MODEL.validate_ms + FAST_MODEL.predict_ms + config.overhead_ms) * CPU_US_PER_MS, 1)


def test_pairs_differ_in_the_framework_only(tax_bundle: Path) -> None:
    pairs = [(pair.kind, pair.config, pair.baseline) for pair in tax_pairs(load_bundle(tax_bundle))]
    assert pairs == [
        ("framework tax", FAST_A.name, ASGI_FLOOR.name),
        ("framework tax", FAST_B.name, WSGI_FLOOR.name),
        ("idiomatic cost", FAST_IDIOMATIC.name, FAST_A.name),
        ("framework vs framework", FAST_GRANIAN.name, FLASK_GRANIAN.name),
    ]  # no floor on Granian, no partner for the gthread Flask but its floor, different servers never pair


def test_a_different_in_flight_limit_is_no_pair(tmp_path: Path) -> None:
    threads = ConfigSpec(
        "wsgi-gthread", "WSGI floor / gthread", "wsgi", "gunicorn-gthread", "def", 0.2, threads=40, role="floor"
    )
    spec = TAX_SPEC.with_(configs=(FAST_B, threads))
    assert tax_pairs(load_bundle(build_bundle(tmp_path, spec))) == []


def test_the_tax_is_the_paired_cpu_difference_with_ratios_and_words(table: TaxTable) -> None:
    assert table.family.size == 4 and table.family.label == "95% simultaneous, Bonferroni over 4 pairs shown"
    fastapi = table.cells[0]
    assert fastapi.pair.config == FAST_A.name
    difference = fastapi.cpu_difference
    assert difference is not None and difference.pairs == TAX_SPEC.repetitions
    assert difference.mean == pytest.approx(_cpu_us(FAST_A) - _cpu_us(ASGI_FLOOR), abs=0.2)
    assert difference.low == pytest.approx(difference.mean) and difference.high == pytest.approx(difference.mean)
    assert fastapi.cpu_words[0] == "costlier" and fastapi.throughput_words[0] == "slower"
    assert fastapi.cpu_ratio is not None and fastapi.cpu_ratio.ratio == pytest.approx(
        _cpu_us(FAST_A) / _cpu_us(ASGI_FLOOR), rel=1e-3
    )
    idiomatic = table.cells[2]
    assert idiomatic.pair.kind == "idiomatic cost" and idiomatic.cpu_words[0] == "costlier"
    granian = table.cells[3]  # FastAPI is cheaper than Flask on Granian in this fixture
    assert granian.cpu_words[0] == "cheaper" and granian.throughput_words[0] == "faster"


def test_below_five_repetitions_there_is_a_range_and_no_word(tmp_path: Path) -> None:
    (table,) = tax_tables(load_bundle(build_bundle(tmp_path, TAX_SPEC.with_(repetitions=3))))
    cell = table.cells[0]
    assert cell.cpu_difference is not None and not cell.cpu_difference.has_interval
    assert cell.cpu_words[:2] == ("range", "no verdict") and cell.throughput_words[0] == "range"


def test_the_section_shows_every_pair_and_says_which_interval(tax_bundle: Path) -> None:
    html = render_report(tax_bundle).read_text()
    section = html[html.index('id="time"') : html.index('id="measured"')]
    rows = re.findall(r'<tr data-kind="([^"]+)" data-config="([^"]+)" data-baseline="([^"]+)">', section)
    assert len(rows) == 4 and rows[0] == ("framework tax", FAST_A.name, ASGI_FLOOR.name)
    assert "paired t on differences" in section and "Bonferroni over 4 pairs shown" in section
    assert 'data-metric="cpu_us_per_request" data-outcome="costlier"' in section
    assert "+108.0 [+108.0 to +108.0]" in section
    assert 'id="figure-chart-breakdown"' in section  # the Server-Timing split sits in this section


def test_a_bundle_without_pairs_says_where_to_find_them(rendered_report: Path) -> None:
    html = rendered_report.read_text()
    section = html[html.index('id="time"') : html.index('id="measured"')]
    assert 'id="no-pairs"' in section and "examples/framework-tax.toml" in section
