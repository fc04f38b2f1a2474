"""The results store: case keys, durable rows, concurrent writers, merging, and resuming a killed run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from pytest_shrinkbench.identity import case_key
from pytest_shrinkbench.results.store import (
    ResultsStore,
)
from tests.helpers import run_files

FAST = ["--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0,1", "-p", "no:randomly"]


SLOW = """
import time
from pytest_shrinkbench import method


@method("slow")
def slow(ctx):
    time.sleep(0.3)
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
"""


def test_killed_run_keeps_finished_cases_and_resumes(project: pytest.Pytester) -> None:
    """The pytest process is SIGKILLed mid-run (a crash, an OOM kill, a preempted job): no teardown, no session end."""
    project.makeconftest(SLOW)
    args = ["--shrink-method=global-magnitude,slow", *FAST, "-v"]
    process = project.popen([sys.executable, "-m", "pytest", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    store_path = project.path / "results" / "store.sqlite"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(map(len, run_files(project.path / "results").values())) < 5:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -9
    store = ResultsStore(store_path, readonly=True)
    done = {(r["method"], r["ratio"], r["seed"]) for r in store.rows()}
    assert 5 <= len(done) < 8 and all(r["status"] == "passed" for r in store.rows())
    (first,) = run_files(project.path / "results").values()
    assert {(r["method"], r["ratio"], r["seed"]) for r in first} == done, "the killed run's JSON Lines file keeps its finished rows too"

    # Resumed by two workers: they look cases up in the store while the controller writes the new ones.
    resumed = project.runpytest_subprocess(*args, "-n", "2", "--junitxml=junit.xml")
    assert resumed.ret == 0
    outcomes = resumed.parseoutcomes()
    assert outcomes["passed"] == 8 - len(done) and outcomes["reused"] == len(done), outcomes
    resumed.stdout.fnmatch_lines([f"*{len(done)} cases reused from it (--shrink-rerun runs them again)*"])
    runs = run_files(project.path / "results")
    (second,) = [rows for name, rows in runs.items() if len(rows) == 8]
    ran = {(r["method"], r["ratio"], r["seed"]) for r in second if not r["reused"]}
    assert ran and not ran & done, "only the missing cases run"
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
