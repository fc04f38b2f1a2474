"""Subjects: the digits split, base models trained once and cached, identified and verified by their tensors, loaded safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_shrinkbench import load_subject
from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.identity import state_digest
from pytest_shrinkbench.sandbox.methods import load_installed
from pytest_shrinkbench.suites.digits import digits
from tests.helpers import tensors_sha256

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
    assert json.loads(record.read_text())["sha256"] == subject.sha256 == tensors_sha256(checkpoint)
    assert subject.sha256 == state_digest(subject.fresh_model().state_dict()), "the identity is the model's tensors"
    assert subject.sha256 != sha256_of(checkpoint), "never the file's bytes"
    assert subject.base_top1 > 0.93, "a sane LeNet-300-100 on digits"
    stamp = checkpoint.stat().st_mtime_ns
    again = load_subject("digits-mlp", cache_dir=tmp_path)
    assert again.sha256 == subject.sha256 and checkpoint.stat().st_mtime_ns == stamp, "second load must not retrain"


def test_corrupt_cached_checkpoint_is_retrained(tmp_path: Path) -> None:
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    data = subject.checkpoint.read_bytes()
    subject.checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="cached base model .* cannot be read .*; retraining the base model"):
        rebuilt = load_subject("digits-mlp", cache_dir=tmp_path)
    assert rebuilt.sha256 == subject.sha256, "training is seeded: the rebuilt model is bit-identical"
    # A file that loads but whose tensors changed (a flipped weight) does not pass for the base model either.
    state = torch.load(subject.checkpoint, weights_only=True)
    state["fc1.weight"][0, 0] += 1
    torch.save(state, subject.checkpoint)
    with pytest.warns(UserWarning, match="has tensors hashing to .*, its record says .*; retraining"):
        assert load_subject("digits-mlp", cache_dir=tmp_path).sha256 == subject.sha256
    assert tensors_sha256(subject.checkpoint) == subject.sha256


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    torch.save({"fc1.weight": Payload()}, subject.checkpoint)
    with pytest.raises(RuntimeError, match="refusing base checkpoint .*: it is not a plain tensor state_dict"):
        load_subject("digits-mlp", cache_dir=tmp_path)


def test_a_record_of_the_files_bytes_is_upgraded_without_retraining(tmp_path: Path) -> None:
    """Caches written when identities hashed the file keep their (possibly GPU-hours) base models."""
    subject = load_subject("digits-mlp", cache_dir=tmp_path)
    record = subject.checkpoint.with_suffix(".json")
    legacy = {k: v for k, v in json.loads(record.read_text()).items() if k != "identity"}
    record.write_text(json.dumps({**legacy, "sha256": sha256_of(subject.checkpoint)}))
    stamp = subject.checkpoint.stat().st_mtime_ns
    again = load_subject("digits-mlp", cache_dir=tmp_path)
    assert again.sha256 == subject.sha256 and subject.checkpoint.stat().st_mtime_ns == stamp
    assert json.loads(record.read_text())["sha256"] == subject.sha256


def test_a_read_only_cache_never_trains_and_names_the_prepare_command(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError) as missing:
        load_subject("digits-mlp", cache_dir=cache, readonly=True)
    message = str(missing.value)
    assert message.startswith("suite digits-mlp: no base model ") and "\n" not in message
    assert f"--shrink-cache-mode=readonly): prepare it once with this run's options, e.g. pytest-shrinkbench prepare " \
           f"--shrink-suite=digits-mlp --shrink-cache={cache}" in message
    assert not cache.exists(), "nothing created, not even the folder"
    prepared = load_subject("digits-mlp", cache_dir=cache)
    before = sorted(p.name for p in cache.iterdir())
    shard = load_subject("digits-mlp", cache_dir=cache, readonly=True)
    assert shard.sha256 == prepared.sha256 and sorted(p.name for p in cache.iterdir()) == before, "no lock file, no write"
    torch.save({k: v + 1 for k, v in torch.load(prepared.checkpoint, weights_only=True).items()}, prepared.checkpoint)
    with pytest.raises(RuntimeError, match="suite digits-mlp: cached base model .* has tensors hashing to .*read-only"):
        load_subject("digits-mlp", cache_dir=cache, readonly=True)


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


def test_digits_are_read_exactly_as_scikit_learn_loads_them() -> None:
    from sklearn.datasets import load_digits

    from pytest_shrinkbench.suites.digits import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and np.array_equal(images, bunch.images)
    assert np.array_equal(target, bunch.target) and target.dtype.kind == "i"


def test_every_fresh_model_is_the_base_model_untouched_by_earlier_ones_and_draws_nothing_from_torchs_rng(
        shrink_cache: Path) -> None:
    """A case (or an invariant check halfway through a gradual method's fine-tuning) gets the base model; taking
    one must not shift the random stream dropout and augmentation draw from."""
    subject = load_subject("digits-mlp", cache_dir=shrink_cache)
    with torch.no_grad():
        for parameter in subject.fresh_model().parameters():
            parameter.zero_()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model = subject.fresh_model()
    assert torch.equal(torch.rand(3), expected), "taking a fresh model drew from torch's RNG"
    assert state_digest(model.state_dict()) == subject.sha256, "a fresh model must hold exactly the base weights"
