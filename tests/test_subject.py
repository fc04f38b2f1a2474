"""Subjects: the digits split, base models trained once and cached, verified by sha256, loaded safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import pytest_shrinkbench.baselines  # noqa: F401  (registers the baselines)
from pytest_shrinkbench import CaseSpec, load_subject, run_case
from pytest_shrinkbench.data import digits
from pytest_shrinkbench.results import ROW_KEYS
from pytest_shrinkbench.subject import sha256_of


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    splits = digits()
    train_x, train_y = splits.train.tensors
    test_x, test_y = splits.test.tensors
    assert (len(train_y), len(test_y)) == (1438, 359)
    assert train_x.shape[1:] == (1, 8, 8) and 0.0 <= float(train_x.min()) and float(train_x.max()) <= 1.0
    assert len(train_y) + len(test_y) == 1797, "every image is in exactly one split"
    rebuilt = digits.__wrapped__()  # bypass the per-process cache: the split must come out the same
    assert torch.equal(rebuilt.test.tensors[0], test_x) and torch.equal(rebuilt.train.tensors[1], train_y)
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37, "each class keeps about 20% of its images for test"


def test_trained_once_cached_and_verified(tmp_path: Path) -> None:
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    checkpoint, record = subject.checkpoint, subject.checkpoint.with_suffix(".json")
    assert json.loads(record.read_text())["sha256"] == subject.sha256 == sha256_of(checkpoint)
    assert subject.base_top1 > 0.93, "a sane LeNet-300-100 on digits"
    stamp = checkpoint.stat().st_mtime_ns
    again = load_subject("digits-mlp", cache_dir=tmp_path)
    assert again.sha256 == subject.sha256 and checkpoint.stat().st_mtime_ns == stamp, "second load must not retrain"


def test_corrupt_cached_checkpoint_is_retrained(tmp_path: Path) -> None:
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    data = subject.checkpoint.read_bytes()
    subject.checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="has sha256 .* its record says .*; retraining"):
        rebuilt = load_subject("digits-mlp", cache_dir=tmp_path)
    assert sha256_of(rebuilt.checkpoint) == rebuilt.sha256
    assert rebuilt.sha256 == subject.sha256, "training is seeded: the rebuilt model is bit-identical"


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    torch.save({"fc1.weight": Payload()}, subject.checkpoint)
    record = subject.checkpoint.with_suffix(".json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": sha256_of(subject.checkpoint)}))
    with pytest.raises(RuntimeError, match="refusing base checkpoint .* of suite 'digits-mlp': it is not a plain tensor state_dict"):
        load_subject("digits-mlp", cache_dir=tmp_path)


def test_run_one_case_outside_pytest(shrink_cache: Path) -> None:
    subject = load_subject("digits-cnn", cache_dir=shrink_cache)
    row = run_case(CaseSpec("global-magnitude", "digits-cnn", 4.0, 0), subject)
    assert set(ROW_KEYS) - {"method", "suite", "ratio", "seed", "status"} <= row.keys()
    assert row["compression"] == pytest.approx(4.0, rel=1e-3)
    assert row["flops_dense"] == 1203200  # 2 × (144·64 + 4608·64 + 18432·16 + 2560) multiply-adds
    assert row["speedup"] > 1 and row["top1"] > 0.95


def test_one_worker_trains_under_xdist(project: pytest.Pytester, tmp_path: Path) -> None:
    """With a cold cache and -n 2, exactly one worker trains each base model; the other loads its file."""
    log = tmp_path / "trainings.log"
    project.makeconftest(
        "import os\n"
        "import pytest_shrinkbench.subject as subject\n"
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
    rows = [json.loads(line) for f in (project.path / "results").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len({r["base_sha256"] for r in rows}) == 1


def test_base_weights_do_not_depend_on_the_callers_thread_count(tmp_path: Path) -> None:
    """Whoever trains first (a 1-thread xdist worker, a notebook with all cores) must produce the same file."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        wide = load_subject("digits-cnn", cache_dir=tmp_path / "a")
        torch.set_num_threads(1)
        narrow = load_subject("digits-cnn", cache_dir=tmp_path / "b")
    finally:
        torch.set_num_threads(threads)
    assert wide.sha256 == narrow.sha256
