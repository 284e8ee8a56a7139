"""The report's plots, drawn with matplotlib and returned as inline SVG text.

Every config keeps one style across plots: an Okabe-Ito colour, a marker, a line style and a bar hatch,
so the legend stays readable without colour vision. Medians over repetitions are drawn as lines and their
order-statistic interval (:func:`servingbench.reports.stats.median_interval`, from 5 repetitions) as a band.
No pyplot: figures are plain ``Figure`` objects, so there is no global state.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import LineStyleType, RcKeyType

from .bundle import Bundle, BundleError, Run
from .capacity import CURVE_METRICS, THEORY_CAVEAT, CapacityView
from .metrics import LATENCY_METRICS, METRICS, metric_samples
from .stats import Estimate, decode_histogram, median_interval, merge_histograms, nines, percentile_spectrum
from .verdict import config_order, users_text

__all__ = [
    "OKABE_ITO",
    "Chart",
    "ConfigStyle",
    "capacity_chart",
    "config_styles",
    "open_loop_chart",
    "render_charts",
    "time_breakdown_chart",
]

# Okabe & Ito (2008), ordered so the first configs get the most distinct hues; yellow last (weak on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
BAND_ALPHA = 0.18
FIGURE_WIDTH_IN = 10.0
ROW_HEIGHT_IN = 3.2
MAX_COLUMNS = 2
SPECTRUM_COLUMNS = 3
NINES_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99)
BREAKDOWN_COLOURS = {"predict": "#0072B2", "validate": "#E69F00", "framework + network": "#BBBBBB"}
BREAKDOWN_HATCHES = {"predict": "", "validate": "//", "framework + network": ".."}
LOG_TICK_SUBS = (1.0, 2.0, 5.0)
OPEN_LOOP_METRICS = ("p50", "p99", "p999")
FIXED_RATES = "fixed offered rates"
HOLLOW_FACE = "white"  # marker face of a median that is only a bound
REFERENCE_GREY = "#555555"  # SLO lines and legend keys that belong to no config
CAPACITY_BAR_WIDTH = 3.0  # points: a capacity's interval drawn along the SLO line
CURVE_HEADROOM = 1.6  # a latency axis reaches this far above the highest figure (open band ends run to it)
CURVE_ROW_HEIGHT_IN = 3.6
RATE_MARGIN = 1.15  # a log rate axis reaches this factor beyond the lowest and highest rate
# What an interval band is, for captions: order statistics of the repetitions (stats.median_interval).
BAND_TEXT = (
    "(between two order statistics of the repetitions: min to max of 5 covers 93.75%, from 6 repetitions at least "
    "95%; no band below 5)"
)
PLAIN_NUMBERS = FuncFormatter(lambda value, _position: f"{value:g}")
RC: dict[RcKeyType, object] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "hatch.linewidth": 0.6,
}


@dataclass(frozen=True)
class ConfigStyle:
    """How one config is drawn everywhere in the report."""

    label: str
    colour: str
    marker: str
    linestyle: LineStyleType
    hatch: str


@dataclass(frozen=True)
class Chart:
    """One plot: ``svg`` is the inline ``<svg>`` element (no XML prolog)."""

    id: str
    title: str
    caption: str
    svg: str


Family = tuple[str, str | None, int | None]  # model, endpoint, batch size


def config_styles(bundle: Bundle) -> dict[str, ConfigStyle]:
    """A distinct colour, marker, line style and hatch for each config, stable in plan order."""
    return {
        name: ConfigStyle(
            label=bundle.label(name),
            colour=OKABE_ITO[index % len(OKABE_ITO)],
            marker=MARKERS[index % len(MARKERS)],
            linestyle=LINESTYLES[index % len(LINESTYLES)],
            hatch=HATCHES[index % len(HATCHES)],
        )
        for index, name in enumerate(config_order(bundle))
    }


@contextmanager
def _figure(chart_id: str, rows: int, columns: int, height_per_row: float = ROW_HEIGHT_IN) -> Iterator[Figure]:
    with rc_context({**RC, "svg.hashsalt": chart_id}):
        figure = Figure(figsize=(FIGURE_WIDTH_IN, 0.9 + height_per_row * rows), layout="constrained")
        yield figure


def _to_svg(figure: Figure, chart_id: str) -> str:
    buffer = io.StringIO()
    with rc_context({**RC, "svg.hashsalt": chart_id}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    # drop the XML prolog and DOCTYPE: the element is inlined in HTML
    return text[text.index("<svg") :].replace("<svg ", f'<svg id="{chart_id}" role="img" ', 1)


def _grid(figure: Figure, count: int, columns: int) -> list[Axes]:
    cols = min(count, columns)
    rows = math.ceil(count / cols)
    axes = figure.subplots(rows, cols, squeeze=False)
    flat: list[Axes] = [axis for row in axes for axis in row]
    for extra in flat[count:]:
        extra.set_visible(False)
    return flat[:count]


def _legend(
    figure: Figure,
    styles: Mapping[str, ConfigStyle],
    configs: Sequence[str],
    *,
    bars: bool = False,
    extra: Sequence[Line2D] = (),
) -> None:
    """One entry per config, then ``extra`` entries (e.g. what hollow markers mean), below the plots."""
    handles: list[Line2D | Patch] = []
    for config in configs:
        style = styles[config]
        if bars:
            handles.append(Patch(facecolor=style.colour, hatch=style.hatch, edgecolor="#333333", label=style.label))
        else:
            handles.append(
                Line2D([], [], color=style.colour, marker=style.marker, linestyle=style.linestyle, label=style.label)
            )
    handles.extend(extra)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), frameon=False)


def _closed_runs(bundle: Bundle) -> list[Run]:
    return [run for run in bundle.valid_runs if run.kind == "closed" and run.concurrency is not None]


def _families(runs: Sequence[Run]) -> list[Family]:
    return list(dict.fromkeys((run.model, run.endpoint, run.batch_size) for run in runs))


def _family_title(family: Family) -> str:
    model, endpoint, batch = family
    suffix = f" x {batch}" if batch and batch > 1 else ""
    return f"model {model}, {endpoint or '?'}{suffix}"


def _primary_family(model: str, runs: Sequence[Run]) -> Family | None:
    counts = Counter((run.model, run.endpoint, run.batch_size) for run in runs if run.model == model)
    return counts.most_common(1)[0][0] if counts else None


def _in_family(runs: Sequence[Run], family: Family) -> list[Run]:
    return [run for run in runs if (run.model, run.endpoint, run.batch_size) == family]


def _plot_series(
    axis: Axes, runs: Sequence[Run], x_of: Callable[[Run], float | None], metric: str, style: ConfigStyle
) -> bool:
    """Median line with interval band of ``metric`` against x; False when there is nothing to draw."""
    by_x: dict[float, list[Run]] = {}
    for run in runs:
        x = x_of(run)
        if x is not None:
            by_x.setdefault(x, []).append(run)
    points = []
    for x in sorted(by_x):
        samples = metric_samples(by_x[x], metric)
        if samples:
            estimate = median_interval(samples)
            low = estimate.ci_low if estimate.ci_low is not None else estimate.median
            high = estimate.ci_high if estimate.ci_high is not None else estimate.median
            points.append((x, estimate.median, low, high))
    if not points:
        return False
    xs, medians, lows, highs = (list(column) for column in zip(*points, strict=True))
    axis.plot(xs, medians, color=style.colour, marker=style.marker, linestyle=style.linestyle, label=style.label)
    axis.fill_between(xs, lows, highs, color=style.colour, alpha=BAND_ALPHA, linewidth=0)
    return True


def _concurrency_axis(axis: Axes, runs: Sequence[Run]) -> None:
    values = sorted({run.concurrency for run in runs if run.concurrency is not None})
    if len(values) > 1 and values[-1] / max(values[0], 1) >= 8:
        axis.set_xscale("log", base=2)
    axis.set_xticks(values, [str(value) for value in values])
    axis.set_xlabel("concurrency (users)")


def _by_config(runs: Sequence[Run], order: Sequence[str]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = {config: [] for config in order}
    for run in runs:
        grouped.setdefault(run.config, []).append(run)
    return {config: members for config, members in grouped.items() if members}


def throughput_chart(bundle: Bundle, styles: Mapping[str, ConfigStyle]) -> Chart | None:
    """Throughput (req/s) against concurrency, one panel per model and endpoint, one line per config."""
    runs = _closed_runs(bundle)
    families = _families(runs)
    if not families:
        return None
    chart_id = "chart-throughput"
    with _figure(chart_id, math.ceil(len(families) / MAX_COLUMNS), MAX_COLUMNS) as figure:
        drawn: list[str] = []
        for axis, family in zip(_grid(figure, len(families), MAX_COLUMNS), families, strict=True):
            members = _in_family(runs, family)
            for config, config_runs in _by_config(members, config_order(bundle)).items():
                if _plot_series(axis, config_runs, lambda run: run.concurrency, "rps", styles[config]):
                    drawn.append(config)
            axis.set_title(_family_title(family))
            axis.set_ylabel("throughput (req/s)")
            axis.set_ylim(bottom=0)
            _concurrency_axis(axis, members)
        figure.suptitle("Throughput vs concurrency (median of repetitions, band = interval of the median)")
        _legend(figure, styles, list(dict.fromkeys(drawn)))
        svg = _to_svg(figure, chart_id)
    caption = (
        "Closed-loop load; each point is the median over valid repetitions, the band its distribution-free interval "
        f"{BAND_TEXT}."
    )
    return Chart(chart_id, "Throughput vs concurrency", caption, svg)


def latency_chart(bundle: Bundle, styles: Mapping[str, ConfigStyle]) -> Chart | None:
    """p50, p90, p99 and p99.9 latency (ms) against concurrency: one row per model and endpoint."""
    runs = _closed_runs(bundle)
    families = _families(runs)
    if not families:
        return None
    chart_id = "chart-latency"
    columns = len(LATENCY_METRICS)
    with _figure(chart_id, len(families), columns, height_per_row=2.8) as figure:
        grid = figure.subplots(len(families), columns, squeeze=False)
        drawn: list[str] = []
        for row, family in zip(grid, families, strict=True):
            members = _in_family(runs, family)
            for axis, metric in zip(row, LATENCY_METRICS, strict=True):
                for config, config_runs in _by_config(members, config_order(bundle)).items():
                    if _plot_series(axis, config_runs, lambda run: run.concurrency, metric, styles[config]):
                        drawn.append(config)
                axis.set_title(f"{METRICS[metric].label}\n{_family_title(family)}", fontsize=9)
                axis.set_ylabel("latency (ms)")
                axis.set_ylim(bottom=0)
                _concurrency_axis(axis, members)
        figure.suptitle("Latency percentiles vs concurrency (median of repetitions, band = interval of the median)")
        _legend(figure, styles, list(dict.fromkeys(drawn)))
        svg = _to_svg(figure, chart_id)
    caption = "Percentiles per run from microsecond histograms; lines are medians over repetitions."
    return Chart(chart_id, "Latency percentiles vs concurrency", caption, svg)


def _log_latency_axis(axis: Axes) -> None:
    """Log scale labelled 1, 2, 5, 10, ... in plain numbers, no minor labels."""
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(LogLocator(base=10, subs=LOG_TICK_SUBS))
    axis.yaxis.set_major_formatter(PLAIN_NUMBERS)
    axis.yaxis.set_minor_formatter(NullFormatter())


def _nines_axis(axis: Axes, reach: float) -> None:
    ticks = [tick for tick in NINES_TICKS if nines(tick) <= reach + 1e-9] or [0.0]
    axis.set_xticks([nines(tick) for tick in ticks], [f"{tick:g}%" for tick in ticks])
    axis.set_xlabel("percentile")


def spectrum_chart(bundle: Bundle, styles: Mapping[str, ConfigStyle], model: str) -> Chart | None:
    """HDR-style latency percentile spectrum per closed-loop scenario of one model, from merged histograms."""
    runs = [run for run in _closed_runs(bundle) if run.model == model and run.histograms.get("total")]
    scenarios = list(dict.fromkeys(run.scenario for run in sorted(runs, key=_scenario_key)))
    if not scenarios:
        return None
    chart_id = f"chart-spectrum-{_slug(model)}"
    rows = math.ceil(len(scenarios) / SPECTRUM_COLUMNS)
    with _figure(chart_id, rows, SPECTRUM_COLUMNS, height_per_row=3.0) as figure:
        drawn: list[str] = []
        for axis, scenario in zip(_grid(figure, len(scenarios), SPECTRUM_COLUMNS), scenarios, strict=True):
            members = [run for run in runs if run.scenario == scenario]
            reach = 0.0
            for config, config_runs in _by_config(members, config_order(bundle)).items():
                merged = _merged_total(config_runs)
                points = percentile_spectrum(merged) if merged is not None else []
                if not points:
                    continue
                style = styles[config]
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, color=style.colour, linestyle=style.linestyle, label=style.label)
                axis.plot(xs[-1], ys[-1], color=style.colour, marker=style.marker)
                reach = max(reach, xs[-1])
                drawn.append(config)
            _log_latency_axis(axis)
            axis.set_title(f"{scenario} ({_scenario_text(members[0])})", fontsize=9)
            axis.set_ylabel("latency (ms, log)")
            _nines_axis(axis, reach)
        figure.suptitle(f"Latency percentile spectrum, model {model} (histograms merged over repetitions)")
        _legend(figure, styles, list(dict.fromkeys(drawn)))
        svg = _to_svg(figure, chart_id)
    caption = (
        "x: percentile on a 'nines' scale (90%, 99%, 99.9%, ...), as far as the sample count supports; y: latency."
    )
    return Chart(chart_id, f"Latency spectrum: {model}", caption, svg)


def _merged_total(runs: Sequence[Run]) -> HdrHistogram | None:
    """The runs' latency histograms summed; a corrupt one is a :class:`BundleError` naming its run."""
    encoded = [run.histograms["total"] for run in runs]
    try:
        return merge_histograms(encoded)
    except ValueError as exc:
        bad = next(run.id for run in runs if not _decodes(run.histograms["total"]))
        raise BundleError(f"run {bad}: histograms.total: {exc}") from exc


