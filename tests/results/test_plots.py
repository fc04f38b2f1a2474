"""Figures ready for a paper: vector files and a 300-dpi PNG, a y axis fitted to the data with a zoom on the top
band where methods differ, and methods that stay distinguishable when their lines coincide."""

from __future__ import annotations

import math

import pytest

from pytest_shrinkbench.results import plots
from pytest_shrinkbench.results.report import build
from tests.helpers import lm_row, row

RATIOS = (1, 2, 4, 8, 16, 32)
METHODS = ("global-magnitude", "layer-magnitude", "global-gradient", "layer-gradient", "gradual-magnitude", "random")


def digits_like() -> list[dict]:
    """As on digits-mlp: every method within 95–99% but random, which collapses to 30% at x32; and every method
    has the same speedup at a ratio (unstructured masks), so their speedup lines coincide."""
    rows = []
    for index, method in enumerate(METHODS):
        for ratio in RATIOS:
            top1 = 0.30 + 0.67 / ratio if method == "random" and ratio > 4 else 0.99 - 0.001 * (index + 1) * math.log2(ratio)
            rows += [row(method, ratio, seed, round(top1 - 0.001 * seed, 4)) for seed in (0, 1)]
    return rows


@pytest.fixture(scope="module")
def report():
    return build(digits_like())


def test_each_figure_is_written_as_pdf_svg_and_a_300_dpi_png(report) -> None:
    files = plots.render(report, "digits-mlp", "compression")
    assert set(files) == {"png", "pdf", "svg"}
    assert plots.png_size(files["png"]) == plots.PLOT_PIXELS == (2100, 1080), "7 × 3.6 inches at 300 dpi"
    assert files["pdf"].startswith(b"%PDF-") and b"<svg" in files["svg"][:1000]
    assert plots.render(report, "digits-mlp", "compression") == files, \
        "no date or random id inside: the same data gives the same files (a report under version control changes with its data)"


def test_the_y_axis_fits_the_data_and_a_second_panel_zooms_on_the_top_band(report) -> None:
    figure = plots.figure(report, "digits-mlp", "compression")
    full, zoom = figure.axes
    low, high = full.get_ylim()
    assert 25 < low < 32 and 99 < high <= 100, "the full panel spans the data (random's 32%), not 0-100"
    assert zoom.get_title() == "zoom on the top band"
    low, high = zoom.get_ylim()
    assert high - low < 3, "the zoom magnifies the band where the best methods differ"
    for ratio in RATIOS:
        means = sorted((100 * sum(e.top1) / e.n for e in report.entries_of("digits-mlp") if e.ratio == ratio), reverse=True)
        assert all(low < m < high for m in means[:3]), f"x{ratio}: the three best are in the zoom"
    assert 100 * sum(report.entries_of("digits-mlp")[-1].top1) / 2 < low, "x32's collapsed random is left to the full panel"


def test_no_zoom_panel_when_the_data_fills_the_axis_anyway() -> None:
    compact = build([row(m, r, 0, 0.98 - 0.01 * i * math.log2(r)) for i, m in enumerate(("a", "b")) for r in (1, 4)])
    assert len(plots.figure(compact, "digits-mlp", "compression").axes) == 1
    full, zoom = plots.y_ranges(compact.entries_of("digits-mlp"))
    assert zoom is None and full == pytest.approx((95.75, 98.25)), "a quarter point of room above and below"


def test_methods_whose_lines_coincide_stay_distinguishable(report) -> None:
    """Same speedups at every ratio: each method still has its own marker, line style and a small x offset."""
    figure = plots.figure(report, "digits-mlp", "speedup")
    lines = {bars.get_label(): bars.lines[0] for bars in figure.axes[0].containers}
    assert sorted(lines) == sorted(METHODS)
    lines = list(lines.values())
    assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == len(METHODS)
    first_x = sorted(line.get_xdata()[0] for line in lines)  # x1 speedup is 1.0 for all: now spread a little
    assert len(set(first_x)) == len(METHODS) and 0.93 < first_x[0] < first_x[-1] < 1.07


def test_a_failed_point_breaks_its_line_and_is_named_in_the_legend() -> None:
    rows = [row("a", r, 0, 0.9) for r in (1, 2, 4)] + [row("b", 1, 0, 0.9), row("b", 2, 0, status="failed"), row("b", 4, 0, 0.8)]
    rows.append(row("c", 2, 0, status="failed"))
    labels = [text.get_text() for text in plots.figure(build(rows), "digits-mlp", "compression").legends[0].get_texts()]
    assert labels == ["a", "b (failed at x2)", "c (no passed case)"]
    assert math.isnan(plots.series(build(rows), "digits-mlp", "compression")["b"][1][1])


def test_perplexity_is_drawn_on_a_log_axis_named_after_it_with_the_best_band_at_the_bottom() -> None:
    """Perplexity from 3.3 to a collapsed 60 at x8: a log y axis spans it; the zoom keeps every ratio's three lowest."""
    rows = [lm_row(m, r, 0, p * r ** k) for m, p, k in (("sparsegpt", 3.28, 0.05), ("wanda", 3.67, 0.1), ("row-magnitude", 3.77, 0.2),
                                                           ("random", 4.0, 1.4)) for r in (1, 2, 4, 8)]
    report = build(rows)
    (suite,) = report.suites
    figure = plots.figure(report, suite, "compression")
    full, zoom = figure.axes
    assert full.get_yscale() == zoom.get_yscale() == "log"
    assert full.get_ylabel() == "perplexity, final (lower is better)"
    assert full.get_xlabel() == "compression ratio (prunable weights ÷ their non-zero count)"
    assert zoom.get_title() == "zoom on the best band"
    low, high = full.get_ylim()
    assert 2.5 < low < 3.28 and high > 4.0 * 8 ** 1.4, "the full panel spans the data, collapse included (5% room in log space)"
    low, high = zoom.get_ylim()
    for ratio in (1, 2, 4, 8):
        best = sorted(e.score[0] for e in report.entries_of(suite) if e.ratio == ratio)[:3]
        assert all(low < p < high for p in best), f"x{ratio}: the three lowest are in the zoom"
    assert high < 4.0 * 8 ** 1.4, "x8's collapsed random is left to the full panel"
    assert figure._suptitle.get_text().startswith(f"{suite}: perplexity vs compression ratio")
    assert plots.series(report, suite, "compression")["wanda"][1][:2] == (2.0, pytest.approx(3.67 * 2 ** 0.1)), \
        "x is the compression on the suite's basis, y the perplexity as it is (not in %)"
