"""The results store: case keys, durable rows, concurrent writers, merging, and resuming a killed run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_shrinkbench.store as store_module
from pytest_shrinkbench.store import ResultsStore, case_key, is_store, latest_setups, merge_rows
from synthetic import row

FAST = ["--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0,1", "-p", "no:randomly"]


def test_case_key_covers_what_changes_numbers() -> None:
    base = row("m", 4, 0, 0.9)
    assert case_key(base) == case_key({**base, "top1": 0.1, "platform": "other", "finished": "later"}), "metrics are not identity"
    assert case_key(base) == case_key({**base, "ratio": 4, "seed": 0.0 + 0}), "4 and 4.0 are the same ratio"
    assert case_key({**base, "device": "cuda:0"}) == case_key({**base, "device": "cuda:1"})
    for field, other in [("method", "n"), ("method_hash", "v2"), ("suite", "digits-cnn"), ("base_sha256", "c" * 64),
                         ("recipe_hash", "x"), ("ratio", 8.0), ("seed", 1), ("torch", "2.15"), ("python", "3.12.0"),
                         ("threads", 2), ("device", "cuda"), ("measure_version", 1)]:
        assert case_key({**base, field: other}) != case_key(base), field


def test_store_keeps_one_row_per_case_latest_wins(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.sqlite")
    first = row("m", 4, 0, 0.9, finished="2024-01-01T00:00:00Z")
    key = store.put(first)
    store.put(row("m", 4, 1, 0.8))
    assert len(store) == 2 and store.get(key)["top1"] == 0.9
    store.put({**first, "top1": 0.95, "finished": "2024-01-02T00:00:00Z"})  # a re-run of the same case
    assert len(store) == 2 and store.get(key)["top1"] == 0.95
    store.put({**first, "status": "failed"})
    assert store.get(key) is None, "only passed cases are reused"
    assert store.get(key, status=None)["status"] == "failed"
    store.close()
    assert is_store(tmp_path / "s.sqlite") and not is_store(tmp_path)
    mode = sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


WRITER = """
import importlib.util
import sys
# store.py needs only the standard library: load it alone, without the package (and torch).
spec = importlib.util.spec_from_file_location("store", {module!r})
store_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(store_module)
sys.path.insert(0, {tests!r})
from synthetic import row
store = store_module.ResultsStore({path!r})
worker = int(sys.argv[1])
for i in range(200):
    # seeds 0-99 are written by every process (the same cases), 100-199 by this one only
    seed = i if i < 100 else 1000 * (worker + 1) + i
    store.put(row("m", 2, seed, 0.5, writer=worker))
store.close()
"""


def test_concurrent_writer_processes_neither_lose_nor_duplicate(tmp_path: Path) -> None:
    """Several processes (e.g. shards on one machine) writing one store at once: every case exactly once."""
    path = tmp_path / "shared.sqlite"
    ResultsStore(path).close()
    script = WRITER.format(module=store_module.__file__, tests=str(Path(__file__).parent), path=str(path))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = ResultsStore(path, readonly=True)
    rows = store.rows()
    seeds = [r["seed"] for r in rows]
    assert len(rows) == len(store) == 100 + 3 * 100
    assert len(set(seeds)) == len(seeds)
    assert sorted(s for s in seeds if s < 100) == list(range(100))
    assert {r["writer"] for r in rows} == {0, 1, 2}


def test_merge_dedupes_by_key_and_latest_setup_wins() -> None:
    old = [row("m", r, s, 0.5, finished="2024-01-01T00:00:00Z") for r in (2, 4) for s in (0, 1)]
    again = [{**r, "top1": 0.6, "finished": "2024-01-02T00:00:00Z"} for r in old[:2]]  # same keys, re-run later
    merged = merge_rows(old + again)
    assert len(merged) == 4
    assert sorted(r["top1"] for r in merged) == [0.5, 0.5, 0.6, 0.6]
    # A later version of the method (new source hash) at one ratio only: the old version is dropped entirely.
    newer = [row("m", 2, s, 0.7, method_hash="m-v2", finished="2024-02-01T00:00:00Z") for s in (0, 1)]
    other = [row("o", 2, 0, 0.4, finished="2023-01-01T00:00:00Z")]
    kept, superseded = latest_setups(merge_rows(old + again + newer + other))
    assert sorted((r["method"], r["method_hash"]) for r in kept) == [("m", "m-v2")] * 2 + [("o", "o-v1")]
    assert len(superseded) == 4
    # A failure before the setup was known (no hashes) is kept where no row of the chosen setup covers it.
    early = row("m", 8, 0, status="failed", method_hash=None, base_sha256=None)
    covered = row("m", 2, 0, status="failed", method_hash=None, base_sha256=None)
    kept, superseded = latest_setups(newer + [early, covered])
    assert early in kept and covered in superseded


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


def jsonl_rows(folder: Path) -> dict[str, list[dict]]:
    return {f.name: [json.loads(line) for line in f.read_text().splitlines()] for f in sorted(folder.glob("*.jsonl"))}


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
    (first,) = jsonl_rows(project.path / "results").values()
    assert len(first) == 6, "the interrupted run's JSON Lines file keeps its finished rows too"

    flag.unlink()
    # Resumed by two workers: they look cases up in the store while the controller writes the new ones.
    resumed = project.runpytest_subprocess(*args, "-n", "2", "--junitxml=junit.xml")
    assert resumed.ret == 0
    outcomes = resumed.parseoutcomes()
    assert outcomes["passed"] == 2 and outcomes["reused"] == 6, outcomes
    resumed.stdout.fnmatch_lines(["*6 cases reused from it (--shrink-rerun runs them again)*"])
    runs = jsonl_rows(project.path / "results")
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
