"""The report's figures: top-1 vs compression and vs theoretical speedup, the two views of ShrinkBench's Figure 1."""

from __future__ import annotations

import io
import math
import struct
from collections import defaultdict

from .leaderboard import Entry, mean, std
from .report import Report

# Plot size: inches × dpi = pixels (tests check the PNG's header against these).
PLOT_INCHES = (8.0, 5.0)
PLOT_DPI = 100
PLOT_PIXELS = (int(PLOT_INCHES[0] * PLOT_DPI), int(PLOT_INCHES[1] * PLOT_DPI))

# -- plots ----------------------------------------------------------------------------------------

MARKERS = "osD^vP*Xhp<>"


def plot(report: Report, suite: str, axis: str) -> bytes:
    """PNG of top-1 after fine-tuning vs ``axis`` ("compression" or "speedup") for ``suite``: one line
    per method (mean over seeds, ±1 std bars), log2 x axis; failed points are left out of the lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import (
        Figure,  # no pyplot: no global backend state, no display needed
    )
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    by_method: dict[str, list[Entry]] = defaultdict(list)
    for e in report.entries_of(suite):
        by_method[e.method].append(e)
    colors = [f"C{i}" for i in range(10)]
    ticks: set[float] = set()
    for index, (method, entries) in enumerate(sorted(by_method.items())):
        # A failed or empty point is NaN: the line breaks there instead of bridging the failure.
        points = sorted(
            (mean(getattr(e, axis)) or e.ratio, mean(e.top1) if e.rankable else math.nan, std(e.top1) if e.rankable else math.nan)
            for e in entries
        )
        failed = sorted(e.ratio for e in entries if e.failed)
        label = method + (f" (failed at {', '.join(f'x{r:g}' for r in failed)})" if failed else "")
        if not any(e.rankable for e in entries):
            ax.plot([], [], label=label + " (no passed case)", color=colors[index % 10])
            continue
        xs, ys, errs = zip(*points)
        ticks.update(xs)
        ax.errorbar(list(xs), [100 * y for y in ys], yerr=[100 * s for s in errs], label=label,
                    color=colors[index % 10], marker=MARKERS[index % len(MARKERS)], markersize=5, linewidth=1.6,
                    capsize=3, elinewidth=1.0, alpha=0.9)
    ax.set_xscale("log", base=2)
    if axis == "compression":
        ax.set_xticks(sorted({e.ratio for e in report.entries_of(suite)}) or sorted(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"x{x:g}"))
        ax.set_xlabel("compression ratio (all parameters ÷ non-zero parameters), log scale")
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"x{x:g}"))
        ax.set_xlabel("theoretical speedup (dense FLOPs ÷ sparse FLOPs), log scale")
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_ylabel("top-1 accuracy after fine-tuning (%)")
    ax.set_title(f"{suite}: top-1 vs {'compression ratio' if axis == 'compression' else 'theoretical speedup'} (mean ± 1 std over seeds)", fontsize=11)
    ax.grid(True, which="major", alpha=0.35)
    if by_method:
        ax.legend(loc="best", fontsize=9, framealpha=0.85)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


