"""The report as files: JSON and CSV records, Markdown, and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from .. import metrics
from . import failures, leaderboard
from .leaderboard import Entry, Summary, mean, std
from .plots import FORMATS as FIGURE_FORMATS
from .plots import render as render_figure
from .report import Report

FORMATS = ("md", "csv", "json", "html")



# -- plain values ---------------------------------------------------------------------------------


def entry_record(e: Entry) -> dict[str, Any]:
    record: dict[str, Any] = {"suite": e.suite, "method": e.method, "ratio": e.ratio, "rank": e.rank, "status": e.status,
                              "n": e.n, "failed": e.failed, "skipped": e.skipped, "new_weights": e.new_weights,
                              "unverified": e.unverified}
    names = ["top1", "top1_pre", "top5", "compression", "speedup", "speedup_measured"]
    names += LM_VALUES if departs(e) else []
    for name in names:
        values = [v for v in getattr(e, name) if v is not None]
        record[f"{name}_mean"], record[f"{name}_std"] = mean(values), std(values)
    record["seeds"] = list(e.seeds)
    return {**record, **_described(e)} if departs(e) else record


def summary_record(s: Summary) -> dict[str, Any]:
    record = {"suite": s.suite, "method": s.method, "rank": s.rank, "status": s.status, "area_mean": mean(s.auc),
              "area_std": std(s.auc), "n": s.n, "failed": s.failed, "missing_ratios": list(s.missing),
              "ratios": list(s.ratios), "area_per_seed": dict(zip(map(str, s.seeds), s.auc))}
    return {**record, "metric": s.metric} if s.metric != metrics.DEFAULT else record


def departs(e: Entry) -> bool:
    """Whether an entry's suite departs from the defaults (ranked by top-1, compression of the whole model, no
    protocol): only then do its records carry the fields that say how (a default suite's records read as they did)."""
    return e.metric != metrics.DEFAULT or e.basis != metrics.BASIS_MODEL or e.protocol_hash is not None


def _described(e: Entry) -> dict[str, Any]:
    """How a departing suite's numbers are to be read: its metric and direction, compression basis and protocol."""
    return {"metric": e.metric, "direction": metrics.direction(e.metric), "compression_basis": e.basis,
            "protocol_hash": e.protocol_hash, "protocol": e.protocol}


LM_VALUES = ["perplexity", "perplexity_pre", "compression_prunable"]  # averaged over seeds for departing suites
ENTRY_COLUMNS = ["suite", "method", "ratio", "rank", "status", "n", "failed", "skipped", "new_weights", "unverified", "top1_mean", "top1_std",
                 "top1_pre_mean", "top1_pre_std", "top5_mean", "top5_std", "compression_mean", "compression_std",
                 "speedup_mean", "speedup_std", "speedup_measured_mean", "speedup_measured_std"]
# Appended when some suite of the report departs from the defaults (see departs).
LM_COLUMNS = ["metric", "direction", "compression_basis", "protocol_hash"] + [f"{n}_{s}" for n in LM_VALUES for s in ("mean", "std")]
SUMMARY_COLUMNS = ["suite", "method", "rank", "status", "area_mean", "area_std", "n", "failed", "missing_ratios"]


def to_json(report: Report) -> dict[str, Any]:
    return {
        "title": report.title,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": report.sources,
        "notes": report.notes,
        "suites": {
            suite: {
                **(_described(report.entries_of(suite)[0]) if departs(report.entries_of(suite)[0]) else {}),
                "setup": report.setup(suite),
                "summary": [summary_record(s) for s in report.summaries_of(suite)],
                "leaderboard": [entry_record(e) for e in report.entries_of(suite)],
                "failed_cases": [_failure(r) for r in report.failed_rows(suite)],
            }
            for suite in report.suites
        },
    }


def _failure(row: dict[str, Any]) -> dict[str, Any]:
    return {"method": row["method"], "ratio": row["ratio"], "seed": row["seed"], "message": row.get("message")}


def _csv(columns: list[str], records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: " ".join(f"{v:g}" for v in record[k]) if isinstance(record.get(k), list) else record.get(k) for k in columns})
    return out.getvalue()


def to_csv(report: Report) -> str:
    """One row per suite × method × ratio (means and sample stds over seeds; empty when none passed)."""
    extra = LM_COLUMNS if any(map(departs, report.entries)) else []
    return _csv(ENTRY_COLUMNS + extra, [entry_record(e) for e in report.entries])


def summary_csv(report: Report) -> str:
    extra = ["metric"] if any(s.metric != metrics.DEFAULT for s in report.summaries) else []
    return _csv(SUMMARY_COLUMNS + extra, [summary_record(s) for s in report.summaries])


# -- Markdown -------------------------------------------------------------------------------------


def _md_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


SUMMARY_HEADERS = ["rank", "method", "area: mean top-1 over log2 compression", "seeds"]