def _decodes(encoded: str) -> bool:
    try:
        decode_histogram(encoded)
    except ValueError:
        return False
    return True


def _scenario_key(run: Run) -> tuple[str, int, int, str]:
    return (run.endpoint or "", run.batch_size or 0, run.concurrency or 0, run.scenario)


def _scenario_text(run: Run) -> str:
    return users_text(run.concurrency) if run.concurrency is not None else run.kind


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text.lower())


def _reference_runs(bundle: Bundle, *, lowest: bool) -> dict[str, list[Run]]:
    """Per model, the valid runs of one reference scenario of the primary endpoint: lowest or highest concurrency."""
    runs = _closed_runs(bundle)
    chosen: dict[str, list[Run]] = {}
    for model in dict.fromkeys(run.model for run in runs):
        family = _primary_family(model, runs)
        if family is None:
            continue
        members = _in_family(runs, family)
        pick = min if lowest else max
        level = pick(run.concurrency or 0 for run in members)
        chosen[model] = [run for run in members if run.concurrency == level]
    return chosen


def _median_of(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _breakdown(runs: Sequence[Run]) -> dict[str, float] | None:
    """Mean ms per request split into predict, validate and the rest (framework + network), medians over runs."""
    total = _median_of([run.latency_ms["mean"] for run in runs if "mean" in run.latency_ms])
    predict = _median_of(
        [run.server_timing_ms["predict_mean"] for run in runs if "predict_mean" in run.server_timing_ms]
    )
    validate = _median_of(
        [run.server_timing_ms["validate_mean"] for run in runs if "validate_mean" in run.server_timing_ms]
    )
    if total is None or predict is None or validate is None:
        return None
    return {"predict": predict, "validate": validate, "framework + network": max(0.0, total - predict - validate)}


def time_breakdown_chart(bundle: Bundle) -> Chart | None:
    """Stacked horizontal bars: where the mean request time goes, per model and config, at the lowest load."""
    rows: list[tuple[str, dict[str, float]]] = []
    for model, runs in _reference_runs(bundle, lowest=True).items():
        for config, config_runs in _by_config(runs, config_order(bundle)).items():
            parts = _breakdown(config_runs)
            if parts is not None:
                level = config_runs[0].concurrency
                rows.append((f"{model} ({users_text(level)})\n{bundle.label(config)}", parts))
    if not rows:
        return None
    chart_id = "chart-breakdown"
    with _figure(chart_id, 1, 1, height_per_row=0.45 * len(rows) + 0.6) as figure:
        axis = figure.subplots()
        positions = list(range(len(rows)))[::-1]
        left = [0.0] * len(rows)
        for part, colour in BREAKDOWN_COLOURS.items():
            widths = [parts[part] for _, parts in rows]
            axis.barh(
                positions,
                widths,
                left=left,
                color=colour,
                hatch=BREAKDOWN_HATCHES[part],
                edgecolor="#333333",
                label=part,
            )
            left = [start + width for start, width in zip(left, widths, strict=True)]
        axis.set_yticks(positions, [label for label, _ in rows], fontsize=8)
        axis.set_xlabel("mean time per request (ms)")
        axis.grid(axis="y", visible=False)
        figure.suptitle("Where the time goes per request (lowest concurrency, medians over repetitions)")
        figure.legend(loc="outside lower center", ncols=3, frameon=False)
        svg = _to_svg(figure, chart_id)
    caption = (
        "predict and validate from the Server-Timing header; framework + network = mean latency - validate - predict."
    )
    return Chart(chart_id, "Where the time goes", caption, svg)


def _bars(
    axis: Axes, groups: Mapping[str, Mapping[str, list[Run]]], metric: str, styles: Mapping[str, ConfigStyle]
) -> list[str]:
    """Grouped bars of ``metric`` (median, whiskers = interval of the median): groups on x, one bar per config."""
    configs = list(dict.fromkeys(config for by_config in groups.values() for config in by_config))
    width = 0.8 / max(len(configs), 1)
    drawn: list[str] = []
    for index, config in enumerate(configs):
        xs, heights, errors = [], [], []
        for position, by_config in enumerate(groups.values()):
            samples = metric_samples(by_config.get(config, []), metric)
            if not samples:
                continue
            estimate = median_interval(samples)
            low = estimate.ci_low if estimate.ci_low is not None else estimate.median
            high = estimate.ci_high if estimate.ci_high is not None else estimate.median
            xs.append(position - 0.4 + width * (index + 0.5))
            heights.append(estimate.median)
            errors.append((estimate.median - low, high - estimate.median))
        if xs:
            style = styles[config]
            yerr = np.array(errors, dtype=np.float64).T
            axis.bar(
                xs, heights, width, yerr=yerr, color=style.colour, hatch=style.hatch, edgecolor="#333333", capsize=3
            )
            drawn.append(config)
    axis.set_xticks(list(range(len(groups))), list(groups), fontsize=8)
    axis.grid(axis="x", visible=False)
    return drawn


def resources_chart(bundle: Bundle, styles: Mapping[str, ConfigStyle]) -> Chart | None:
    """Server CPU microseconds per request and RSS MB per worker, per model (highest concurrency) and config."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for model, runs in _reference_runs(bundle, lowest=False).items():
        groups[f"{model}\n({users_text(runs[0].concurrency)})"] = _by_config(runs, config_order(bundle))
    if not groups:
        return None
    chart_id = "chart-resources"
    with _figure(chart_id, 1, 2) as figure:
        cpu_axis, memory_axis = figure.subplots(1, 2)
        drawn = _bars(cpu_axis, groups, "cpu_us_per_request", styles)
        drawn += _bars(memory_axis, groups, "rss_mb_per_worker", styles)
        cpu_axis.set_title("server CPU per request")
        cpu_axis.set_ylabel("CPU time per request (µs)")
        memory_axis.set_title("memory per worker")
        memory_axis.set_ylabel("RSS per worker process (MB)")
        figure.suptitle("Cost: CPU and memory (medians over repetitions, whiskers = interval of the median)")
        _legend(figure, styles, list(dict.fromkeys(drawn)), bars=True)
        svg = _to_svg(figure, chart_id)
    caption = (
        "Measured at the highest closed-loop concurrency of each model; RSS is the mean over worker processes. "
        f"Whiskers: the distribution-free interval of the median {BAND_TEXT}."
    )
    return Chart(chart_id, "CPU and memory", caption, svg)


def _fixed_open_runs(bundle: Bundle, model: str) -> list[Run]:
    """Valid open-loop runs at the plan's fixed rates (capacity steps excluded: the capacity chart draws those)."""
    return [
        run
        for run in bundle.scenario_runs
        if run.kind == "open" and run.model == model and run.target_rps and not run.is_step
    ]


def open_loop_chart(bundle: Bundle, styles: Mapping[str, ConfigStyle], model: str) -> Chart | None:
    """Open-loop p50, p99 and p99.9 latency (ms, log) at the plan's fixed offered rates (req/s), one line per config:
    the median over repetitions with its interval band."""
    runs = _fixed_open_runs(bundle, model)
    if not runs:
        return None
    chart_id = f"chart-open-{_slug(model)}"
    with _figure(chart_id, 1, len(OPEN_LOOP_METRICS)) as figure:
        drawn: list[str] = []
        for axis, metric in zip(figure.subplots(1, len(OPEN_LOOP_METRICS)), OPEN_LOOP_METRICS, strict=True):
            for config, config_runs in _by_config(runs, config_order(bundle)).items():
                if _plot_series(axis, config_runs, lambda run: run.target_rps, metric, styles[config]):
                    drawn.append(config)
            _log_latency_axis(axis)
            axis.set_title(f"{METRICS[metric].label}\n{FIXED_RATES}", fontsize=9)
            axis.set_xlabel("offered rate (req/s)")
            axis.set_ylabel("latency (ms, log)")
            axis.set_xlim(left=0)
        figure.suptitle(f"Open loop, model {model}: latency at fixed offered rates (no coordinated omission)")
        _legend(figure, styles, list(dict.fromkeys(drawn)))
        svg = _to_svg(figure, chart_id)
    caption = (
        "Each request is timed from its intended send time, so queueing shows up as latency (log scale). Median over "
        f"repetitions, the band its interval {BAND_TEXT}."
    )
    return Chart(chart_id, f"Open loop at fixed rates: {model}", caption, svg)


# --- capacity curves -------------------------------------------------------------------------------------------


def _curve_points(view: CapacityView, config: str, metric: str) -> list[tuple[float, Estimate]]:
    """(rate, estimate) where the config's median at that rate is known, in rate order."""
    points = []
    for row in view.rows:
        cell = row.cells.get(config)
        estimate = cell.estimates.get(metric) if cell is not None else None
        if estimate is not None and estimate.median_known:
            points.append((row.rate, estimate))
    return points


def _y_top(view: CapacityView, metric: str) -> float:
    """The top of a latency axis: above every known median and interval end, and the SLO."""
    values = [view.slo_p99_ms]
    for row in view.rows:
        for cell in row.cells.values():
            estimate = cell.estimates.get(metric)
            if estimate is not None and estimate.median_known:
                values += [estimate.median, *(end for end in (estimate.ci_high,) if end is not None)]
    return max(values) * CURVE_HEADROOM


def _draw_curve(axis: Axes, view: CapacityView, config: str, metric: str, style: ConfigStyle, gid: str) -> bool:
    """The median line with its interval band through the rates where the median is a value; where it is only a
    lower bound (past the SLO), a hollow marker at the bound with a dotted line up to the top of the axis."""
    points = _curve_points(view, config, metric)
    if not points:
        return False
    top = _y_top(view, metric)
    exact = [(rate, estimate) for rate, estimate in points if not _is_bound(estimate)]
    if exact:
        rates = [rate for rate, _ in exact]
        lows = [estimate.ci_low if estimate.ci_low is not None else _band_floor(estimate) for _, estimate in exact]
        highs = [_band_top(estimate, top) for _, estimate in exact]
        (line,) = axis.plot(
            rates, [estimate.median for _, estimate in exact], color=style.colour, linestyle=style.linestyle,
            marker=style.marker, markersize=5,
        )  # fmt: skip
        line.set_gid(f"{gid}-median")
        axis.fill_between(rates, lows, highs, color=style.colour, alpha=BAND_ALPHA, linewidth=0)
    bounds = [(rate, estimate.median) for rate, estimate in points if _is_bound(estimate)]
    if bounds:
        xs, ys = zip(*bounds, strict=True)
        axis.vlines(xs, ys, top, color=style.colour, linestyle=":", linewidth=1)
        (marks,) = axis.plot(
            xs, ys, linestyle="none", marker=style.marker, color=style.colour, markerfacecolor=HOLLOW_FACE, markersize=6
        )
        marks.set_gid(f"{gid}-bound")
    return True


def _is_bound(estimate: Estimate) -> bool:
    return estimate.median_is_bound or estimate.median_at_least


def _band_floor(estimate: Estimate) -> float:
    return estimate.median if not estimate.has_interval else estimate.median / CURVE_HEADROOM


def _band_top(estimate: Estimate, top: float) -> float:
    if not estimate.has_interval:
        return estimate.median
    return estimate.ci_high if estimate.ci_high is not None else top


def _mark_capacities(axis: Axes, view: CapacityView, styles: Mapping[str, ConfigStyle], gid: str) -> bool:
    """Each config's median capacity as its marker on the SLO line, its interval as a bar along it; queueing theory
    as a cross. False when nothing was marked."""
    marked = False
    left, right = axis.get_xlim()
    for outcome in view.outcomes:
        estimate, style = outcome.estimate, styles[outcome.config]
        if not estimate.median_known:
            continue
        low = estimate.ci_low if estimate.ci_low is not None else left if estimate.has_interval else estimate.median
        high = estimate.ci_high if estimate.ci_high is not None else right if estimate.has_interval else estimate.median
        slug = _slug(outcome.config)
        segment = axis.hlines(view.slo_p99_ms, low, high, color=style.colour, linewidth=CAPACITY_BAR_WIDTH)
        segment.set_gid(f"{gid}-capacity-interval-{slug}")
        face = HOLLOW_FACE if _is_bound(estimate) else style.colour
        (mark,) = axis.plot(
            [estimate.median], [view.slo_p99_ms], marker=style.marker, markersize=9, color=style.colour,
            markerfacecolor=face, markeredgecolor=REFERENCE_GREY, linestyle="none",
        )  # fmt: skip
        mark.set_gid(f"{gid}-capacity-{slug}")
        marked = True
        theory = view.theory.get(outcome.config)
        if theory is not None:
            (cross,) = axis.plot([theory.rps], [view.slo_p99_ms], marker="x", markersize=8, color=style.colour)
            cross.set_gid(f"{gid}-theory-{slug}")
    axis.set_xlim(left, right)
    return marked


def _rate_axis(axis: Axes, view: CapacityView) -> None:
    """A log rate axis labelled at the grid's rates."""
    rates = [row.rate for row in view.rows]
    axis.set_xscale("log")
    axis.set_xticks(rates, [f"{rate:g}" for rate in rates], fontsize=8, rotation=45)
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlim(min(rates) / RATE_MARGIN, max(rates) * RATE_MARGIN)
    axis.set_xlabel("offered rate (req/s, log)")


def _curve_panel(
    axis: Axes, view: CapacityView, metric: str, styles: Mapping[str, ConfigStyle], gid: str
) -> tuple[list[str], bool]:
    drawn = [
        config
        for config in view.configs
        if _draw_curve(axis, view, config, metric, styles[config], f"{gid}-{_slug(config)}-{metric}")
    ]
    _rate_axis(axis, view)
    _log_latency_axis(axis)
    axis.set_ylim(top=_y_top(view, metric))
    axis.set_ylabel(f"{METRICS[metric].label} (ms, log)")
    axis.set_title(f"{METRICS[metric].label}: {view.arrivals_text}, scenario {view.scenario}", fontsize=9)
    marked = False
    if metric == "p99":
        _slo_lines(axis, [view.slo_p99_ms])
        marked = _mark_capacities(axis, view, styles, gid)
    if view.traffic_rps is not None:
        axis.axvline(view.traffic_rps, color=REFERENCE_GREY, linestyle="--", linewidth=1)
        axis.annotate("your traffic", (view.traffic_rps, 0.97), xycoords=("data", "axes fraction"), fontsize=8)
    return drawn, marked


def _slo_lines(axis: Axes, slos: Sequence[float]) -> None:
    for slo in slos:
        axis.axhline(slo, color=REFERENCE_GREY, linestyle=":", linewidth=1)
        axis.annotate(f"SLO {slo:g} ms", (0.02, slo), xycoords=("axes fraction", "data"), fontsize=8)


def _curve_legend_extras(marked: bool, theory: bool, bounds: bool) -> list[Line2D]:
    extras: list[Line2D] = []
    if bounds:
        extras.append(
            Line2D([], [], color=REFERENCE_GREY, marker="o", markerfacecolor=HOLLOW_FACE, linestyle=":",
                   label="at least this (past the SLO)")
        )  # fmt: skip
    if marked:
        extras.append(
            Line2D([], [], color=REFERENCE_GREY, marker="o", markersize=8, linewidth=CAPACITY_BAR_WIDTH,
                   label="capacity: median, interval")
        )  # fmt: skip
    if theory:
        extras.append(Line2D([], [], color=REFERENCE_GREY, marker="x", linestyle="none", label="queueing theory"))
    return extras


def capacity_chart(
    bundle: Bundle, styles: Mapping[str, ConfigStyle], model: str, views: Sequence[CapacityView]
) -> Chart | None:
    """p99 and p50 (ms, log) against the offered rate (req/s, log), all configs on one chart: one row per capacity
    scenario, arrival process and SLO of ``model``. Lines are medians over repetitions, bands their intervals; the p99
    panel has the SLO line and each config's capacity on it (median and interval), with queueing theory's value."""
    mine = [view for view in views if view.model == model and view.rows]
    if not mine:
        return None
    chart_id = f"chart-capacity-{_slug(model)}"
    drawn: list[str] = []
    marked = bounds = False
    with _figure(chart_id, len(mine), len(CURVE_METRICS), height_per_row=CURVE_ROW_HEIGHT_IN) as figure:
        grid = figure.subplots(len(mine), len(CURVE_METRICS), squeeze=False)
        for index, (axes, view) in enumerate(zip(grid, mine, strict=True)):
            for axis, metric in zip(axes, CURVE_METRICS, strict=True):
                found, has_marks = _curve_panel(axis, view, metric, styles, f"{chart_id}-{index}")
                drawn += found
                marked = marked or has_marks
            bounds = bounds or any(
                _is_bound(estimate)
                for row in view.rows
                for cell in row.cells.values()
                if (estimate := cell.estimates.get("p99")) is not None
            )
        figure.suptitle(f"Capacity, model {model}: latency against offered rate (median of repetitions, bands)")
        theory = any(view.theory for view in mine)
        _legend(figure, styles, list(dict.fromkeys(drawn)), extra=_curve_legend_extras(marked, theory, bounds))
        svg = _to_svg(figure, chart_id)
    return Chart(chart_id, f"Capacity curves: {model}", _curve_caption(mine), svg)


def _curve_caption(views: Sequence[CapacityView]) -> str:
    parts = [
        "Open loop, each request timed from its intended send time (no coordinated omission). Lines: the median over "
        f"repetitions at each offered rate of the shared grid; bands: its interval {BAND_TEXT}.",
        "A rate a config's climb did not reach, because it failed at a lower rate, counts as past the SLO: where that "
        "leaves the median only a lower bound it is a hollow marker with a dotted line up (at least this much), not "
        "joined to the line.",
        "On the p99 panel, each config's marker on the SLO line is its median capacity and the bar along the line its "
        "interval (open ends run to the edge).",
    ]
    if any(view.theory for view in views):
        parts.append(f"A cross marks queueing theory's capacity for a fixed service time, {THEORY_CAVEAT}.")
    if any(view.traffic_rps is not None for view in views):
        parts.append("The dashed line is the traffic you expect (the plan's traffic_rps).")
    return " ".join(parts)


def render_charts(bundle: Bundle) -> list[Chart]:
    """The plots section: closed-loop throughput and latency, latency spectra, CPU and memory, fixed-rate open loop.

    The capacity curves (:func:`capacity_chart`) and the time breakdown (:func:`time_breakdown_chart`) are drawn in
    their own sections."""
    styles = config_styles(bundle)
    models = list(dict.fromkeys(run.model for run in bundle.valid_runs))
    candidates = [throughput_chart(bundle, styles), latency_chart(bundle, styles)]
    candidates += [spectrum_chart(bundle, styles, model) for model in models]
    candidates += [resources_chart(bundle, styles)]
    candidates += [open_loop_chart(bundle, styles, model) for model in models]
    return [chart for chart in candidates if chart is not None]
