"""The vision suites' data: torchvision's real loaders on tiny files in the real formats, normalization, augmentation, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pytest_shrinkbench.suites import vision_data as vd
from tests.vision_fakes import WNIDS, write_cifar10, write_imagefolder, write_mnist


def normalized(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """H×W×C uint8 → C×H×W, scaled to [0, 1] and standardized per channel."""
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_cifar10_real_loader_on_pickle_batches(tmp_path: Path, cifar_md5_bypass: None) -> None:
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path, train=64, test=32)
    splits = vd.cifar10(tmp_path)
    assert isinstance(splits.train, torchvision.datasets.CIFAR10) and (len(splits.train), len(splits.test)) == (64, 32)
    assert splits.train.classes[:2] == ["airplane", "automobile"]
    assert splits.train.targets == train_y and splits.test.targets == test_y
    image, label = splits.test[5]
    assert label == test_y[5]
    assert torch.allclose(image, normalized(test_x[5], vd.CIFAR10_MEAN, vd.CIFAR10_STD), atol=1e-6), "test images are only normalized"
    assert vd.cifar10(tmp_path) is splits, "loaded once per process"


def test_cifar10_training_images_are_cropped_and_flipped(tmp_path: Path, cifar_md5_bypass: None) -> None:
    """Augmentation only moves pixels (a crop of the 4-pixel zero-padded image, maybe mirrored)."""
    train_x, *_ = write_cifar10(tmp_path, train=10, test=10)
    splits = vd.cifar10(tmp_path)
    plain = normalized(train_x[3], vd.CIFAR10_MEAN, vd.CIFAR10_STD)
    padded = torch.nn.functional.pad(torch.from_numpy(train_x[3]).permute(2, 0, 1).float() / 255, (4, 4, 4, 4))
    padded = (padded - torch.tensor(vd.CIFAR10_MEAN)[:, None, None]) / torch.tensor(vd.CIFAR10_STD)[:, None, None]
    torch.manual_seed(0)
    views = [splits.train[3][0] for _ in range(12)]
    assert all(v.shape == (3, 32, 32) for v in views)
    assert any(not torch.equal(v, plain) for v in views), "training images must be augmented"
    for view in views:
        found = any(
            torch.allclose(candidate, view, atol=1e-6)
            for dy in range(9) for dx in range(9)
            for crop in [padded[:, dy : dy + 32, dx : dx + 32]]
            for candidate in (crop, crop.flip(-1))
        )
        assert found, "every training view is a (flipped) crop of the padded image"


def test_cifar10_md5_check_is_kept_outside_tests(tmp_path: Path) -> None:
    """Without the test-only bypass, torchvision refuses files whose md5 is not CIFAR-10's, and we say so clearly."""
    write_cifar10(tmp_path, train=10, test=10)
    vd._cifar10.cache_clear()
    with pytest.raises(vd.DataError, match="could not read CIFAR-10 under .*md5"):
        vd.cifar10(tmp_path)


def test_find_cifar10_names_what_is_missing(tmp_path: Path) -> None:
    assert vd.find_cifar10(None).startswith("no data root: pass --shrink-data-root=DIR")
    assert "no cifar-10-batches-py/ folder" in vd.find_cifar10(tmp_path)
    write_cifar10(tmp_path, train=10, test=10)
    assert vd.find_cifar10(tmp_path) is None
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    reason = vd.find_cifar10(tmp_path)
    assert "missing cifar-10-batches-py/data_batch_4;" in reason and "\n" not in reason


