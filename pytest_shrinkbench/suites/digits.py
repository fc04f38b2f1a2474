"""The embedded suites: scikit-learn's bundled 8×8 digits (no download) with an MLP and a small CNN."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from .recipe import Recipe
from .registry import Splits, Suite, register_suite

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@lru_cache(maxsize=None)
def digits() -> Splits:
    """The 1,797 digits as 1×8×8 float images in [0, 1], stratified 80/20 with a pinned seed.

    Cached per process: every case of a session sees the same tensors.
    """
    pixels, target = digits_arrays()
    images = torch.tensor(pixels / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(target, dtype=torch.long)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx = []
    for cls in range(10):
        members = np.flatnonzero(target == cls)
        test_idx.extend(rng.permutation(members)[: round(len(members) * DIGITS_TEST_FRACTION)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train = torch.from_numpy(~is_test)
    test = torch.from_numpy(is_test)
    return Splits(TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test]))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (1797×8×8, values 0..16) and labels of ``sklearn.datasets.load_digits()``, read from the file it reads.

    Importing ``sklearn.datasets`` costs every process that loads a digits suite (each xdist worker)
    about 1.4 s of CPU; parsing its ``digits.csv.gz`` as ``load_digits`` does takes milliseconds.
    If the file is not where scikit-learn keeps it, ``load_digits`` is used.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0], "datasets", "data", "digits.csv.gz") if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


class DigitsMLP(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998) on 64 flattened pixels: the classic MLP pruning target."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    # No conv bias: the batch norm that follows has its own shift.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCNN(nn.Module):
    """A small VGG-style conv net with batch norm: 3 conv blocks (16/32/64 channels) and a linear head.

    Small enough that 90 fine-tuning runs fit in a minute on a CPU core, deep enough that layers
    differ in FLOPs per parameter, which is what separates global from layerwise pruning.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, 16),
            _conv_bn(16, 32),
            nn.MaxPool2d(2),  # 8×8 → 4×4
            _conv_bn(32, 64),
            nn.MaxPool2d(2),  # 4×4 → 2×2
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DigitsTransformer(nn.Module):
    """A small ViT-style encoder: each of the 8 pixel rows is a token, embedded by a linear layer, with a learned
    position; 2 ``nn.TransformerEncoder`` layers (width 32, 4 heads), mean-pooled into a linear head.

    The embedded suite where attention's packed ``in_proj_weight`` (a raw parameter, not a linear module) is
    prunable, and where the non-prunable parameters (norms, biases, positions) make x32 unreachable.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.position = nn.Parameter(torch.zeros(8, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.reshape(x.shape[0], 8, 8)) + self.position
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))


register_suite(
    Suite(
        name="digits-mlp",
        build_model=DigitsMLP,
        load_data=digits,
        input_shape=(1, 8, 8),
        base_recipe=Recipe("adam", lr=1e-3, epochs=30, batch_size=32),
        finetune_recipe=Recipe("adam", lr=1e-3, epochs=8, batch_size=32),
        description="LeNet-300-100 on scikit-learn's 8x8 digits",
    ),
)
register_suite(
    Suite(
        name="digits-cnn",
        build_model=DigitsCNN,
        load_data=digits,
        input_shape=(1, 8, 8),
        base_recipe=Recipe("adam", lr=1e-3, epochs=20, batch_size=32),
        finetune_recipe=Recipe("adam", lr=1e-3, epochs=8, batch_size=32),
        description="3-block conv net with batch norm on scikit-learn's 8x8 digits",
    ),
)
register_suite(
    Suite(
        name="digits-transformer",
        build_model=DigitsTransformer,
        load_data=digits,
        input_shape=(1, 8, 8),
        base_recipe=Recipe("adam", lr=2e-3, epochs=40, batch_size=32),
        finetune_recipe=Recipe("adam", lr=1e-3, epochs=8, batch_size=32),
        description="2-layer transformer encoder on scikit-learn's 8x8 digits, one token per pixel row",
    ),
)
