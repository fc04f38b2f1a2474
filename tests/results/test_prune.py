"""`pytest-shrinkbench prune`: old run files go, the store never does, and nothing goes that the store lacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import main
from pytest_shrinkbench.results import prune
from pytest_shrinkbench.results.store import ResultsStore
from tests.helpers import row

STAMPS = ("20240101T000000", "20240201T000000", "20240301T000000", "20240401T000000")


def results_folder(folder: Path, stored: bool = True) -> list[Path]:
    """Four sessions' run files (oldest first), each recording two cases, every row also in the store."""
    folder.mkdir()
    store = ResultsStore(folder / "store.sqlite") if stored else None
    runs = []
    for number, stamp in enumerate(STAMPS):
        rows = [row("a", 2, number, 0.9), row("b", 2, number, 0.8)]
        path = folder / f"run-{stamp}-{100 + number}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(path)
        for r in rows if stored else []:
            store.put(r)
    if stored:
        store.close()
    return runs


def test_keep_the_newest_runs_and_say_what_went(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = results_folder(tmp_path / "results")
    (tmp_path / "results" / "notes.jsonl").write_text("{}\n")  # not a run file: never touched
    assert main(["prune", str(tmp_path / "results"), "--keep", "1"]) == 0
    out = capsys.readouterr().out
    left = {p.name for p in (tmp_path / "results").iterdir()} - {"store.sqlite-wal", "store.sqlite-shm"}  # SQLite's own
    assert left == {runs[-1].name, "notes.jsonl", "store.sqlite"}
    for path in runs[:-1]:
        assert f"removed {path.name}" in out
    assert "removed 3 of 4 run files" in out and "the store store.sqlite is untouched" in out
    assert len(ResultsStore(tmp_path / "results" / "store.sqlite", readonly=True)) == 8


def test_older_than_goes_by_the_time_in_the_name_and_dry_run_removes_nothing(tmp_path: Path, capsys) -> None:
    runs = results_folder(tmp_path / "results")
    now = prune.started(runs[2]) + 10 * prune.DAY  # 10 days after the third run, 41 after the second
    selected = prune.plan(tmp_path / "results", older_than_days=30, now=now)
    assert selected.remove == [runs[1], runs[0]]
    assert prune.plan(tmp_path / "results", keep=1, older_than_days=30, now=now).remove == [runs[1], runs[0]], "both must hold"
    assert main(["prune", str(tmp_path / "results"), "--keep", "0", "--dry-run"]) == 0
    assert "would remove 4 of 4 run files" in capsys.readouterr().out
    assert all(path.exists() for path in runs)


def test_a_run_file_with_rows_the_store_lacks_is_kept(tmp_path: Path, capsys) -> None:
    runs = results_folder(tmp_path / "results")
    with runs[0].open("a") as handle:
        handle.write(json.dumps(row("only-here", 4, 0, 0.7)) + "\n")  # e.g. written with --shrink-store elsewhere
    assert main(["prune", str(tmp_path / "results"), "--keep", "0"]) == 0
    assert [p for p in runs if p.exists()] == [runs[0]]
    assert f"kept {runs[0].name}: 1 of its rows are not in the store" in capsys.readouterr().out


def test_without_a_store_nothing_is_removed(tmp_path: Path, capsys) -> None:
    runs = results_folder(tmp_path / "results", stored=False)
    assert main(["prune", str(tmp_path / "results"), "--keep", "1"]) == 0
    assert all(path.exists() for path in runs)
    assert "no results store in this folder: its rows may exist nowhere else" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    ([], "say what to prune: --keep N and/or --older-than DAYS"),
    (["--keep", "-1"], "argument --keep: must be a whole number >= 0, got '-1'"),
    (["--older-than", "soon"], "argument --older-than: must be a number of days >= 0, got 'soon'"),
], ids=["no-criterion", "negative-keep", "bad-days"])
def test_usage_errors_name_the_option(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    results_folder(tmp_path / "results")
    try:
        code = main(["prune", str(tmp_path / "results"), *args])
    except SystemExit as exited:  # argparse's own errors
        code = exited.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "nowhere"), "--keep", "1"]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert sum(name.startswith("run-") for name in os.listdir(tmp_path / "results")) == 4
