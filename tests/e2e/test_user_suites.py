"""Bring your own suite: a model, datasets and recipes registered by a project, run like a built-in suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import result_rows, tensors_sha256

RUN = ["--shrink-seeds=0", "-p", "no:randomly", "--shrink-store=none"]

# A few hundred seeded random samples whose class is learnable from the input (argmax of 4 pixel sums).
DATA = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytest_shrinkbench import Recipe, suite


def blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = x.flatten(1).reshape(n, 4, 9).sum(2).argmax(1)
    return TensorDataset(x, y)
'''

CONFTEST = DATA + '''

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@suite("blobs-tiny", train=lambda: blobs(320, 0), test=blobs(128, 1),
       base=Recipe("adam", lr=1e-2, epochs=6, batch_size=32),
       finetune=Recipe("adam", lr=1e-3, epochs=2, batch_size=32))
def build():
    """A conv, a batch norm and a linear head on 6x6 blobs."""
    return Tiny()


class TiedTwice(nn.Module):
    """The same 36x36 weight applied twice (tied), then a head."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(36, 36)
        self.second = nn.Linear(36, 36)
        self.second.weight = self.first.weight
        self.head = nn.Linear(36, 4)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(torch.relu(self.second(torch.relu(self.first(x)))))


@suite("blobs-tied", train=blobs(320, 0), test=blobs(128, 1),
       base=Recipe("adam", lr=1e-2, epochs=6, batch_size=32),
       finetune=Recipe("adam", lr=1e-3, epochs=2, batch_size=32))
def build_tied():
    return TiedTwice()
'''

TINY_PARAMS = (8 * 9 + 8) + 2 * 8 + (288 * 4 + 4)  # conv + bn affine + fc
TIED_PARAMS = 36 * 36 + 36 + 36 + 36 * 4 + 4  # the tied weight once, both biases, the head




@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_conftest_suite_runs_like_a_built_in_one(project: pytest.Pytester, shrink_cache: Path, workers: list[str]) -> None:
    project.makeconftest(CONFTEST)
    result = project.runpytest_subprocess(
        "--shrink-method=global-magnitude,layer-magnitude", "--shrink-suite=blobs-tiny", "--shrink-ratios=1,4", *RUN, *workers
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*shrinkbench leaderboard: blobs-tiny*", "x4*global-magnitude*"])
    rows = result_rows(project.path / "results")
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "passed" and row["suite"] == "blobs-tiny"
        assert row["params_total"] == TINY_PARAMS
        assert row["params_nonzero"] == round(TINY_PARAMS / row["ratio"])
        # FlopCounterMode, 2 FLOPs a multiply-add: conv 8*9*36 MACs, fc 288*4 MACs.
        assert row["flops_dense"] == 2 * (8 * 9 * 36 + 288 * 4)
        assert (row["flops_sparse"] < row["flops_dense"]) == (row["ratio"] > 1)
        assert 0 <= row["top1"] <= row["top5"] <= 1
    assert len({r["base_sha256"] for r in rows}) == 1
    assert max(r["top1_base"] for r in rows) > 0.6, "the base model must learn the blobs (4 classes, chance 0.25)"
    # The base model was trained once and cached like a built-in suite's, under the same lock.
    cached = sorted(shrink_cache.glob("blobs-tiny-*.pt"))
    assert cached and tensors_sha256(cached[-1]) in {r["base_sha256"] for r in rows}


def test_a_batch_norm_suite_with_a_last_batch_of_one_trains_and_fine_tunes(project: pytest.Pytester) -> None:
    """321 examples in batches of 32 leave one: batch norm cannot train on it, so the harness drops it, says so in the hash."""
    project.makeconftest(CONFTEST.replace("train=lambda: blobs(320, 0)", "train=lambda: blobs(321, 0)"))
    result = project.runpytest_subprocess("--shrink-method=global-magnitude", "--shrink-suite=blobs-tiny", "--shrink-ratios=2", *RUN)
    result.assert_outcomes(passed=1)
    (row,) = result_rows(project.path / "results")
    from pytest_shrinkbench import Recipe

    assert row["recipe_hash"] != Recipe("adam", lr=1e-3, epochs=2, batch_size=32).digest()


def test_tied_weight_is_masked_once_and_counted_once(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST + '''

from pytest_shrinkbench import method


