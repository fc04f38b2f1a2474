"""Merging shards: exactly the planned cases, each shard that is missing, incomplete or failing named, and a
suite whose rows come from different base models refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench.cli import EXIT_INCOMPLETE, main
from pytest_shrinkbench.identity import CaseSpec
from pytest_shrinkbench.results import report
from pytest_shrinkbench.results.store import ResultsStore
from pytest_shrinkbench.shards import Shard, read_manifest, write_manifest
from tests.helpers import row

PLAN = [CaseSpec(m, s, r, seed) for s in ("digits-cnn", "digits-mlp") for m in ("alpha", "beta") for r in (2.0, 4.0) for seed in (0, 1)]


def shard_rows(shard: Shard, **changes) -> list[dict]:
    return [row(c.method, c.ratio, c.seed, 0.9 - 0.01 * c.ratio, suite=c.suite, run=f"run-{shard.index}",
                finished=f"2024-01-01T00:00:0{shard.index}Z", **changes) for c in shard.select(PLAN)]


def write_shard(folder: Path, shard: Shard, rows: list[dict]) -> Path:
    write_manifest(folder, shard, PLAN)
    store = ResultsStore(folder / "store.sqlite")
    for r in rows:
        store.put(r)
    store.close()
    return folder


def merged(*folders: Path) -> report.Report:
    rows, sources = report.read_rows(folders)
    return report.build(rows, sources=sources, manifests=[read_manifest(p) for f in folders for p in f.glob("shard-*.json")])


def test_complete_shards_merge_into_every_planned_case_once(tmp_path: Path) -> None:
    folders = [write_shard(tmp_path / f"shard-{k}", Shard(k, 3), shard_rows(Shard(k, 3))) for k in (1, 2, 3)]
    board = merged(*folders)
    assert board.complete and board.problems == []
    assert sorted(CaseSpec.of(r).id for r in board.rows) == sorted(c.id for c in PLAN)
    single = report.build([r for k in (1, 2, 3) for r in shard_rows(Shard(k, 3))])
    assert [e.__dict__ for e in board.entries] == [e.__dict__ for e in single.entries]


def test_a_missing_shard_is_named_with_its_planned_cases(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folders = [write_shard(tmp_path / f"shard-{k}", Shard(k, 3), shard_rows(Shard(k, 3))) for k in (1, 3)]
    board = merged(*folders)
    assert board.problems == ["shard 2/3 is missing: no results folder of it was given (5 planned cases absent)"]
    assert main(["report", *map(str, folders), "-o", str(tmp_path / "report"), "-q", "--no-plots"]) == EXIT_INCOMPLETE
    assert "pytest-shrinkbench report: shard 2/3 is missing" in capsys.readouterr().err
    assert "shard 2/3 is missing" in (tmp_path / "report" / "leaderboard.md").read_text(), "the report itself says so"


def test_a_crashed_shard_is_incomplete_and_a_failed_case_is_named(tmp_path: Path) -> None:
    crashed = shard_rows(Shard(1, 2))[:-2]
    failing = shard_rows(Shard(2, 2))
    failing[0] = {**failing[0], "status": "failed", "top1": None, "message": "[method=alpha] planted failure"}
    board = merged(write_shard(tmp_path / "a", Shard(1, 2), crashed), write_shard(tmp_path / "b", Shard(2, 2), failing))
    (problem,) = board.problems
    assert problem.startswith(f"shard 1/2 ({tmp_path / 'a'}) is incomplete: 2 of its 8 cases have no result")
    assert "run it again to resume from its store" in problem and "beta-digits-mlp-x4-seed0" in problem
    assert f"shard 2/2 ({tmp_path / 'b'}): 1 failed of its 8 cases" in board.notes


def test_rows_outside_the_plan_and_older_recordings_are_left_out(tmp_path: Path) -> None:
    """A shard's store may hold an earlier run's cases (another ratio) and a crashed attempt's row of a case."""
    rows = shard_rows(Shard(1, 1))
    old = {**rows[0], "top1": 0.1, "method_hash": "alpha-v0", "finished": "2023-01-01T00:00:00Z"}
    other = row("alpha", 8, 0, 0.5, suite="digits-cnn", finished="2025-01-01T00:00:00Z")
    board = merged(write_shard(tmp_path / "s", Shard(1, 1), [*rows, old, other]))
    assert board.complete and len(board.rows) == len(PLAN) and 0.1 not in [r["top1"] for r in board.rows]
    assert {"1 rows of cases outside the shards' plan left out", "1 earlier recordings of planned cases replaced by their newest"} <= set(board.notes)


def test_shards_of_different_runs_are_a_problem(tmp_path: Path) -> None:
    first = write_shard(tmp_path / "a", Shard(1, 2), shard_rows(Shard(1, 2)))
    other = tmp_path / "b"
    write_manifest(other, Shard(2, 2), PLAN[:-1])  # a run with one case fewer
    board = merged(first, other)
    assert any(p.startswith("the shards come from 2 different runs") for p in board.problems)


def test_a_suite_from_two_base_models_is_refused_the_others_kept(tmp_path: Path) -> None:
    """Two nodes that each trained their own base model: one suite's methods on different weights."""
    one = shard_rows(Shard(1, 2))
    two = [{**r, "base_sha256": "c" * 64} if r["suite"] == "digits-mlp" else r for r in shard_rows(Shard(2, 2))]
    board = merged(write_shard(tmp_path / "a", Shard(1, 2), one), write_shard(tmp_path / "b", Shard(2, 2), two))
    (refusal,) = board.problems
    assert refusal.startswith("REFUSED digits-mlp: its rows come from 2 different base models (bbbbbbbbbbbb: 4 rows of runs run-1; "
                              "cccccccccccc: 4 rows of runs run-2)")
    assert board.suites == ["digits-cnn"] and {r["suite"] for r in board.rows} == {"digits-cnn"}
    # Without shards too: a store's methods measured on two base models are not one leaderboard.
    alpha = [r for r in one if r["method"] == "alpha"] + [r for r in two if r["method"] == "beta"]
    assert [p.split(":")[0] for p in report.build(alpha).problems] == ["REFUSED digits-mlp"]
