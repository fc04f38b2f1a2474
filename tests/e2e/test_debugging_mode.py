"""Stepping into a method: --shrink-sandbox=in-process runs it in the pytest process, and its rows say so."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pytest_shrinkbench.results.signing import key_path, load_key
from tests.helpers import MEMORY_SEARCH, needle, only_run

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


CHEATS = (Path(__file__).parent / "redteam_methods.py").read_text()
# The method being debugged looks around its (the pytest) process: for any other method file's or package's module,
# for what importing the red team's file would have left (finding 4), and for the signing key in its memory.
ALONE = MEMORY_SEARCH + '''
import builtins, sys
from pytest_shrinkbench import method


@method("alone")
def alone(ctx):
    others = [m for m in sys.modules if m.startswith(("shrinkbench_methods.", "pytest_shrinkbench.baselines.")) and m != __name__]
    if others or hasattr(builtins, "SHRINKBENCH_REDTEAM_IMPORTED"):
        raise RuntimeError(f"ATTACK SUCCEEDED: imported in the debugging process: {others}")
    if holds_the_secret():
        raise RuntimeError("ATTACK SUCCEEDED: the debugging process holds the signing key")
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''


def test_debugging_imports_only_the_debugged_methods_file_and_holds_no_key(
        project: pytest.Pytester, shrink_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: every method file used to be imported in the process that signs rows; now discovery runs in
    walled children and this process imports the selected method's file alone, never loads the key, signs nothing."""
    methods = project.mkdir("methods")
    methods.joinpath("alone.py").write_text(ALONE)
    methods.joinpath("cheats.py").write_text(CHEATS)
    monkeypatch.setenv("SHRINKBENCH_TEST_NEEDLE", needle(load_key(key_path(shrink_cache))))
    result = project.runpytest_subprocess("--shrink-method=alone,global-magnitude", *CASE, "--shrink-sandbox=in-process")
    result.assert_outcomes(passed=2)
    rows = {r["method"]: r for r in only_run(project.path / "results")}
    assert all(r["sandbox"] == "in-process" and r.get("mac") is None for r in rows.values()), "debugging rows are unsigned"