def summary_headers(report: Report, suite: str) -> list[str]:
    """The summary table's headers: the area is of the suite's ranking metric."""
    label = leaderboard.board_metric(report.entries_of(suite)).label
    return [*SUMMARY_HEADERS[:2], f"area: mean {label} over log2 compression", *SUMMARY_HEADERS[3:]]


def summary_rows(report: Report, suite: str) -> list[list[str]]:
    return [[s.status, s.method, leaderboard.mean_std(s.auc), str(s.n)] for s in report.summaries_of(suite)]


def _setup_line(report: Report, suite: str) -> str:
    setup = report.setup(suite)
    parts = [f"base weights sha256 {', '.join(v[:12] for v in setup.get('base_sha256', [])) or '-'}"]
    for name, label in (("recipe_hash", "recipe"), ("torch", "torch"), ("python", "python"), ("threads", "threads"), ("device", "device"),
                        ("sandbox", "methods ran at")):
        if setup.get(name):
            parts.append(f"{label} {', '.join(setup[name])}")
    counts = Counter(r.get("status") for r in report.rows_of(suite))
    cases = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{sum(counts.values())} cases ({cases}); " + "; ".join(parts)


def _ratio_range(report: Report, suite: str) -> str:
    ratios = sorted({e.ratio for e in report.entries_of(suite)})
    return f"x{ratios[0]:g}–x{ratios[-1]:g}" if ratios else ""


INTRO = ("Top-1 after fine-tuning, mean ± sample std over seeds; methods ranked per ratio (*1 = best, equal means share "
         "a rank; 'tied' where every method has the same mean, as at x1, where all are the unpruned model). A method "
         "with a failed case is shown FAILED k/n and never ranked; the failed cases are listed with their reasons. "
         "The summary is the area under top-1 vs log2(compression ratio) divided by the log2 range: the average "
         "top-1 over the compression range, per seed.")
# Added to the introduction when some suite departs from the defaults (a language model's).
INTRO_DEPARTING = ("A suite ranked by another metric, or whose ratio counts its prunable weights only, says so above its "
                   "tables, with the protocol its numbers were measured by: perplexity is ranked lowest first, its summary "
                   "is the average perplexity over the compression range, and rows of two protocols (a context length, a "
                   "calibration set, a corpus) are two leaderboards, never merged or compared.")


def intro(report: Report) -> str:
    return f"{INTRO} {INTRO_DEPARTING}" if any(map(departs, report.entries)) else INTRO
FAILURE_HEADERS = ["method", "cases", "reason"]
SKIP_HEADERS = ["cases", "reason"]


def failure_rows(report: Report, suite: str) -> list[list[str]]:
    """The suite's failed cases grouped by method and reason: one table row per distinct reason."""
    return [[g.method, f"{len(g.cases)}: {g.where}", g.reason] for g in failures.group(report.rows) if g.suite == suite]


def skip_rows(report: Report, suite: str) -> list[list[str]]:
    return [[f"{len(g.cases)}", g.reason] for g in failures.group(report.rows, "skipped", by_method=False) if g.suite == suite]


def figure_names(suite: str, metric: str = metrics.DEFAULT) -> dict[str, dict[str, str]]:
    """File names of a suite's figures (of its ranking metric), by axis and format."""
    return {axis: {fmt: f"{suite}-{metric}-vs-{axis}.{fmt}" for fmt in FIGURE_FORMATS} for axis in ("compression", "speedup")}


def _figure_names(report: Report, suite: str) -> dict[str, dict[str, str]]:
    return figure_names(suite, leaderboard.board_metric(report.entries_of(suite)).name)


def to_markdown(report: Report, figures: bool = False) -> str:
    """The report as Markdown; with ``figures``, each suite links its figure files (written beside it)."""
    out = [f"# {report.title}", "", intro(report), ""]
    out += [f"> note: {n}" for n in report.notes]
    if report.notes:
        out.append("")
    for suite in report.suites:
        entries = report.entries_of(suite)
        out += [f"## {suite}", "", _setup_line(report, suite), ""]
        out += [f"{line}  " for line in leaderboard.heading(entries)] + ([""] if leaderboard.heading(entries) else [])
        if figures:
            label = leaderboard.board_metric(entries).label
            for axis, names in _figure_names(report, suite).items():
                out += [f"![{suite}: {label} vs {axis}]({names['png']}) ([PDF]({names['pdf']}), [SVG]({names['svg']}))", ""]
        out += [f"### Summary ({_ratio_range(report, suite)})", "", md_table(summary_headers(report, suite), summary_rows(report, suite)), ""]
        out += ["### Leaderboard", "", md_table(*leaderboard.table(entries)), ""]
        out += [f"{note}  " for note in leaderboard.footnotes(entries)] + ([""] if leaderboard.footnotes(entries) else [])
        if failure_rows(report, suite):
            out += ["### Failed cases", "", md_table(FAILURE_HEADERS, failure_rows(report, suite)), ""]
        if skip_rows(report, suite):
            out += ["### Skipped cases", "", md_table(SKIP_HEADERS, skip_rows(report, suite)), ""]
    return "\n".join(out)


