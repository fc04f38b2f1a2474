"""The report command: shards merged, the leaderboard written as Markdown, CSV, JSON, HTML and PNG plots."""

from __future__ import annotations

import base64
import csv
import importlib
import importlib.metadata
import json
import math
import statistics
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import main
from pytest_shrinkbench.identity import protocol_hash
from pytest_shrinkbench.results import leaderboard
from pytest_shrinkbench.results.formats import to_markdown
from pytest_shrinkbench.results.plots import PLOT_PIXELS, png_size
from pytest_shrinkbench.results.report import build
from pytest_shrinkbench.results.store import ResultsStore
from tests.helpers import PROTOCOL, lm_row, row

RATIOS = (1, 2, 4, 8)
SEEDS = (0, 1, 2)


def top1(method: str, ratio: float, seed: int) -> float:
    """alpha loses little, beta more; seeds differ a bit."""
    drop = {"alpha": 0.01, "beta": 0.05, "gamma": 0.03}[method]
    return round(0.97 - drop * math.log2(ratio) - 0.004 * seed, 6)


def rows_of(suite: str, methods: tuple[str, ...], ratios: tuple[int, ...], seeds: tuple[int, ...]) -> list[dict]:
    out = []
    for m in methods:
        for r in ratios:
            for s in seeds:
                failed = m == "gamma" and r == 4 and s == 1
                out.append(row(m, r, s, None if failed else top1(m, r, s), status="failed" if failed else "passed",
                               suite=suite, finished=f"2024-01-01T00:00:{s:02d}Z"))
    return out


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """Shard A: a store with seeds 0 and 1; shard B: a JSON Lines file with seed 2 and a copy of some seed-1 rows."""
    mlp = rows_of("digits-mlp", ("alpha", "beta", "gamma"), RATIOS, SEEDS)
    cnn = rows_of("digits-cnn", ("alpha", "beta"), (1, 2), SEEDS)
    everything = mlp + cnn
    store = ResultsStore(tmp_path / "shard-a.sqlite")
    for r in everything:
        if r["seed"] < 2:
            store.put(r)
    store.close()
    duplicates = [r for r in everything if r["seed"] == 1][:5]
    lines = [json.dumps(r) for r in everything if r["seed"] == 2] + [json.dumps(r) for r in duplicates]
    (tmp_path / "shard-b.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "shard-a.sqlite", tmp_path / "shard-b.jsonl", everything


def md_tables(text: str, heading: str) -> dict[str, list[dict[str, str]]]:
    """The Markdown tables under ``## heading``, by their ``###`` title, as lists of dicts."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[dict[str, str]]] = {}
    for part in section.split("\n### ")[1:]:
        title, body = part.split("\n", 1)
        lines = [line for line in body.splitlines() if line.startswith("|")]
        cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
        tables[title] = [dict(zip(cells[0], c)) for c in cells[2:]]
    return tables


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def area(method: str, seed: int, ratios=RATIOS) -> float:
    xs = [math.log2(r) for r in ratios]
    ys = [top1(method, r, seed) for r in ratios]
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1)) / (xs[-1] - xs[0])


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.cells.append(data)


def test_report_merges_shards_and_writes_every_format(shards, tmp_path: Path, capsys) -> None:
    store, jsonl, everything = shards
    out = tmp_path / "report"
    assert main(["report", str(store), str(jsonl), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"read {len(everything) + 5} rows from 2 source(s); {len(everything)} cases after merging" in printed
    names = {"leaderboard.md", "leaderboard.csv", "summary.csv", "leaderboard.json", "leaderboard.html"}
    figures = {f"{s}-top1-vs-{a}" for s in ("digits-mlp", "digits-cnn") for a in ("compression", "speedup")}
    plots = {f"{f}.png" for f in figures}
    assert {p.name for p in out.iterdir()} == names | {f"{f}.{fmt}" for f in figures for fmt in ("png", "pdf", "svg")}

    # Markdown, parsed back
    md = (out / "leaderboard.md").read_text()
    tables = md_tables(md, "digits-mlp")
    board = {(r["ratio"], r["method"]): r for r in tables["Leaderboard"]}
    assert len(board) == len(RATIOS) * 3
    assert board[("x2", "alpha")]["top-1 (fine-tuned)"] == mean_std([top1("alpha", 2, s) for s in SEEDS])
    assert [board[("x2", m)]["rank"] for m in ("alpha", "gamma", "beta")] == ["*1", "2", "3"]
    assert [board[("x4", m)]["rank"] for m in ("alpha", "beta", "gamma")] == ["*1", "2", "FAILED 1/3"], "a failed case is never ranked"
    assert board[("x4", "gamma")]["seeds"] == "2"
    assert [board[("x8", m)]["rank"] for m in ("alpha", "gamma", "beta")] == ["*1", "2", "3"]
    assert all(board[("x1", m)]["rank"] == "tied" for m in ("alpha", "beta", "gamma")), "all equal: tied, none starred"
    summary = {r["method"]: r for r in tables["Summary (x1–x8)"]}
    assert summary["alpha"]["rank"] == "*1" and summary["beta"]["rank"] == "2"
    assert summary["gamma"]["rank"] == "FAILED (1 case)"
    assert summary["alpha"]["area: mean top-1 over log2 compression"] == mean_std([area("alpha", s) for s in SEEDS])
    assert tables["Failed cases"] == [{"method": "gamma", "cases": "1: x4 · seed 1", "reason": "planted failure"}]
    assert md_tables(md, "digits-cnn")["Leaderboard"][0]["method"] == "alpha"

    # CSV, parsed back
    entries = {(r["suite"], r["method"], float(r["ratio"])): r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert len(entries) == len(RATIOS) * 3 + 2 * 2
    alpha8 = entries[("digits-mlp", "alpha", 8.0)]
    assert float(alpha8["top1_mean"]) == pytest.approx(statistics.fmean(top1("alpha", 8, s) for s in SEEDS))
    assert float(alpha8["top1_std"]) == pytest.approx(statistics.stdev(top1("alpha", 8, s) for s in SEEDS))
    assert (alpha8["n"], alpha8["rank"], float(alpha8["compression_mean"]), float(alpha8["speedup_mean"])) == ("3", "1", 8.0, pytest.approx(8.4))
    gamma4 = entries[("digits-mlp", "gamma", 4.0)]
    assert (gamma4["status"], gamma4["rank"], gamma4["n"], gamma4["failed"]) == ("FAILED 1/3", "", "2", "1")
    areas = {(r["suite"], r["method"]): r for r in csv.DictReader((out / "summary.csv").open())}
    assert float(areas[("digits-mlp", "beta")]["area_mean"]) == pytest.approx(statistics.fmean(area("beta", s) for s in SEEDS))
    assert float(areas[("digits-mlp", "beta")]["area_std"]) == pytest.approx(statistics.stdev(area("beta", s) for s in SEEDS))

    # JSON
    data = json.loads((out / "leaderboard.json").read_text())
    assert set(data["suites"]) == {"digits-mlp", "digits-cnn"}
    assert data["suites"]["digits-mlp"]["failed_cases"] == [{"method": "gamma", "ratio": 4.0, "seed": 1, "message": "[method=gamma] planted failure"}]
    assert data["suites"]["digits-cnn"]["summary"][0]["method"] == "alpha"
    assert any("5 duplicate rows" in note for note in data["notes"])

    # PNGs and the self-contained HTML page embedding them
    for name in plots:
        image = (out / name).read_bytes()
        assert len(image) > 10_000 and png_size(image) == PLOT_PIXELS, name
    page = Images()
    page.feed((out / "leaderboard.html").read_text())
    assert len(page.images) == 4
    for src in page.images:  # the figures embedded as vector images, each the figure's SVG file
        assert src.startswith("data:image/svg+xml;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) in {(out / f"{name}.svg").read_bytes() for name in figures}
    assert "FAILED 1/3" in page.cells and "gamma" in page.cells
    assert "Failed cases" in page.cells and "planted failure" in page.cells
    for name in figures:
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF-"), name
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:1000], name


def test_area_summary_and_incomplete_methods() -> None:
    assert leaderboard.area([1, 4], [1.0, 0.5]) == pytest.approx(0.75)
    assert leaderboard.area([1, 2, 8], [1.0, 1.0, 0.0]) == pytest.approx((1 * 1 + 2 * 0.5) / 3)
    assert leaderboard.area([4], [0.8]) == 0.8
    rows = [row("a", r, s, 0.9 - 0.01 * r) for r in (1, 2, 4) for s in (0, 1)] + [row("b", r, 0, 0.9) for r in (1, 2)]
    summaries = {s.method: s for s in leaderboard.summarize(leaderboard.aggregate(rows))}
    assert summaries["a"].rank == 1 and summaries["a"].n == 2
    assert summaries["b"].rank is None and summaries["b"].missing == [4.0] and summaries["b"].status == "incomplete (no x4)"


def test_report_module_entry_point_and_console_script(shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m pytest_shrinkbench report FOLDER`` (run in this process), and the console script's entry point."""
    argv = ["pytest_shrinkbench", "report", str(tmp_path), "-o", str(tmp_path / "out"), "--format", "md,csv", "--no-plots", "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, "pytest_shrinkbench.__main__", raising=False)
    with pytest.raises(SystemExit) as exited:
        importlib.import_module("pytest_shrinkbench.__main__")  # what -m runs
    assert exited.value.code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["leaderboard.csv", "leaderboard.md", "summary.csv"]
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="pytest-shrinkbench")
    assert script.value == "pytest_shrinkbench.cli:main"


def test_report_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["report", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "o")]) == 2
    assert "no result rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "empty.jsonl"), "--format", "pdf"])


