"""The results store: case keys, durable rows, concurrent writers, merging, and resuming a killed run."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_shrinkbench.identity import case_key
from pytest_shrinkbench.results.store import (
    ResultsStore,
)
from tests.helpers import run_files

FAST = ["--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0,1", "-p", "no:randomly"]


KILLER = """
import os
import signal
from pathlib import Path

from pytest_shrinkbench import method


@method("killer")
def killer(ctx):
    if ctx.compression == 4 and ctx.seed == 0 and Path({flag!r}).exists():
        os.kill(os.getpid(), signal.SIGKILL)  # as a crash or an OOM kill would: no teardown, no session end
    return ctx.keep_top({{n: w.detach().abs() for n, w in ctx.prunable.items()}})
"""




def test_killed_run_keeps_finished_cases_and_resumes(project: pytest.Pytester) -> None:
    flag = project.path / "KILL"
    flag.touch()
    project.makeconftest(KILLER.format(flag=str(flag)))
    args = ["--shrink-method=global-magnitude,killer", *FAST, "-v"]
    killed = project.runpytest_subprocess(*args)
    assert killed.ret == -9, killed.stdout.str()[-2000:]
    store = ResultsStore(project.path / "results" / "store.sqlite", readonly=True)
    done = {(r["method"], r["ratio"], r["seed"]) for r in store.rows()}
    assert done == {("global-magnitude", r, s) for r in (2.0, 4.0) for s in (0, 1)} | {("killer", 2.0, 0), ("killer", 2.0, 1)}
    assert all(r["status"] == "passed" for r in store.rows())
    (first,) = run_files(project.path / "results").values()
    assert len(first) == 6, "the interrupted run's JSON Lines file keeps its finished rows too"

    flag.unlink()
    # Resumed by two workers: they look cases up in the store while the controller writes the new ones.
    resumed = project.runpytest_subprocess(*args, "-n", "2", "--junitxml=junit.xml")
    assert resumed.ret == 0
    outcomes = resumed.parseoutcomes()
    assert outcomes["passed"] == 2 and outcomes["reused"] == 6, outcomes
    resumed.stdout.fnmatch_lines(["*6 cases reused from it (--shrink-rerun runs them again)*"])
    runs = run_files(project.path / "results")
    (second,) = [rows for name, rows in runs.items() if len(rows) == 8]
    ran = sorted((r["method"], r["ratio"], r["seed"]) for r in second if not r["reused"])
    assert ran == [("killer", 4.0, 0), ("killer", 4.0, 1)], "only the missing cases run"
    stored = {case_key(r): r for r in store.rows()}
    assert len(stored) == len(store) == 8, "every case stored exactly once"
    assert stored.keys() == {case_key(r) for r in second}
    for r in second:
        if r["reused"]:
            assert (r["top1"], r["run"], r["finished"]) == (stored[case_key(r)]["top1"], stored[case_key(r)]["run"], stored[case_key(r)]["finished"])
    store.close()
    # JUnit XML: each case's metrics as flat properties (through xdist's serializer), reused ones flagged.
    junit = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
             for c in ET.parse(project.path / "junit.xml").getroot().iter("testcase")}
    by_name = {f"test_case[{r['method']}-{r['suite']}-x{r['ratio']:g}-seed{r['seed']}]": r for r in second}
    assert junit.keys() == by_name.keys()
    for name, props in junit.items():
        assert float(props["shrinkbench.top1"]) == by_name[name]["top1"]
        assert props["shrinkbench.reused"] == str(by_name[name]["reused"])
        assert float(props["shrinkbench.compression"]) == pytest.approx(by_name[name]["ratio"], rel=1e-3)