# -- HTML -----------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
tr.failed td { background: #fde8e8; } tr.best td { font-weight: bold; }
.note { background: #fff6d6; padding: 0.4em 0.8em; border-left: 4px solid #e0b400; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots figure { margin: 0; } .plots img { max-width: 100%; border: 1px solid #ddd; }
.footnote { color: #555; font-size: 0.85em; margin-top: -1em; }
.setup { color: #555; font-size: 0.9em; }
"""


def _html_table(headers: list[str], rows: list[list[Any]], statuses: list[str], left: int) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row, status in zip(rows, statuses):
        cls = "failed" if status.startswith("FAILED") else "best" if status == "*1" else ""
        cells = "".join(f'<td class="{"l" if i < left else ""}">{html.escape(str(v))}</td>' for i, v in enumerate(row))
        body.append(f'<tr class="{cls}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: Report, svgs: dict[str, dict[str, bytes]]) -> str:
    """A single self-contained page: tables, and the figures embedded as SVG (vector: sharp at any zoom, and a
    quarter of the 300-dpi PNG's size), each linked to its files."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
           f"<style>{CSS}</style></head><body><h1>{html.escape(report.title)}</h1>", f"<p>{html.escape(intro(report))}</p>"]
    out += [f"<p class='note'>note: {html.escape(n)}</p>" for n in report.notes]
    for suite in report.suites:
        entries = report.entries_of(suite)
        out.append(f"<h2>{html.escape(suite)}</h2><p class='setup'>{html.escape(_setup_line(report, suite))}</p>")
        out += [f"<p class='setup'>{html.escape(line)}</p>" for line in leaderboard.heading(entries)]
        out.append("<div class='plots'>")
        label = html.escape(leaderboard.board_metric(entries).label)
        for axis, image in svgs.get(suite, {}).items():
            encoded = base64.b64encode(image).decode("ascii")
            names = _figure_names(report, suite)[axis]
            out.append(f"<figure><img alt='{html.escape(suite)}: {label} vs {axis}' src='data:image/svg+xml;base64,{encoded}'>"
                       f"<figcaption><a href='{html.escape(names['pdf'])}'>PDF</a> · <a href='{html.escape(names['svg'])}'>SVG</a> · "
                       f"<a href='{html.escape(names['png'])}'>PNG</a>"
                       "</figcaption></figure>")
        out.append("</div>")
        summaries = report.summaries_of(suite)
        out.append(f"<h3>Summary ({html.escape(_ratio_range(report, suite))})</h3>")
        out.append(_html_table(summary_headers(report, suite), summary_rows(report, suite), [s.status for s in summaries], 2))
        out.append("<h3>Leaderboard</h3>")
        out.append(_html_table(*leaderboard.table(entries), [e.status for e in entries], 2))
        out += [f"<p class='footnote'>{html.escape(note)}</p>" for note in leaderboard.footnotes(entries)]
        failed = failure_rows(report, suite)
        if failed:
            out.append("<h3>Failed cases</h3>")
            out.append(_html_table(FAILURE_HEADERS, failed, ["FAILED"] * len(failed), 3))
        skipped = skip_rows(report, suite)
        if skipped:
            out.append("<h3>Skipped cases</h3>")
            out.append(_html_table(SKIP_HEADERS, skipped, [""] * len(skipped), 2))
    if report.sources:
        out.append("<h2>Sources</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in report.sources) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write(report: Report, folder: Path, formats: Iterable[str] = FORMATS, plots: bool = True) -> dict[str, Path]:
    """Write the report's files into ``folder``; return them by name.

    ``leaderboard.md``, ``leaderboard.csv`` (+ ``summary.csv``), ``leaderboard.json``,
    ``leaderboard.html`` (self-contained) and each suite's figures ``<suite>-<metric>-vs-{compression,speedup}``
    as ``.png`` (300 dpi), ``.pdf`` and ``.svg``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    formats = set(formats)
    unknown = formats - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report format(s) {sorted(unknown)}; known: {', '.join(FORMATS)}")
    written: dict[str, Path] = {}

    def put(name: str, content: str | bytes) -> None:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        written[name] = path

    svgs: dict[str, dict[str, bytes]] = {}
    if plots:
        for suite in report.suites:
            for axis, names in _figure_names(report, suite).items():
                files = render_figure(report, suite, axis)
                svgs.setdefault(suite, {})[axis] = files["svg"]
                for fmt, content in files.items():
                    put(names[fmt], content)
    if "md" in formats:
        put("leaderboard.md", to_markdown(report, figures=plots) + "\n")
    if "csv" in formats:
        put("leaderboard.csv", to_csv(report))
        put("summary.csv", summary_csv(report))
    if "json" in formats:
        put("leaderboard.json", json.dumps(to_json(report), indent=1) + "\n")
    if "html" in formats:
        put("leaderboard.html", to_html(report, svgs))
    return written