@method("check-tied")
def check_tied(ctx):
    assert list(ctx.prunable) == ["first.weight", "head.weight"], list(ctx.prunable)
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
''')
    result = project.runpytest_subprocess("--shrink-method=check-tied,random", "--shrink-suite=blobs-tied", "--shrink-ratios=4", *RUN)
    result.assert_outcomes(passed=2)
    for row in result_rows(project.path / "results"):
        assert row["params_total"] == TIED_PARAMS
        assert row["params_nonzero"] == round(TIED_PARAMS / 4)
        # Both uses of the tied weight do work: dense FLOPs count it twice, scaled by its one density.
        assert row["flops_dense"] == 2 * (2 * 36 * 36 + 36 * 4)
        assert row["flops_sparse"] < row["flops_dense"] / 2


def test_checkpoint_suite_loads_the_file_and_never_trains(project: pytest.Pytester, shrink_cache: Path) -> None:
    project.makeconftest(DATA + '''

class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(36, 24)
        self.fc2 = nn.Linear(24, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@suite("blobs-ckpt", train=blobs(256, 0), test=blobs(64, 1), checkpoint="weights/base.pt",
       finetune=Recipe("sgd", lr=1e-2, epochs=1, batch_size=64))
def build():
    return Lin()
''')
    project.mkdir("weights")
    run = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=blobs-ckpt", "--shrink-ratios=2", *RUN)
    run.assert_outcomes(skipped=1)
    (skipped,) = result_rows(project.path / "results")
    assert "suite blobs-ckpt: no base weights" in skipped["message"] and "weights/base.pt" in skipped["message"]
    script = project.path / "make_ckpt.py"
    script.write_text(
        "import torch, conftest\ntorch.manual_seed(3)\n"
        "torch.save(conftest.Lin().state_dict(), 'weights/base.pt')\n"
    )
    assert os.system(f"cd {project.path} && {sys.executable} make_ckpt.py") == 0
    sha = tensors_sha256(project.path / "weights" / "base.pt")
    project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=blobs-ckpt", "--shrink-ratios=2", *RUN).assert_outcomes(passed=1)
    (row,) = [r for r in result_rows(project.path / "results") if r["status"] == "passed"]
    assert row["base_sha256"] == sha
    assert not list(shrink_cache.glob("blobs-ckpt-*")), "a suite with a checkpoint must not train a base model"


def test_unknown_suite_lists_user_suites(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST)
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=blobz")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown suite 'blobz'; known: blobs-tied, blobs-tiny, cifar10-resnet110*digits-cnn*"])


def test_a_suite_needs_base_weights_from_somewhere(project: pytest.Pytester) -> None:
    project.makeconftest(DATA + '''
@suite("nothing", train=blobs(8, 0), test=blobs(8, 1), finetune=Recipe("sgd", lr=0.1, epochs=1, batch_size=8))
def build():
    return nn.Linear(36, 4)
''')
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=nothing")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*suite 'nothing': give a base-training recipe (base=Recipe(...)) or a checkpoint path*"])


def test_project_suites_do_not_leak_across_in_process_sessions(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST)
    args = ["--shrink-method=random", "--shrink-ratios=2", "--shrink-seeds=0", "--collect-only", "-q"]
    first = project.runpytest_inprocess("--shrink-suite=blobs-tiny,digits-mlp", *args)
    assert sum("::test_case[" in line for line in first.stdout.lines) == 2
    (project.path / "conftest.py").unlink()
    second = project.runpytest_inprocess("--shrink-suite=blobs-tiny", *args)
    assert second.ret == pytest.ExitCode.USAGE_ERROR
    third = project.runpytest_inprocess("--shrink-suite=digits-mlp", *args)
    assert sum("::test_case[" in line for line in third.stdout.lines) == 1


def test_suite_from_an_installed_package_entry_point(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package lists a module under the ``pytest_shrinkbench.suites`` group; importing it registers the suite."""
    site = project.mkdir("site")
    (site / "blobsuite.py").write_text(DATA + '''
@suite("installed-blobs", train=blobs(160, 0), test=blobs(64, 1),
       base=Recipe("adam", lr=1e-2, epochs=2, batch_size=32), finetune=Recipe("adam", lr=1e-3, epochs=1, batch_size=32))
def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
''')
    info = site / "blobsuite-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: blobsuite\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pytest_shrinkbench.suites]\nblobs = blobsuite\n")
    monkeypatch.setenv("PYTHONPATH", str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = project.runpytest_subprocess("--shrink-method=global-magnitude", "--shrink-suite=installed-blobs", "--shrink-ratios=2", *RUN)
    result.assert_outcomes(passed=1)
    (row,) = result_rows(project.path / "results")
    assert row["suite"] == "installed-blobs" and row["params_total"] == 36 * 16 + 16 + 16 * 4 + 4
