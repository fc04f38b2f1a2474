"""The recipes of docs/cluster.md, exercised: the plain sbatch array script run as Slurm would run its tasks,
and the GitHub Actions matrix parsed, checked and its steps' commands run, each ending in one merged report."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import EXIT_OK, main
from tests.helpers import result_rows

yaml = pytest.importorskip("yaml", reason='pip install -e ".[slurm]"')

EXAMPLES = Path(__file__).parents[2] / "examples"
SMALL = ["--shrink-method=random", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0,1,2", "-p", "no:randomly"]


def bash(project: pytest.Pytester, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "bash", *args], cwd=project.path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900)


def merged_cases(folder: Path) -> dict[tuple[str, float], int]:
    board = json.loads((folder / "leaderboard.json").read_text())
    return {(e["method"], e["ratio"]): e["n"] for body in board["suites"].values() for e in body["leaderboard"]}


def test_the_sbatch_array_script_runs_each_task_as_its_shard(project: pytest.Pytester, tmp_path: Path) -> None:
    script = (EXAMPLES / "slurm-array.sbatch").read_text()
    assert re.search(r"^#SBATCH --array=1-\d+$", script, re.M), "tasks count from 1, as --shrink-shard does"
    assert '--shrink-shard="$INDEX/$COUNT"' in script and "--shrink-cache-mode=readonly" in script
    first = script.index("#SBATCH")
    assert all(line.startswith("#") or not line.strip() for line in script[:first].splitlines()[1:]), "directives before any command"
    prepared = bash(project, "pytest-shrinkbench prepare \"$@\"", *SMALL)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    for task in ("1", "2"):  # no Slurm here: the variables it sets for array task K of 2
        ran = bash(project, script, *SMALL, SLURM_ARRAY_TASK_ID=task, SLURM_ARRAY_TASK_COUNT="2")
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    shards = [project.path / "shrinkbench-shards" / f"shard-{k}" for k in (1, 2)]
    assert [len(result_rows(folder)) for folder in shards] == [2, 1]
    assert main(["report", *map(str, shards), "-o", str(tmp_path / "report"), "-q", "--no-plots"]) == EXIT_OK
    assert merged_cases(tmp_path / "report") == {("random", 2.0): 3}


def test_the_github_actions_matrix_prepares_once_runs_every_shard_and_merges(project: pytest.Pytester) -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions-shards.yml").read_text())
    jobs, env = workflow["jobs"], workflow["env"]
    assert jobs["shard"]["needs"] == "prepare" and jobs["merge"]["needs"] == "shard" and jobs["merge"]["if"] == "always()"
    assert jobs["shard"]["strategy"]["matrix"]["index"] == list(range(1, int(env["COUNT"]) + 1)), "COUNT is the matrix's length"
    assert jobs["shard"]["env"]["INDEX"] == "${{ matrix.index }}"

    def run_step(job: str, needle: str) -> str:
        (command,) = [s["run"] for s in jobs[job]["steps"] if needle in s.get("run", "")]
        return command

    prepare = run_step("prepare", "pytest-shrinkbench prepare")
    shard = run_step("shard", "--shrink-shard")
    merge = run_step("merge", "pytest-shrinkbench report")
    assert "--shrink-shard=$INDEX/$COUNT" in shard and "--shrink-results=shard-$INDEX" in shard
    assert "--shrink-cache-mode=readonly" in shard and "$PYTEST_ARGS" in prepare and "$PYTEST_ARGS" in shard
    assert merge.startswith("pytest-shrinkbench report shard-*/")
    assert any(s.get("with", {}).get("pattern") == "shard-*" for s in jobs["merge"]["steps"]), "every shard's artifact"

    # The steps' commands, run here as the runners would (a smaller run, two shards).
    small = {**{k: str(v) for k, v in env.items()}, "PYTEST_ARGS": " ".join(SMALL), "COUNT": "2"}
    assert bash(project, prepare, **small).returncode == 0
    for index in ("1", "2"):
        ran = bash(project, shard, **small, INDEX=index)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    merged = bash(project, merge, **small)
    assert merged.returncode == 0, merged.stdout[-2000:] + merged.stderr[-2000:]
    assert merged_cases(project.path / "report") == {("random", 2.0): 3}
    assert list((project.path / "base-models").glob("digits-mlp-*.pt")), "the shards read the base models prepare wrote"
