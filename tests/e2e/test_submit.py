"""``pytest-shrinkbench submit``: the shards as a job array through submitit (here its local executor, which
runs the array's tasks as processes of this machine), waited for and merged; submitted again, nothing reruns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import run_files

pytest.importorskip("submitit", reason='pip install -e ".[slurm]"')

RUN = ["--shrink-method=global-magnitude,random", "--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0,1",
       "-p", "no:randomly"]


def cli(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_shrinkbench", *args], cwd=project.path, capture_output=True,
                          text=True, timeout=900)


def test_two_shards_through_submitit_are_merged_and_resubmitting_reruns_nothing(project: pytest.Pytester) -> None:
    assert cli(project, "prepare", *RUN).returncode == 0
    submit = ["submit", "--cluster=local", "--shards=2", "--output=shards", "--time=30", "--wait", "--", *RUN]
    first = cli(project, *submit)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for k in (1, 2):
        assert f"shard {k}/2: pytest exited 0" in first.stdout
    board = json.loads((project.path / "shards" / "report" / "leaderboard.json").read_text())
    cases = {(e["method"], e["ratio"]): e["n"] for e in board["suites"]["digits-mlp"]["leaderboard"]}
    assert cases == {("global-magnitude", 4.0): 2, ("random", 4.0): 2}, "both shards merged: every case once"
    assert not [n for n in board["notes"] if "missing" in n or "incomplete" in n]

    again = cli(project, *submit)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for k in (1, 2):
        runs = run_files(project.path / "shards" / f"shard-{k}")
        assert len(runs) == 2 and all(r["reused"] for r in list(runs.values())[-1]), "the stores answered every case"


def test_submit_sets_the_per_shard_options_itself(project: pytest.Pytester) -> None:
    result = cli(project, "submit", "--cluster=local", "--shards=2", "--", *RUN, "--shrink-results=mine")
    assert result.returncode == 2
    assert "submit sets --shrink-shard, --shrink-results, --shrink-store for each shard (got '--shrink-results=mine')" in result.stderr
