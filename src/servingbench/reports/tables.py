"""Rows of the report's tables: the summary, errors by kind, every run with its artifacts, how it was measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import PurePosixPath
from typing import Any

from .bundle import Bundle, Run
from .metrics import metric_samples
from .stats import Estimate, median_ci
from .verdict import ScenarioInfo, config_order, group_runs, scenario_info

__all__ = [
    "SUMMARY_METRICS",
    "ErrorRow",
    "Measurement",
    "RunRow",
    "SummaryRow",
    "artifact_link",
    "error_rows",
    "measurement",
    "run_rows",
    "summary_rows",
]

SUMMARY_METRICS = ("rps", "p50", "p90", "p99", "p999", "cpu_us_per_request", "rss_mb_per_worker")
ENVIRONMENT_KEYS = (
    "cpu_model",
    "logical_cpus",
    "usable_cpus",
    "cpu_quota",
    "server_cpus",
    "load_cpus",
    "blas_threads",
    "hostname",
    "kernel",
    "platform",
    "python",
    "git_revision",
    "git_dirty",
    "load_avg_before",
    "load_avg_after",
    "fingerprint",
)


@dataclass(frozen=True)
class SummaryRow:
    """One config x model x scenario: medians over valid repetitions with intervals (``None`` = not recorded)."""

    info: ScenarioInfo
    config: str
    label: str
    valid: int
    total: int
    estimates: Mapping[str, Estimate | None]
    requests: int
    errors: int


@dataclass(frozen=True)
class ErrorRow:
    """Errors of one kind summed over every run (valid or not) of one config x model x scenario."""

    model: str
    scenario: str
    label: str
    kind: str
    count: int
    requests: int


@dataclass(frozen=True)
class RunRow:
    """One run as listed in the report, with relative links to its artifacts (``None`` when missing)."""

    run: Run
    label: str
    locust_html: str | None
    server_log: str | None


@dataclass(frozen=True)
class Measurement:
    """How the runs were measured, as stated in the bundle."""

    fairness: tuple[str, ...]
    server_cpus: str
    load_cpus: str
    environment: tuple[tuple[str, str], ...]
    packages: tuple[tuple[str, str], ...]
    warmup_s: str
    duration_s: str
    repetitions: str
    seed: str
    preset: str
    order: str


def summary_rows(bundle: Bundle) -> list[SummaryRow]:
    """Per model x scenario x config, valid-run medians of :data:`SUMMARY_METRICS` with intervals."""
    order = config_order(bundle)
    rows: list[SummaryRow] = []
    for by_config in group_runs(bundle.runs, order).values():
        for config, runs in by_config.items():
            valid = [run for run in runs if run.valid and run.status == "ok"]
            estimates: dict[str, Estimate | None] = {}
            for metric in SUMMARY_METRICS:
                samples = metric_samples(valid, metric)
                estimates[metric] = median_ci(samples) if samples else None
            rows.append(
                SummaryRow(
                    info=scenario_info(runs[0]),
                    config=config,
                    label=bundle.label(config),
                    valid=len(valid),
                    total=len(runs),
                    estimates=estimates,
                    requests=sum(run.requests for run in runs),
                    errors=sum(run.errors for run in runs),
                )
            )
    return rows


def error_rows(bundle: Bundle) -> list[ErrorRow]:
    """Errors by kind, summed over all runs of each config x model x scenario; empty when there were none."""
    rows: list[ErrorRow] = []
    for (model, scenario), by_config in group_runs(bundle.runs, config_order(bundle)).items():
        for config, runs in by_config.items():
            counts: dict[str, int] = {}
            for run in runs:
                for kind, count in run.errors_by_kind.items():
                    counts[kind] = counts.get(kind, 0) + count
            requests = sum(run.requests for run in runs)
            for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
                rows.append(ErrorRow(model, scenario, bundle.label(config), kind, count, requests))
    return rows


def artifact_link(bundle: Bundle, run: Run, key: str) -> str | None:
    """The artifact's path relative to the bundle, if it is a plain relative path to an existing file."""
    raw = run.artifacts.get(key)
    if not raw:
        return None
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        return None
    return str(path) if (bundle.path / path).is_file() else None


def run_rows(bundle: Bundle) -> list[RunRow]:
    """Every run in executed order (runs without an order last), with artifact links."""
    runs = sorted(bundle.runs, key=lambda run: (run.order is None, run.order or 0, run.id))
    return [
        RunRow(
            run,
            bundle.label(run.config),
            artifact_link(bundle, run, "locust_html"),
            artifact_link(bundle, run, "server_log"),
        )
        for run in runs
    ]


def _display(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) if value else "none"
    return str(value)


def _span(values: Sequence[float], unit: str) -> str:
    if not values:
        return "not recorded"
    low, high = min(values), max(values)
    return f"{low:g} {unit}" if low == high else f"{low:g} to {high:g} {unit}"


def _repetitions(runs: Sequence[Run]) -> str:
    """Valid repetitions per config x model x scenario, and all runs when some did not count."""
    valid: dict[tuple[str, str, str], int] = {}
    total: dict[tuple[str, str, str], int] = {}
    for run in runs:
        key = (run.config, run.model, run.scenario)
        total[key] = total.get(key, 0) + 1
        valid[key] = valid.get(key, 0) + (1 if run.valid and run.status == "ok" else 0)
    if not total:
        return "no runs"
    text = _span(sorted(set(valid.values())), "valid per config x model x scenario")
    if valid != total:
        text += f" ({_span(sorted(set(total.values())), 'runs including invalid ones')})"
    return text


def _order_text(runs: Sequence[Run]) -> str:
    ordered = sorted((run for run in runs if run.order is not None), key=lambda run: run.order or 0)
    if len(ordered) < 2:
        return "single run" if ordered else "execution order not recorded"
    switches = sum(1 for before, after in pairwise(ordered) if before.config != after.config)
    return f"{len(ordered)} runs in recorded order; the config changed {switches} times between consecutive runs"


def measurement(bundle: Bundle) -> Measurement:
    """The measurement conditions stated by the bundle: fairness rules, environment, versions, timing, order."""
    env: Mapping[str, Any] = bundle.environment
    environment = tuple((key, _display(env.get(key))) for key in ENVIRONMENT_KEYS if key in env)
    extra = tuple(
        (key, _display(value)) for key, value in env.items() if key not in ENVIRONMENT_KEYS and key != "packages"
    )
    packages_raw = env.get("packages")
    packages = (
        tuple(sorted((str(k), str(v)) for k, v in packages_raw.items())) if isinstance(packages_raw, dict) else ()
    )
    return Measurement(
        fairness=bundle.fairness,
        server_cpus=_display(env.get("server_cpus")),
        load_cpus=_display(env.get("load_cpus")),
        environment=environment + extra,
        packages=packages,
        warmup_s=_span([run.warmup_s for run in bundle.runs if run.warmup_s is not None], "s"),
        duration_s=_span([round(run.duration_s, 2) for run in bundle.runs if run.duration_s is not None], "s"),
        repetitions=_repetitions(bundle.runs),
        seed=_display(bundle.seed),
        preset=_display(bundle.preset),
        order=_order_text(bundle.runs),
    )
