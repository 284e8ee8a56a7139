"""The rendered report in a real browser: no console errors, no network, every plot visibly drawn."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from servingbench.reports import compare_bundles

from .browser import open_page

pytestmark = pytest.mark.browser

MIN_PLOT_SIZE_PX = 200  # CSS pixels, each side
MIN_INK_FRACTION = 0.02  # share of pixels that are not near-white
MIN_DISTINCT_COLOURS = 4  # after coarse quantisation: axes, text and several series
NEAR_WHITE = 235
QUANTUM = 32
FIRST_SCREEN_PX = 1400  # the headline (capacity and recommendation) fits in the first screen or so
HEADLINE_JS = """
(() => { const r = document.querySelector('#recommendation').getBoundingClientRect();
         return {top: r.top + scrollY, bottom: r.bottom + scrollY}; })()
"""
SVG_RECTS_JS = """
[...document.querySelectorAll('svg')].map(e => {
  const r = e.getBoundingClientRect();
  return {id: e.id, x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
          visible: getComputedStyle(e).visibility !== 'hidden' && getComputedStyle(e).display !== 'none'};
})
"""


def _ink(png: bytes) -> tuple[float, int]:
    """Fraction of non-white pixels and number of distinct (quantised) colours among them."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    inked = pixels[pixels.min(axis=1) < NEAR_WHITE]
    colours = np.unique(inked // QUANTUM, axis=0)
    return len(inked) / max(len(pixels), 1), len(colours)


def _assert_no_network(urls: list[str]) -> None:
    remote = [url for url in urls if not url.startswith(("file:", "data:", "about:"))]
    assert remote == [], f"the page requested network resources: {remote}"


@pytest.mark.parametrize("report", ["rendered_report", "rendered_search_report", "rendered_curve_report"])
def test_report_renders_cleanly_in_chromium(report: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    rendered: Path = request.getfixturevalue(report)
    url = rendered.resolve().as_uri()
    with open_page(url, tmp_path / "chromium-profile") as page:
        rects: list[dict[str, Any]] = page.evaluate(SVG_RECTS_JS)
        assert len(rects) >= 5, f"expected the report's plots, found {len(rects)} <svg> elements"
        for rect in rects:
            assert rect["visible"], f"plot {rect['id']} is hidden"
            assert rect["width"] >= MIN_PLOT_SIZE_PX and rect["height"] >= MIN_PLOT_SIZE_PX, rect
            clip = {key: float(rect[key]) for key in ("x", "y", "width", "height")}
            png = page.screenshot(clip)
            (tmp_path / f"{rect['id']}.png").write_bytes(png)
            ink, colours = _ink(png)
            assert ink >= MIN_INK_FRACTION, f"plot {rect['id']} looks blank: {ink:.1%} inked pixels"
            assert colours >= MIN_DISTINCT_COLOURS, f"plot {rect['id']} has only {colours} colours"
        top = page.screenshot({"x": 0, "y": 0, "width": 1400, "height": 2400})
        (tmp_path / "report-top.png").write_bytes(top)
        headline: dict[str, float] = page.evaluate(HEADLINE_JS)
        assert headline["bottom"] <= FIRST_SCREEN_PX, f"the headline ends below the first screen: {headline}"
        assert page.console_errors() == []
        _assert_no_network(page.requested_urls())


def test_compare_page_renders_cleanly_in_chromium(bundle_dir: Path, tmp_path: Path) -> None:
    page_path = compare_bundles(bundle_dir, bundle_dir, tmp_path / "compare.html")
    with open_page(page_path.resolve().as_uri(), tmp_path / "chromium-profile") as page:
        rows = page.evaluate("document.querySelectorAll('table.compare tbody tr').length")
        assert rows > 0
        ink, _ = _ink(page.screenshot({"x": 0, "y": 0, "width": 1400, "height": 900}))
        assert ink >= MIN_INK_FRACTION
        assert page.console_errors() == []
        _assert_no_network(page.requested_urls())
