"""Data of the standard vision suites, read from torchvision's on-disk layouts under a data root.

Nothing here downloads: every torchvision dataset is built with ``download=False``, and a suite
whose files are absent is reported by its ``find_*`` function (one line: what is missing and how
to provide it) so that the plugin skips its cases.

Layouts under the data root ``DIR`` (torchvision's own):

* MNIST: ``DIR/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (the four IDX files, unzipped).
* CIFAR-10: ``DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (the python
  version, as extracted from ``cifar-10-python.tar.gz``; torchvision checks their md5 sums).
* ImageNet: ``DIR/imagenet/`` (or ``DIR/ImageNet/``) holding ``train/<wnid>/*.JPEG`` and
  ``val/<wnid>/*.JPEG``: the layout ``torchvision.datasets.ImageNet`` extracts (used through that
  class when its ``meta.bin`` is present) or any ``ImageFolder`` pair. Without ``val/``, a fixed,
  seeded, stratified 2% of ``train/`` is held out for evaluation.

Normalization and augmentation are the standard ones: per-channel mean/std of the training set;
CIFAR-10 trains with a random 32×32 crop of the 4-pixel zero-padded image and a horizontal flip;
ImageNet trains with ``RandomResizedCrop(224)`` and a flip and evaluates on ``Resize(256)`` +
``CenterCrop(224)``; MNIST is not augmented. Evaluation never augments.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import Subset

from .registry import Splits

# torchvision is imported where data is loaded, not here: every pytest session loads the plugin.

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
IMAGENET_FOLDERS = ("imagenet", "ImageNet")

HOLDOUT_SEED = 0
HOLDOUT_FRACTION = 0.02

NO_ROOT = "no data root: pass --shrink-data-root=DIR (or ini shrink_data_root, or $SHRINKBENCH_DATA)"


class DataError(RuntimeError):
    """Files are present but cannot be read as the expected dataset (corrupt, wrong format)."""


def _missing(folder: Path, names: tuple[str, ...], shown: str) -> str | None:
    """What is missing of ``names`` in ``folder`` (shown as ``shown``/...), or None when all files are there."""
    if not folder.is_dir():
        return f"no {shown}/ folder"
    missing = [name for name in names if not (folder / name).is_file()]
    return f"missing {', '.join(f'{shown}/{m}' for m in missing)}" if missing else None


def find_mnist(root: Path | None) -> str | None:
    """None when MNIST is under ``root``; otherwise a one-line reason saying how to provide it."""
    how = "MNIST/raw/ with the 4 unzipped IDX files (e.g. once: torchvision.datasets.MNIST(DIR, download=True))"
    if root is None:
        return f"{NO_ROOT} holding {how}"
    missing = _missing(Path(root) / "MNIST" / "raw", MNIST_FILES, "MNIST/raw")
    return f"MNIST not found under {root}: {missing}; provide {how}" if missing else None


def find_cifar10(root: Path | None) -> str | None:
    """None when CIFAR-10 is under ``root``; otherwise a one-line reason saying how to provide it."""
    how = f"{CIFAR10_FOLDER}/ extracted from cifar-10-python.tar.gz (e.g. once: torchvision.datasets.CIFAR10(DIR, download=True))"
    if root is None:
        return f"{NO_ROOT} holding {how}"
    missing = _missing(Path(root) / CIFAR10_FOLDER, CIFAR10_FILES, CIFAR10_FOLDER)
    return f"CIFAR-10 not found under {root}: {missing}; provide {how}" if missing else None


def imagenet_dir(root: Path) -> Path | None:
    """The ImageNet folder under ``root`` (``imagenet/`` or ``ImageNet/``) that has a ``train/`` folder."""
    for name in IMAGENET_FOLDERS:
        if (Path(root) / name / "train").is_dir():
            return Path(root) / name
    return None


def find_imagenet(root: Path | None) -> str | None:
    """None when an ImageNet layout is under ``root``; otherwise a one-line reason saying how to provide it."""
    how = "imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/*.JPEG (torchvision.datasets.ImageNet's layout, or any ImageFolder pair)"
    if root is None:
        return f"{NO_ROOT} holding {how}"
    if imagenet_dir(Path(root)) is None:
        return f"ImageNet not found under {root}: no {' or '.join(n + '/train/' for n in IMAGENET_FOLDERS)}; provide {how}"
    return None


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def fingerprint_mnist(root: Path) -> str:
    """Hash of the MNIST files' contents: a base model trained on other data never shares a cache entry."""
    return _cached_fingerprint(tuple(Path(root) / "MNIST" / "raw" / name for name in MNIST_FILES))


def fingerprint_cifar10(root: Path) -> str:
    """Hash of the CIFAR-10 files' contents (about 0.2 s for the real 180 MB)."""
    return _cached_fingerprint(tuple(Path(root) / CIFAR10_FOLDER / name for name in CIFAR10_FILES))


