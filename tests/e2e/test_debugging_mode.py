"""Stepping into a method: --shrink-sandbox=in-process runs it in the pytest process, and its rows say so."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import only_run

CASE = ["--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0"]
BUGGY = '''
from pytest_shrinkbench import method


@method("mine")
def mine(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("buggy")
def buggy(ctx):
    scores = {n: w.detach().abs() for n, w in ctx.prunable.items()}
    raise ValueError("a bug in my scoring")  # the line a debugger must land on
'''


def test_debugging_mode_rows_are_unverified_never_stored_and_refused_by_the_gate(project: pytest.Pytester) -> None:
    project.mkdir("methods").joinpath("mine.py").write_text(BUGGY)
    verified = project.runpytest_subprocess("--shrink-method=mine", *CASE, "--shrink-save-baseline=base.json")
    verified.assert_outcomes(passed=1)
    (row,) = only_run(project.path / "results")
    assert row["sandbox"] == "process+landlock"
    project.path.joinpath("results", row["run"] + ".jsonl").rename(project.path / "first.jsonl")

    result = project.runpytest_subprocess("--shrink-method=mine,buggy", *CASE, "--shrink-sandbox=in-process",
                                          "--shrink-baseline=base.json", "--tb=long")
    result.assert_outcomes(passed=1, failed=1)
    rows = {r["method"]: r for r in only_run(project.path / "results")}
    assert rows["mine"]["sandbox"] == "in-process" and rows["mine"]["reused"] is False, "debugging runs every case"
    assert rows["mine"]["top1"] == row["top1"], "the same numbers, measured the same way"
    result.stdout.fnmatch_lines(["*shrinkbench: methods run in this process (debugging mode: rows are unverified)*",
                                 "*x4*mine (unverified)*", "*digits-mlp*mine*x4*UNVERIFIED*"])
    # the failure's traceback reaches into the method's own frame: --pdb lands there
    result.stdout.fnmatch_lines(["*raise ValueError(\"a bug in my scoring\")*"])
    with sqlite3.connect(project.path / "results" / "store.sqlite") as db:
        assert db.execute("SELECT sandbox FROM (SELECT json_extract(row, '$.sandbox') AS sandbox FROM results)").fetchall() == [
            ("process+landlock",)], "debugging-mode rows never enter the store"
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_debugging_mode_runs_the_baselines_and_a_users_method_under_xdist(project: pytest.Pytester) -> None:
    """Workers take the controller's discovery: each must find installed methods and method files again."""
    project.mkdir("methods").joinpath("mine.py").write_text(BUGGY)
    result = project.runpytest_subprocess("--shrink-method=mine,global-magnitude,l1-filter", *CASE,
                                          "--shrink-sandbox=in-process", "-n", "2")
    result.assert_outcomes(passed=3)
    assert {r["sandbox"] for r in only_run(project.path / "results")} == {"in-process"}