def test_a_results_folder_is_read_through_its_store_not_also_its_run_files(tmp_path: Path, capsys) -> None:
    """The default folder holds the store and every session's run file: reading both counted each case again."""
    folder = tmp_path / "shrinkbench-results"
    folder.mkdir()
    rows = rows_of("digits-mlp", ("alpha", "beta"), (1, 2), SEEDS)
    store = ResultsStore(folder / "store.sqlite")
    for r in rows:
        store.put(r)
    store.close()
    for session in range(3):  # three sessions recorded the same cases
        (folder / f"run-2024010{session}T000000-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(folder), "-o", str(tmp_path / "out"), "--no-plots", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"read {len(rows)} rows from 1 source(s); {len(rows)} cases after merging" in printed
    data = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert not any("duplicate" in note for note in data["notes"])
    assert any("3 run file(s) beside the store not read" in source for source in data["sources"]), "said, not as a note"
    # Without a store, the run files are the results; a run file named explicitly is always read.
    (folder / "store.sqlite").unlink()
    assert main(["report", str(folder), "-o", str(tmp_path / "out"), "--no-plots", "-q"]) == 0
    assert f"read {3 * len(rows)} rows from 3 source(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--baseline", "missing.json"], "pytest-shrinkbench report: --baseline: cannot read baseline missing.json"),
    (["-o", "a-file.txt"], "pytest-shrinkbench report: -o/--output: a-file.txt is a file, not a folder"),
    (["--tolerance", "-1"], "argument --tolerance: must be a number >= 0, got '-1'"),
    (["--tolerance-stds", "nan"], "argument --tolerance-stds: must be a number >= 0, got 'nan'"),
], ids=["baseline", "output", "tolerance", "tolerance-stds"])
def test_report_usage_errors_name_the_option(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file.txt").write_text("")
    (tmp_path / "rows.jsonl").write_text(json.dumps(row("alpha", 2, 0, 0.9)) + "\n")
    try:
        code = main(["report", "rows.jsonl", "--no-plots", *args])
    except SystemExit as exited:  # argparse's own errors
        code = exited.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "shrinkbench-report").exists(), "nothing is written before the options are checked"