def test_mnist_real_loader_on_idx_files(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_mnist(tmp_path, train=64, test=32)
    assert vd.find_mnist(tmp_path) is None
    splits = vd.mnist(tmp_path)
    assert isinstance(splits.test, torchvision.datasets.MNIST) and (len(splits.train), len(splits.test)) == (64, 32)
    image, label = splits.train[7]
    assert image.shape == (1, 28, 28) and label == int(train_y[7])
    assert torch.allclose(image, normalized(train_x[7][..., None], vd.MNIST_MEAN, vd.MNIST_STD), atol=1e-6)
    assert torch.equal(splits.test.targets, torch.from_numpy(test_y).long())
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert "missing MNIST/raw/t10k-labels-idx1-ubyte" in vd.find_mnist(tmp_path)


def test_imagefolder_train_and_val(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, splits=("train", "val"), per_class=2)
    assert vd.find_imagenet(tmp_path) is None
    splits = vd.imagenet(tmp_path)
    assert isinstance(splits.train, torchvision.datasets.ImageFolder) and not isinstance(splits.train, torchvision.datasets.ImageNet)
    assert (len(splits.train), len(splits.test)) == (6, 6) and splits.test.classes == list(WNIDS)
    image, label = splits.test[3]
    assert image.shape == (3, 224, 224) and label == 1
    torch.manual_seed(0)
    assert splits.train[0][0].shape == (3, 224, 224)
    # Evaluation is deterministic (resize 256, centre crop 224), training is not (random resized crop).
    assert torch.equal(splits.test[0][0], splits.test[0][0])
    assert not torch.equal(splits.train[0][0], splits.train[0][0])


def test_torchvision_imagenet_layout_uses_its_class(tmp_path: Path) -> None:
    """With the devkit's meta.bin (as torchvision.datasets.ImageNet writes it), the real ImageNet class reads the folders."""
    folder = write_imagefolder(tmp_path, splits=("train", "val"), per_class=1)
    names = {wnid: (f"class {i}", f"alias {i}") for i, wnid in enumerate(WNIDS)}
    torch.save((names, [WNIDS[0]] * 3), folder / "meta.bin")
    splits = vd.imagenet(tmp_path)
    assert isinstance(splits.train, torchvision.datasets.ImageNet) and isinstance(splits.test, torchvision.datasets.ImageNet)
    assert splits.test.classes == [names[w] for w in WNIDS] and splits.test.wnids == list(WNIDS)


def test_train_only_imagefolder_gets_a_fixed_stratified_holdout(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, splits=("train",), per_class=4)
    splits = vd.imagenet(tmp_path)
    train_idx, test_idx = splits.train.indices, splits.test.indices
    assert sorted(train_idx + test_idx) == list(range(12)) and not set(train_idx) & set(test_idx)
    targets = splits.train.dataset.targets
    assert sorted(targets[i] for i in test_idx) == [0, 1, 2], "one held-out image per class (2% rounds up to one)"
    assert (splits.train.dataset.transform, splits.test.dataset.transform) == vd.imagenet_transforms()
    assert vd.holdout_split(targets, vd.HOLDOUT_FRACTION, vd.HOLDOUT_SEED) == (train_idx, test_idx), "seeded: the same every time"


def test_holdout_split_fraction_per_class() -> None:
    targets = [0] * 500 + [1] * 100 + [2]
    keep, held = vd.holdout_split(targets, 0.02, seed=0)
    assert [sum(targets[i] == c for i in held) for c in range(3)] == [10, 2, 0], "a class of one image stays in training"
    assert vd.holdout_split(targets, 0.02, seed=1)[1] != held
    assert len(keep) + len(held) == len(targets)


def test_imagenet_mismatched_classes_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_imagefolder(tmp_path, splits=("train", "val"), per_class=1)
    (folder / "val" / WNIDS[2] / f"{WNIDS[2]}_val_0.JPEG").rename(folder / "val" / WNIDS[1] / "moved.JPEG")
    (folder / "val" / WNIDS[2]).rmdir()
    with pytest.raises(vd.DataError, match="train/ has 3 classes and val/ has 2"):
        vd.imagenet(tmp_path)


def test_fingerprints_follow_file_contents(tmp_path: Path) -> None:
    write_mnist(tmp_path / "a", seed=0)
    write_mnist(tmp_path / "b", seed=0)
    write_mnist(tmp_path / "c", seed=1)
    a, b, c = (vd.fingerprint_mnist(tmp_path / name) for name in "abc")
    assert a == b, "the same data in another folder is the same data"
    assert a != c
