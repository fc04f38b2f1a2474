"""The report's figures: the suite's ranking metric (top-1, or a language model's perplexity) vs compression and vs
theoretical speedup, the two views of ShrinkBench's Figure 1, drawn to go into a paper as they are.

Each figure is written as PDF and SVG (vector) and as a 300-dpi PNG (the HTML page embeds the PNG). The
y axis is fitted to the data; when collapsed points (a random baseline at x32) stretch it, a second
panel zooms on the top band, where the best methods differ: at every ratio, the three best. Methods that lie on top of each other
stay distinguishable: each has its own colour, marker and line style, and its points are offset
horizontally by a few percent (a constant factor per method on the log axis: the order of the points
and the shape of each curve are unchanged). A metric declared with a log axis (perplexity) is drawn on a
log y axis, its ranges fitted and padded in log space, its best band at the bottom.
"""

from __future__ import annotations

import io
import math
import struct
from collections import defaultdict
from typing import Any

from .. import metrics
from .leaderboard import Entry, board_metric, mean, std
from .report import Report

FORMATS = ("png", "pdf", "svg")
PLOT_INCHES = (7.0, 3.6)  # a full text width of a two-column paper
PLOT_DPI = 300
PLOT_PIXELS = (int(PLOT_INCHES[0] * PLOT_DPI), int(PLOT_INCHES[1] * PLOT_DPI))  # of the PNG (tests check it)

MARKERS = "osD^vP*Xhp<>"
LINESTYLES = ("-", "--", "-.", ":")
DODGE_LOG2 = 0.03  # horizontal offset between neighbouring methods, in log2 units (about 2%)
MAX_DODGE_LOG2 = 0.09  # the outermost method is never moved by more than about 6.5%
PODIUM = 3  # the zoomed panel shows, at every ratio, at least this many of the best methods
ZOOM_GAIN = 2.0  # ... and exists only if it magnifies the y axis at least this much

Series = dict[str, list[tuple[float, float, float]]]  # method -> [(x, metric, std)] (top-1 in %), NaN: no passed case


def _shown(value: float, metric: metrics.Metric) -> float:
    """A metric's value on the y axis: a fraction in percent, anything else as it is."""
    return 100 * value if metric.percent else value


def _x(e: Entry, axis: str) -> float:
    """An entry's x: its mean achieved compression on the suite's basis, or its mean speedup (the ratio if none)."""
    return mean(e.compressions if axis == "compression" else getattr(e, axis)) or e.ratio


def series(report: Report, suite: str, axis: str) -> Series:
    """Per method, its points on ``axis`` ("compression" or "speedup"): mean over seeds, sorted by x.

    A failed point is NaN, so the line breaks there instead of bridging the failure."""
    by_method: dict[str, list[Entry]] = defaultdict(list)
    for e in report.entries_of(suite):
        by_method[e.method].append(e)
    metric = board_metric(report.entries_of(suite))
    return {
        method: sorted((_x(e, axis),
                        _shown(mean(e.score), metric) if e.rankable else math.nan,
                        _shown(std(e.score), metric) if e.rankable else math.nan) for e in entries)
        for method, entries in sorted(by_method.items())
    }


def y_ranges(entries: list[Entry]) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """The full y range of the data (mean ± std; top-1 in %), and the best band's range when zooming on it helps.

    The best band reaches to the worst of the ratios' third-best means (with its std): every ratio's
    podium is in it, and a method collapsing far away is left to the full panel. A metric on a log axis
    (perplexity) is fitted in log space, where the best is the lowest."""
    metric = board_metric(entries)
    ranked = [e for e in entries if e.rankable]
    if not ranked:
        return (0.0, 100.0) if metric.percent else (1.0, 10.0), None
    log = metric.log_axis
    to, back = (math.log10, lambda v: 10 ** v) if log else (lambda v: v, lambda v: v)
    spans = []
    for e in ranked:
        m, s = _shown(mean(e.score), metric), _shown(std(e.score), metric)
        low = m - s if not log or m - s > 0 else m  # a log axis cannot reach zero: the bar's lower half is left out
        spans.append((to(low), to(m + s)))
    limits = (0.0, 100.0) if metric.percent else (-math.inf, math.inf)
    full = _padded(min(low for low, _ in spans), max(high for _, high in spans), limits, log)
    by_ratio: dict[float, list[tuple[float, tuple[float, float]]]] = defaultdict(list)
    for e, span in zip(ranked, spans):
        by_ratio[e.ratio].append((mean(e.score), span))
    podium = [sorted(group, key=lambda item: metrics.order_key(item[0], metric.name))[:PODIUM] for group in by_ratio.values()]
    spans_in = [span for group in podium for _, span in group]
    if metric.higher_is_better:
        band = _padded(min(low for low, _ in spans_in), max(high for _, high in spans), limits, log)
    else:
        band = _padded(min(low for low, _ in spans), max(high for _, high in spans_in), limits, log)
    zoom = band if (full[1] - full[0]) >= ZOOM_GAIN * (band[1] - band[0]) else None
    return (back(full[0]), back(full[1])), (back(zoom[0]), back(zoom[1])) if zoom else None