def test_a_language_models_report_shows_its_protocols_apart_in_every_format(tmp_path: Path, capsys) -> None:
    """Runs that differ only in context length, merged from one store: two sections, each naming its protocol,
    ranked by perplexity lowest first; the CNN suite beside them reads as always."""
    longer = {**PROTOCOL, "context_length": 256}
    rows = [lm_row(m, 2, s, p + 0.01 * s, protocol=protocol, finished=f"2024-01-0{1 + (protocol is longer)}T00:00:0{s}Z")
            for protocol in (PROTOCOL, longer) for m, p in (("wanda", 3.67), ("sparsegpt", 3.28), ("row-magnitude", 3.77))
            for s in (0, 1)]
    rows += rows_of("digits-mlp", ("alpha", "beta"), (1, 2), SEEDS)
    store = ResultsStore(tmp_path / "store.sqlite")
    for r in rows:
        store.put(r)
    store.close()
    assert len(ResultsStore(tmp_path / "store.sqlite", readonly=True).rows()) == len(rows), "two protocols: two keys per case"
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "store.sqlite"), "-o", str(out)]) == 0
    assert f"{len(rows)} cases after merging" in capsys.readouterr().out, "neither protocol's rows superseded the other's"
    boards = {context: f"pydoc-lm [protocol {protocol_hash(p)}]" for context, p in ((128, PROTOCOL), (256, longer))}

    md = (out / "leaderboard.md").read_text()
    for context, board in boards.items():
        section = md.split(f"\n## {board}\n", 1)[1].split("\n## ", 1)[0]
        assert "ranked by perplexity, lower is better" in section
        assert f"protocol {protocol_hash({**PROTOCOL, 'context_length': context})}: " in section
        assert f"context_length {context}" in section and "corpus_sha256 c0ffee555555…" in section
        ranked = md_tables(md, board)["Leaderboard"]
        assert [(r["method"], r["rank"]) for r in ranked] == [("sparsegpt", "*1"), ("wanda", "2"), ("row-magnitude", "3")]
        assert ranked[0]["perplexity (final)"] == "3.285 ± 0.007" and ranked[0]["compression (prunable)"] == "x2.0"
        assert md_tables(md, board)["Summary (x2–x2)"][0]["area: mean perplexity over log2 compression"] == "3.285 ± 0.007"
        for axis in ("compression", "speedup"):
            assert (out / f"{board}-perplexity-vs-{axis}.svg").exists()
    assert "rows of two protocols (a context length, a calibration set, a corpus) are two leaderboards" in md
    assert "ranked by" not in md.split("\n## digits-mlp\n", 1)[1].split("\n## ", 1)[0], "the CNN suite's section is as it was"

    data = json.loads((out / "leaderboard.json").read_text())
    lm = data["suites"][boards[256]]
    assert (lm["metric"], lm["direction"], lm["compression_basis"]) == ("perplexity", "lower", "prunable")
    assert lm["protocol"] == longer and lm["protocol_hash"] == protocol_hash(longer)
    assert lm["leaderboard"][0]["perplexity_mean"] == pytest.approx(3.285)
    assert "metric" not in data["suites"]["digits-mlp"] and "protocol" not in data["suites"]["digits-mlp"]["leaderboard"][0]

    records = list(csv.DictReader((out / "leaderboard.csv").open()))
    by_protocol = {r["protocol_hash"] for r in records if r["suite"].startswith("pydoc-lm")}
    assert by_protocol == {protocol_hash(PROTOCOL), protocol_hash(longer)}
    cnn = next(r for r in records if r["suite"] == "digits-mlp")
    assert cnn["metric"] == "" and cnn["perplexity_mean"] == "", "a CNN row of a mixed report leaves the LM columns empty"

    page = (out / "leaderboard.html").read_text()
    assert page.count("ranked by perplexity, lower is better") == 2 and "context_length 256" in page


def test_a_checkpoint_tagged_suites_setup_line_names_its_base_and_cases() -> None:
    """A suite with several checkpoints is reported per tag: its setup line reads that tag's rows (it read none)."""
    report = build([row("alpha", 2, s, 0.9, suite="cifar10-resnet56", weights="w123") for s in (0, 1)])
    assert report.suites == ["cifar10-resnet56 [w123]"]
    assert report.setup("cifar10-resnet56 [w123]")["base_sha256"] == ["b" * 64]
    assert to_markdown(report).split("## cifar10-resnet56 [w123]\n\n", 1)[1].startswith("2 cases (2 passed); base weights sha256 bbbbbbbbbbbb")