def _cached_fingerprint(files: tuple[Path, ...]) -> str:
    stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _fingerprint_of(stats)


@lru_cache(maxsize=None)
def _fingerprint_of(stats: tuple[tuple[str, int, int], ...]) -> str:
    return _fingerprint([Path(path) for path, _size, _mtime in stats])


def _normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
    from torchvision import transforms

    return [transforms.ToTensor(), transforms.Normalize(mean, std)]


def mnist(root: Path) -> Splits:
    """MNIST's 60,000 training and 10,000 test digits as normalized 1×28×28 tensors (no augmentation)."""
    return _mnist(str(Path(root).resolve()))


@lru_cache(maxsize=None)
def _mnist(root: str) -> Splits:
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose(_normalize(MNIST_MEAN, MNIST_STD))
    try:
        train = torchvision.datasets.MNIST(root, train=True, transform=transform, download=False)
        test = torchvision.datasets.MNIST(root, train=False, transform=transform, download=False)
    except Exception as exc:
        raise DataError(f"could not read MNIST's IDX files under {root}/MNIST/raw: {type(exc).__name__}: {exc}") from exc
    return Splits(train, test)


def cifar10(root: Path) -> Splits:
    """CIFAR-10's 50,000 training and 10,000 test images; training images randomly cropped (pad 4) and flipped."""
    return _cifar10(str(Path(root).resolve()))


@lru_cache(maxsize=None)
def _cifar10(root: str) -> Splits:
    import torchvision
    from torchvision import transforms

    augment = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *_normalize(CIFAR10_MEAN, CIFAR10_STD)]
    )
    plain = transforms.Compose(_normalize(CIFAR10_MEAN, CIFAR10_STD))
    try:
        train = torchvision.datasets.CIFAR10(root, train=True, transform=augment, download=False)
        test = torchvision.datasets.CIFAR10(root, train=False, transform=plain, download=False)
    except Exception as exc:
        raise DataError(
            f"could not read CIFAR-10 under {root}/{CIFAR10_FOLDER} (torchvision checks each file's md5 sum; "
            f"re-extract cifar-10-python.tar.gz): {type(exc).__name__}: {exc}"
        ) from exc
    return Splits(train, test)


@lru_cache(maxsize=None)
def imagenet_transforms() -> tuple:
    """(training, evaluation) transforms of ImageNet: random resized crop and flip; resize 256 and centre crop 224."""
    from torchvision import transforms

    train = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), *_normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    evaluation = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), *_normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return train, evaluation


def imagenet(root: Path) -> Splits:
    """ImageNet train/val (or train with a seeded held-out split), with the standard 224×224 transforms."""
    return _imagenet(str(Path(root).resolve()))


def _image_folder(folder: Path, split: str, transform: object) -> object:
    import torchvision

    if (folder / "meta.bin").is_file() and (folder / split).is_dir():
        # torchvision's ImageNet class: reads the devkit's class names from meta.bin (weights_only), no archive parsing.
        return torchvision.datasets.ImageNet(str(folder), split=split, transform=transform)
    return torchvision.datasets.ImageFolder(str(folder / split), transform=transform)


@lru_cache(maxsize=None)
def _imagenet(root: str) -> Splits:
    folder = imagenet_dir(Path(root))
    if folder is None:
        raise DataError(find_imagenet(Path(root)) or f"ImageNet not found under {root}")
    train_transform, eval_transform = imagenet_transforms()
    try:
        train = _image_folder(folder, "train", train_transform)
        if (folder / "val").is_dir():
            test = _image_folder(folder, "val", eval_transform)
            if test.classes != train.classes:
                raise DataError(
                    f"ImageNet under {folder}: train/ has {len(train.classes)} classes and val/ has {len(test.classes)}, "
                    "or they are named differently; both must hold the same class folders"
                )
            return Splits(train, test)
        evaluation = _image_folder(folder, "train", eval_transform)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"could not read ImageNet under {folder}: {type(exc).__name__}: {exc}") from exc
    keep, held_out = holdout_split(train.targets, HOLDOUT_FRACTION, HOLDOUT_SEED)
    return Splits(Subset(train, keep), Subset(evaluation, held_out))


def holdout_split(targets: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed, seeded, stratified split of indices: ``fraction`` of each class (at least one image of
    any class with two or more) is held out for evaluation, the rest is for training and pruning batches."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(targets)
    held_out: list[int] = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        count = min(len(members) - 1, max(1, round(len(members) * fraction))) if len(members) > 1 else 0
        held_out += members[torch.randperm(len(members), generator=generator)[:count]].tolist()
    held_out.sort()
    chosen = set(held_out)
    return [i for i in range(len(labels)) if i not in chosen], held_out

