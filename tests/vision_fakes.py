"""Tiny datasets written in the real on-disk formats torchvision reads (for the test_vision_* tests).

* CIFAR-10: the python pickle batches under ``cifar-10-batches-py`` (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``), each a dict with ``data`` (N×3072 uint8, channel-major rows)
  and ``labels``, as in ``cifar-10-python.tar.gz``. Their md5 sums are not the real ones, so a test
  that reads them must bypass torchvision's integrity check (see :data:`CIFAR_MD5_BYPASS`).
* MNIST: the four IDX files under ``MNIST/raw`` (big-endian int32 magic 0x803/0x801 and sizes, then bytes).
* ImageNet: an ``ImageFolder`` of small JPEGs under ``imagenet/{train,val}/<wnid>/``.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# For a pytester project's conftest.py: torchvision's CIFAR10 compares md5 sums with the real files';
# these fakes only exist, so the check is reduced to "the file exists" in that test process only.
CIFAR_MD5_BYPASS = (
    "import os\n"
    "import torchvision.datasets.cifar as _cifar\n"
    "_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)\n"
)


def cifar_images(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``count`` images (N×32×32×3 uint8) whose colour depends on the class, and their labels."""
    rng = np.random.default_rng(seed)
    labels = [i % 10 for i in range(count)]
    images = rng.integers(0, 96, size=(count, 32, 32, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, :, :, label % 3] += np.uint8(100 + 15 * label)
    return images, labels


def write_cifar10(root: Path, train: int = 64, test: int = 32, seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """CIFAR-10's python batches under ``root/cifar-10-batches-py``; returns (train images, labels, test images, labels)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = cifar_images(train, seed)
    test_x, test_y = cifar_images(test, seed + 1)

    def dump(name: str, images: np.ndarray, labels: list[int], label: str) -> None:
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)  # R plane, G plane, B plane
        entry = {"batch_label": label, "labels": labels, "data": rows, "filenames": [f"{label}_{i}.png" for i in range(len(labels))]}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)

    bounds = np.linspace(0, train, 6).round().astype(int)
    for batch in range(5):
        lo, hi = bounds[batch], bounds[batch + 1]
        dump(f"data_batch_{batch + 1}", train_x[lo:hi], train_y[lo:hi], f"training batch {batch + 1} of 5")
    dump("test_batch", test_x, test_y, "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": int(bounds[1]), "num_vis": 3072}, handle, protocol=2)
    return train_x, train_y, test_x, test_y


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # 0x08: unsigned bytes; low byte: number of dimensions
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(f">{array.ndim}I", *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train: int = 64, test: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST's IDX files under ``root/MNIST/raw``; returns (train images, labels, test images, labels)."""
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train), ("t10k", test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
        for index, label in enumerate(labels):
            images[index, 2 * label : 2 * label + 6, 4:24] = 255  # a bar whose height depends on the digit
        _idx(folder / f"{split}-images-idx3-ubyte", images)
        _idx(folder / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return (*arrays["train"], *arrays["t10k"])


WNIDS = ("n01440764", "n01443537", "n01484850")


def write_imagefolder(root: Path, splits: tuple[str, ...] = ("train", "val"), per_class: int = 3, seed: int = 0) -> Path:
    """``root/imagenet/<split>/<wnid>/*.JPEG`` for three classes; returns ``root/imagenet``."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "imagenet"
    for split in splits:
        for index, wnid in enumerate(WNIDS):
            folder = base / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels = rng.integers(0, 255, size=(30 + 7 * k, 40, 3), dtype=np.uint8)
                pixels[..., index] = 250
                Image.fromarray(pixels).save(folder / f"{wnid}_{split}_{k}.JPEG", format="JPEG")
    return base
