"""A run split into shards, as a cluster runs it: base models prepared once, shards run concurrently (with -n
inside) into their own folders, merged by the report command into exactly what one machine produces."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import EXIT_INCOMPLETE, EXIT_OK, main
from pytest_shrinkbench.identity import CaseSpec
from tests.helpers import result_rows

RUN = ["--shrink-method=global-magnitude,random", "--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0,1,2",
       "-p", "no:randomly"]
SAME = ("status", "top1", "top5", "top1_pre", "top5_pre", "top1_base", "params_total", "params_nonzero", "compression",
        "flops_dense", "flops_sparse", "speedup", "base_sha256", "method_hash", "recipe_hash", "measure_version")


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def prepare(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_shrinkbench", "prepare", *args], cwd=project.path,
                          capture_output=True, text=True, timeout=600)


def merged_report(tmp_path: Path, name: str, *folders: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    out = tmp_path / name
    status = main(["report", *map(str, folders), "-o", str(out), "-q", "--no-plots", "--format=json", *extra])
    document = json.loads((out / "leaderboard.json").read_text())
    return status, {suite: {k: v for k, v in body.items()} for suite, body in document["suites"].items()}


def test_three_concurrent_shards_merge_into_the_serial_run(project: pytest.Pytester, tmp_path: Path) -> None:
    ready = prepare(project, *RUN)
    assert ready.returncode == 0 and ready.stdout.startswith("digits-mlp: "), ready.stdout + ready.stderr
    shards = [
        subprocess.Popen(pytest_command(*RUN, f"--shrink-shard={k}/3", f"--shrink-results=shard-{k}",
                                        "--shrink-cache-mode=readonly", *(["-n", "2"] if k == 2 else [])),
                         cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in (1, 2, 3)
    ]
    outputs = [shard.communicate(timeout=900)[0] for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0, 0], outputs
    project.runpytest_subprocess(*RUN, "--shrink-results=serial").assert_outcomes(passed=12)

    folders = [project.path / f"shard-{k}" for k in (1, 2, 3)]
    ran = [{CaseSpec.of(r).id for r in result_rows(f)} for f in folders]
    assert [len(cases) for cases in ran] == [4, 4, 4] and len(set.union(*ran)) == 12, "disjoint, balanced, complete"
    assert ran[1] == set(json.loads((folders[1] / "shard-2-of-3.json").read_text())["cases"]), "-n 2 inside: the same slice"
    serial = {CaseSpec.of(r).id: r for r in result_rows(project.path / "serial")}
    for row in (r for f in folders for r in result_rows(f)):
        assert {k: row[k] for k in SAME} == {k: serial[CaseSpec.of(row).id][k] for k in SAME}, CaseSpec.of(row).id

    status, single = merged_report(tmp_path, "single", project.path / "serial", extra=("--save-baseline", str(tmp_path / "base.json")))
    assert status == EXIT_OK
    status, sharded = merged_report(tmp_path, "sharded", *folders, extra=("--baseline", str(tmp_path / "base.json")))
    assert status == EXIT_OK, "every shard present, and the gate passes against the serial run's baseline"
    assert sharded == single, "the same leaderboard, summaries, setup and failures"
    main(["report", *map(str, folders), "-o", str(tmp_path / "again"), "-q", "--save-baseline", str(tmp_path / "sharded.json")])
    expected = json.loads((tmp_path / "base.json").read_text())
    assert json.loads((tmp_path / "sharded.json").read_text())["entries"] == expected["entries"]


def test_a_killed_shard_is_named_then_resumed_by_running_it_again(project: pytest.Pytester, tmp_path: Path) -> None:
    """A node lost mid-run (scancel, a crash): the report says which shard lacks what; re-running it resumes."""
    args = [*RUN, "--shrink-shard=1/2", "--shrink-results=shard-1"]
    store = project.path / "shard-1" / "store.sqlite"
    shard = subprocess.Popen(pytest_command(*args), cwd=project.path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _stored(store) < 2 and shard.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(shard.pid, signal.SIGKILL)  # no teardown, no session end: as a lost node
    shard.wait()
    done = _stored(store)
    assert 2 <= done < 6, "killed part-way"
    project.runpytest_subprocess(*RUN, "--shrink-shard=2/2", "--shrink-results=shard-2").assert_outcomes(passed=6)
    folders = [project.path / "shard-1", project.path / "shard-2"]
    assert main(["report", *map(str, folders), "-o", str(tmp_path / "partial"), "-q", "--no-plots"]) == EXIT_INCOMPLETE
    assert f"shard 1/2 ({folders[0]}) is incomplete: {6 - done} of its 6 cases have no result" in \
        (tmp_path / "partial" / "leaderboard.md").read_text()

    resumed = project.runpytest_subprocess(*args)
    outcomes = resumed.parseoutcomes()
    assert outcomes.get("reused") == done and outcomes["passed"] == 6 - done, outcomes
    assert main(["report", *map(str, folders), "-o", str(tmp_path / "whole"), "-q", "--no-plots"]) == EXIT_OK


def _stored(store: Path) -> int:
    try:
        with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_read_only_shard_fails_the_cases_of_an_unprepared_suite_naming_prepare(project: pytest.Pytester, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = prepare(project, "--shrink-suite=digits-mlp", f"--shrink-cache={cache}")
    again = prepare(project, "--shrink-suite=digits-mlp", f"--shrink-cache={cache}")
    assert first.stdout.startswith("digits-mlp: trained ") and again.stdout.startswith("digits-mlp: verified "), first.stdout + first.stderr
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=digits-mlp,digits-cnn", "--shrink-ratios=2",
                                          "--shrink-seeds=0", f"--shrink-cache={cache}", "--shrink-cache-mode=readonly")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*[[]method=random suite=digits-cnn ratio=x2 seed=0[]] could not load suite 'digits-cnn': RuntimeError: suite digits-cnn: "
        f"no base model {cache}/digits-cnn-*.pt, and the cache is read-only (--shrink-cache-mode=readonly): prepare it once "
        f"with this run's options, e.g. pytest-shrinkbench prepare --shrink-suite=digits-cnn --shrink-cache={cache}*",
    ])
    assert not list(cache.glob("digits-cnn-*")), "a read-only shard never trains"


@pytest.mark.parametrize("shard", ["0/3", "4/3", "two/3"])
def test_a_shard_outside_the_run_is_a_usage_error(project: pytest.Pytester, shard: str) -> None:
    result = project.runpytest_inprocess("--shrink-method=random", f"--shrink-shard={shard}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--shrink-shard: must be K/N with 1 <= K <= N (shard K of N), got '{shard}'*"])