def _padded(low: float, high: float, limits: tuple[float, float], log: bool) -> tuple[float, float]:
    """``low``–``high`` with 5% room on both sides (at least a quarter point; on a log axis, at least 0.5% of the
    value), within ``limits`` (0–100% for a fraction)."""
    low, high = max(limits[0], low), min(limits[1], high)
    pad = max(0.05 * (high - low), math.log10(1.005) if log else 0.25)
    return max(limits[0], low - pad), min(limits[1], high + pad)


def figure(report: Report, suite: str, axis: str) -> Any:
    """The figure (a matplotlib ``Figure``, no pyplot: no global state, no display) of ``suite`` on ``axis``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogFormatter, NullFormatter

    points = series(report, suite, axis)
    entries = report.entries_of(suite)
    metric = board_metric(entries)
    full, band = y_ranges(entries)
    fig = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI, layout="constrained")
    panels = fig.subplots(1, 2 if band else 1, squeeze=False)[0]
    step = min(DODGE_LOG2, 2 * MAX_DODGE_LOG2 / max(len(points) - 1, 1))
    prunable = any(e.basis == metrics.BASIS_PRUNABLE for e in entries)
    for ax, (low, high), title in zip(panels, (full, band), ("all points", "zoom on the top band" if metric.higher_is_better
                                                            else "zoom on the best band")):
        for index, (method, values) in enumerate(points.items()):
            _draw(ax, method, values, index, 2 ** ((index - (len(points) - 1) / 2) * step))
        if metric.log_axis:  # plain numbers (3, 4, 6, 10, 20), not 3 × 10⁰: a reader compares them to papers' tables
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.set_ylim(low, high)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"x{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if axis == "compression":
            ax.set_xticks(sorted({e.ratio for e in report.entries_of(suite)}))
        ax.grid(True, which="major", alpha=0.3, linewidth=0.5)
        ax.tick_params(which="both", labelsize=7)
        basis = "prunable weights ÷ their non-zero count" if prunable else "all ÷ non-zero parameters"
        ax.set_xlabel(f"compression ratio ({basis})" if axis == "compression" else "theoretical speedup (dense ÷ sparse FLOPs)",
                      fontsize=7)
        if band:
            ax.set_title(title, fontsize=8)
    panels[0].set_ylabel(y_label(metric), fontsize=8)
    what = f"{suite}: {metric.label} vs {'compression ratio' if axis == 'compression' else 'theoretical speedup'}"
    fig.suptitle(f"{what} (mean ± 1 std over seeds; log scales, points offset slightly)" if metric.log_axis else
                 f"{what} (mean ± 1 std over seeds; log scale, points offset slightly per method)", fontsize=8)
    if points:
        handles, labels = panels[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=7, frameon=False)
    return fig


def y_label(metric: metrics.Metric) -> str:
    """The y axis's name: the metric, when it was measured, and its unit or scale."""
    if metric.name == metrics.DEFAULT:
        return "top-1 after fine-tuning (%)"
    return f"{metric.label}, final" + (" (%)" if metric.percent else "") + (f" ({metric.direction} is better)" if metric.log_axis else "")


def _draw(ax: Any, method: str, values: list[tuple[float, float, float]], index: int, offset: float) -> None:
    style = dict(color=f"C{index % 10}", marker=MARKERS[index % len(MARKERS)], linestyle=LINESTYLES[index % len(LINESTYLES)],
                 markersize=3.5, linewidth=1.1, markerfacecolor="white" if index % 2 else None)
    if all(math.isnan(y) for _, y, _ in values):
        ax.errorbar([], [], yerr=[], label=f"{method} (no passed case)", **style)
        return
    failed = [f"x{x:g}" for x, y, _ in values if math.isnan(y)]
    label = method + (f" (failed at {', '.join(failed)})" if failed else "")
    xs, ys, errs = zip(*values)
    ax.errorbar([x * offset for x in xs], ys, yerr=errs, label=label, capsize=1.5, elinewidth=0.6, **style)


def render(report: Report, suite: str, axis: str, formats: tuple[str, ...] = FORMATS) -> dict[str, bytes]:
    """The figure's files' bytes by format. PDF and SVG carry no date and no random ids, so the same data gives
    the same bytes (a report in version control changes only where the results did)."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(report, suite, axis)
    FigureCanvasAgg(fig)
    out = {}
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]
        with rc_context({"svg.hashsalt": "pytest-shrinkbench"}):
            fig.savefig(buffer, format=fmt, dpi=PLOT_DPI, metadata=metadata)
        out[fmt] = buffer.getvalue()
    return out


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])
