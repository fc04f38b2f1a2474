"""Subjects: the digits split, base models trained once and cached, verified by sha256, loaded safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pytest_shrinkbench import load_subject
from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.sandbox.methods import load_installed
from pytest_shrinkbench.suites.digits import digits

load_installed()  # registers the baselines


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
