"""Fixture bundles for the report tests, built programmatically with real HDR histograms."""

from __future__ import annotations

from pathlib import Path

import pytest

from .builders import CURVE_SPEC, SEARCH_SPEC, BundleSpec, build_bundle


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default fixture bundle: 3 configs (two of equal cost, one slower), 2 models, 5 repetitions.

    Shared by the session; tests that write into it only write ``index.html``.
    """
    return build_bundle(tmp_path_factory.mktemp("bundle"), BundleSpec())


@pytest.fixture(scope="session")
def rendered_report(bundle_dir: Path) -> Path:
    """``index.html`` rendered once from :func:`bundle_dir`."""
    from servingbench.reports import render_report

    return render_report(bundle_dir)


@pytest.fixture(scope="session")
def search_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with capacity searches whose steps are runs (:data:`SEARCH_SPEC`), beside closed and open scenarios.

    Shared by the session; tests that write into it only write ``index.html``.
    """
    return build_bundle(tmp_path_factory.mktemp("search-bundle"), SEARCH_SPEC)


@pytest.fixture(scope="session")
def rendered_search_report(search_bundle_dir: Path) -> Path:
    """``index.html`` rendered once from :func:`search_bundle_dir`."""
    from servingbench.reports import render_report

    return render_report(search_bundle_dir)


@pytest.fixture(scope="session")
def curve_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with capacity curves on a shared grid (:data:`CURVE_SPEC`: 6 repetitions, a generator-limited step
    re-run per FastAPI curve, queueing theory for the sync worker), beside closed and open scenarios.

    Shared by the session; tests that write into it only write ``index.html`` and the aggregates.
    """
    return build_bundle(tmp_path_factory.mktemp("curve-bundle"), CURVE_SPEC)


@pytest.fixture(scope="session")
def rendered_curve_report(curve_bundle_dir: Path) -> Path:
    """``index.html`` rendered once from :func:`curve_bundle_dir`."""
    from servingbench.reports import render_report

    return render_report(curve_bundle_dir)
