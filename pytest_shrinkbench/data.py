"""Data of the embedded suites: scikit-learn's bundled 8×8 digits, split once with a fixed seed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """A suite's data: ``train`` feeds base training, pruning batches and fine-tuning; ``test`` only evaluation."""

    train: Dataset
    test: Dataset


@lru_cache(maxsize=None)
def digits() -> Splits:
    """The 1,797 digits as 1×8×8 float images in [0, 1], stratified 80/20 with a pinned seed.

    Cached per process: every case of a session sees the same tensors.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx = []
    for cls in range(10):
        members = np.flatnonzero(bunch.target == cls)
        test_idx.extend(rng.permutation(members)[: round(len(members) * DIGITS_TEST_FRACTION)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train = torch.from_numpy(~is_test)
    test = torch.from_numpy(is_test)
    return Splits(TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test]))
