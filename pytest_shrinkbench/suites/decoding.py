"""Decode a suite's datasets once per process into tensors (:class:`~.decoded.Decoded`), where that
provably gives what the per-sample path gives.

Why: a torchvision dataset decodes each sample through PIL and its transforms on every access. A
case reads the training set once per fine-tuning epoch, and a session runs many cases: profiled on
MNIST-format files, a quarter of a case was spent there. Decoded:

* a ``TensorDataset``: it already is;
* a torchvision dataset of a known class (exactly, not a subclass: a subclass may change
  ``__getitem__``), without target or joint transforms, with the default image loader, whose
  transform is a list of known deterministic transforms, optionally *preceded* by random crops
  (constant padding, output as large as the image) and horizontal flips whose deterministic rest is
  pointwise (``ToTensor``, ``Normalize``). The random part is replayed on the decoded tensors: it
  draws from torch's global generator with torchvision's own calls, in the same order, so a seeded
  run sees the same crops and flips — bit-identical results — while the crop and flip themselves
  are one gather on the batch, on its device;
* a ``Subset`` of one of these (``random_split`` of a ``TensorDataset`` included).

MNIST and CIFAR decode in bulk (their ``uint8`` arrays through the same tensor operations as
``ToTensor`` and ``Normalize``: 60,000 images in about a second instead of a quarter of a minute),
checked against the per-sample path on their first and last sample; other datasets sample by sample.
Anything else (an unknown transform such as ``ColorJitter`` or a ``Lambda``, a custom dataset class)
keeps the per-sample path, as does a dataset whose decoded tensors would exceed
:data:`DECODE_LIMIT_BYTES` (ImageNet).
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Sequence
from weakref import WeakKeyDictionary

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from .decoded import Decoded, Replayed
from .registry import Splits

# Largest decoded dataset kept in memory (CIFAR-10's training set is 0.6 GB as float32; ImageNet's is not kept).
DECODE_LIMIT_BYTES = 2 << 30
BULK_CHUNK = 4096  # images converted at a time in bulk decoding (bounds the temporary copies)

_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST", "CIFAR10", "CIFAR100", "SVHN", "ImageFolder", "ImageNet")
_DETERMINISTIC = ("ToTensor", "PILToTensor", "ConvertImageDtype", "Normalize", "Resize", "CenterCrop", "Grayscale")
_POINTWISE = ("ToTensor", "Normalize")  # commute with moving pixels: a crop or flip may be replayed after them

_cache: WeakKeyDictionary = WeakKeyDictionary()


def prepared(splits: Splits, device: torch.device) -> Splits:
    """``splits`` decoded where provably equivalent (once per dataset per process) and, when decoded, on ``device``."""
    return Splits(*(_on(decoded(data), device) for data in (splits.train, splits.test)), splits.protocol)


def decoded(data: Dataset) -> Dataset:
    """``data`` decoded into tensors, once per process, or ``data`` itself where that is not provably the same."""
    try:
        return _cache[data]
    except KeyError:
        pass
    except TypeError:  # unhashable or not weakly referenceable: decode without remembering
        return decode(data)
    result = _cache[data] = decode(data)
    return result


def decode(data: Dataset, limit: int = DECODE_LIMIT_BYTES) -> Dataset:
    """Decode every sample of ``data`` (not remembered: see :func:`decoded`)."""
    if isinstance(data, TensorDataset):
        return data
    plan = _plan(data)
    if plan is None:
        return data
    view, replay = plan
    first, _ = view[0]
    if not isinstance(first, Tensor) or len(view) * first.numel() * first.element_size() > limit:
        return data
    bulk = _bulk(view)
    if bulk is not None and all(_same(view[k], bulk[0][k], bulk[1][k]) for k in (0, len(view) - 1)):
        return Decoded(*bulk, replay)
    inputs = torch.empty((len(view), *first.shape), dtype=first.dtype)
    targets = torch.empty(len(view), dtype=torch.long)
    for index in range(len(view)):
        sample, target = view[index]
        if not isinstance(sample, Tensor) or sample.shape != first.shape or sample.dtype != first.dtype:
            return data
        if not isinstance(target, numbers.Integral) or isinstance(target, bool):
            return data
        inputs[index], targets[index] = sample, int(target)
    return Decoded(inputs, targets, replay)


def _same(sample: tuple[Any, Any], inputs: Tensor, target: Tensor) -> bool:
    return isinstance(sample[0], Tensor) and torch.equal(sample[0], inputs) and sample[1] == int(target)


def _on(data: Dataset, device: torch.device) -> Dataset:
    if not isinstance(data, TensorDataset) or device.type == "cpu":
        return data
    if sum(t.numel() * t.element_size() for t in data.tensors) > DECODE_LIMIT_BYTES:
        return data
    return data.to(device) if isinstance(data, Decoded) else TensorDataset(*(t.to(device) for t in data.tensors))


def _plan(data: Dataset) -> tuple[Dataset, list[Replayed]] | None:
    """A view of ``data`` that applies only its deterministic transforms, and the random ones to replay; None if unknown."""
    if type(data) is Subset:
        inner = _plan(data.dataset)
        return None if inner is None else (Subset(inner[0], data.indices), inner[1])
    if type(data) is TensorDataset:  # inside a Subset (random_split): gathered in bulk
        return data, []
    if not type(data).__module__.startswith("torchvision.datasets"):
        return None
    import torchvision
    from torchvision import transforms
    from torchvision.datasets.folder import default_loader, pil_loader
    from torchvision.datasets.vision import StandardTransform

    if type(data) not in {getattr(torchvision.datasets, name) for name in _DATASETS}:
        return None
    if data.target_transform is not None or not isinstance(data.transforms, StandardTransform) or data.transforms.transform is not data.transform:
        return None
    if getattr(data, "loader", default_loader) not in (default_loader, pil_loader):
        return None
    steps = list(data.transform.transforms) if type(data.transform) is transforms.Compose else [data.transform]
    head = 0
    while head < len(steps) and type(steps[head]) in (transforms.RandomCrop, transforms.RandomHorizontalFlip):
        head += 1
    rest = steps[head:]
    allowed = _POINTWISE if head else _DETERMINISTIC
    if not rest or not all(type(step) is getattr(transforms, type(step).__name__, None) and type(step).__name__ in allowed for step in rest):
        return None
    view = _with_transform(data, transforms.Compose(rest))
    replay = [_replayed(step, data, view, transforms.Compose(rest)) for step in steps[:head]]
    return None if None in replay else (view, replay)


def _bulk(view: Dataset) -> tuple[Tensor, Tensor] | None:
    """All of MNIST's or CIFAR's samples at once: their uint8 arrays through ``ToTensor``'s operations and the
    ``Normalize`` transforms themselves (which take batches); None for other datasets and transforms."""
    import torchvision
    from torchvision import transforms

    if type(view) is Subset:
        inner = _bulk(view.dataset)
        return None if inner is None else (inner[0][view.indices], inner[1][view.indices])
    if type(view) is TensorDataset:
        return (view.tensors[0], view.tensors[1]) if len(view.tensors) == 2 else None
    getitem = type(view).__getitem__
    if getitem is torchvision.datasets.MNIST.__getitem__:
        pixels, targets = view.data.unsqueeze(-1), torch.as_tensor(view.targets)
    elif getitem is torchvision.datasets.CIFAR10.__getitem__:
        pixels, targets = torch.from_numpy(view.data), torch.as_tensor(view.targets)
    else:
        return None
    steps = view.transform.transforms
    if pixels.dtype != torch.uint8 or type(steps[0]) is not transforms.ToTensor or any(type(s) is not transforms.Normalize for s in steps[1:]):
        return None
    inputs = torch.empty((len(pixels), pixels.shape[3], *pixels.shape[1:3]), dtype=torch.get_default_dtype())
    for start in range(0, len(pixels), BULK_CHUNK):
        chunk = pixels[start:start + BULK_CHUNK].permute(0, 3, 1, 2).contiguous().to(inputs.dtype).div(255)  # ToTensor
        for normalize in steps[1:]:
            chunk = normalize(chunk)
        inputs[start:start + BULK_CHUNK] = chunk
    return inputs, targets.long()


def _with_transform(data: Dataset, transform: Any) -> Dataset:
    from torchvision.datasets.vision import StandardTransform

    view = copy.copy(data)  # shares the loaded arrays and file lists
    view.transform, view.transforms = transform, StandardTransform(transform)
    return view


def _replayed(step: Any, data: Dataset, view: Dataset, rest: Any) -> Replayed | None:
    """The replay of one random transform, or None when it cannot be replayed exactly on decoded tensors."""
    from PIL import Image
    from torchvision import transforms

    if type(step) is transforms.RandomHorizontalFlip:
        return RandomFlip(step)
    raw, _ = _with_transform(data, None)[0]
    shape = tuple(view[0][0].shape)
    if (step.padding_mode != "constant" or not isinstance(step.fill, numbers.Number) or raw.mode == "P"
            or len(shape) != 3 or tuple(step.size) != shape[1:]):
        return None
    fill = rest(Image.new(raw.mode, (1, 1), step.fill))  # a padded pixel, decoded as the rest decodes pixels
    return RandomCrop(step, shape, fill)


class RandomCrop:
    """torchvision's ``RandomCrop`` (constant padding, output the image's size) replayed on decoded batches."""

    def __init__(self, transform: Any, shape: tuple[int, ...], fill: Tensor) -> None:
        self.transform, self.fill = transform, fill
        padding = transform.padding or 0
        left, top, right, bottom = (
            (padding,) * 4 if isinstance(padding, int) else (padding[0],) * 4 if len(padding) == 1
            else (padding[0], padding[1]) * 2 if len(padding) == 2 else tuple(padding)
        )
        self.offset = (top, left)
        self.padded = (shape[0], shape[1] + top + bottom, shape[2] + left + right)
        self.probe = torch.empty(self.padded, device="meta")  # get_params reads only its shape

    def draw(self) -> tuple[int, int]:
        i, j, _, _ = self.transform.get_params(self.probe, self.transform.size)  # torchvision's own draws
        return i, j

    def apply(self, batch: Tensor, params: Sequence[tuple[int, int]]) -> Tensor:
        count, channels, height, width = batch.shape
        device = batch.device
        padded = self.fill.to(device).expand(count, *self.padded).clone()
        top, left = self.offset
        padded[:, :, top:top + height, left:left + width] = batch
        corners = torch.tensor(params, device=device).reshape(count, 2)
        rows = corners[:, :1] + torch.arange(height, device=device)
        cols = corners[:, 1:] + torch.arange(width, device=device)
        return padded[torch.arange(count, device=device)[:, None, None, None], torch.arange(channels, device=device)[:, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]


class RandomFlip:
    """torchvision's ``RandomHorizontalFlip`` replayed on decoded batches."""

    def __init__(self, transform: Any) -> None:
        self.p = transform.p

    def draw(self) -> bool:
        return bool(torch.rand(1) < self.p)  # the call torchvision makes per sample

    def apply(self, batch: Tensor, params: Sequence[bool]) -> Tensor:
        flipped = torch.tensor(params, device=batch.device).reshape(-1, 1, 1, 1)
        return torch.where(flipped, batch.flip(-1), batch)
