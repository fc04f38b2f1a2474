"""Base models as a user's runs see them: trained once per cache under -n, the same identity on every machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_two_fresh_caches_in_two_processes_give_one_identity(tmp_path: Path) -> None:
    """Two machines (here: two processes, two empty caches) training the same base model agree on its identity,
    so a fresh cache, a CI runner or a cluster node reuses what the others stored."""
    train = "import sys; from pytest_shrinkbench import load_subject; print(load_subject('digits-cnn', cache_dir=sys.argv[1]).sha256)"
    runs = [subprocess.Popen([sys.executable, "-c", train, str(tmp_path / name)], stdout=subprocess.PIPE, text=True)
            for name in ("machine-a", "machine-b")]
    identities = [run.communicate(timeout=600)[0].split()[-1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert identities[0] == identities[1] and len(identities[0]) == 64
    (a,), (b,) = (list((tmp_path / name).glob("digits-cnn-*.pt")) for name in ("machine-a", "machine-b"))
    states = [torch.load(path, weights_only=True) for path in (a, b)]
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert a.read_bytes() == b.read_bytes(), "saved through a buffer: not even the archive's inner name differs"
