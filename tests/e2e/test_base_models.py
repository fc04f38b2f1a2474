"""Subjects: the digits split, base models trained once and cached, verified by sha256, loaded safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench.sandbox.methods import load_installed
from tests.helpers import result_rows

load_installed()  # registers the baselines


def test_one_worker_trains_under_xdist(project: pytest.Pytester, tmp_path: Path) -> None:
    """With a cold cache and -n 2, exactly one worker trains each base model; the other loads its file."""
    log = tmp_path / "trainings.log"
    project.makeconftest(
        "import os\n"
        "import pytest_shrinkbench.suites.subject as subject\n"
        "original = subject._train_and_store\n"
        "def logged(suite, *args):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f\"{suite.name} {os.environ.get('PYTEST_XDIST_WORKER')}\\n\")\n"
        "    return original(suite, *args)\n"
        "subject._train_and_store = logged\n"
    )
    result = project.runpytest_subprocess(
        "--shrink-method=random", "--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0,1",
        f"--shrink-cache={tmp_path / 'cold'}", "-n", "2",
    )
    result.assert_outcomes(passed=4)
    trainings = log.read_text().splitlines()
    assert len(trainings) == 1 and trainings[0].startswith("digits-mlp gw"), trainings
    rows = result_rows(project.path / "results")
    assert len({r["base_sha256"] for r in rows}) == 1
