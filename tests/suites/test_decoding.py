"""Datasets decoded once: the same tensors and the same random draws as torchvision's per-sample path, or no decoding at all."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset, default_collate, random_split
from torchvision import transforms

from pytest_shrinkbench.suites import decoding
from pytest_shrinkbench.suites import vision_data as vd
from pytest_shrinkbench.suites.decoded import Decoded, take
from pytest_shrinkbench.suites.decoding import decode, decoded, prepared
from pytest_shrinkbench.suites.recipe import ScheduledRecipe
from pytest_shrinkbench.suites.registry import Splits
from pytest_shrinkbench.suites.training import evaluate, fit
from tests.vision_fakes import write_cifar10, write_mnist

CPU = torch.device("cpu")


@pytest.fixture
def cifar(tmp_path: Path, cifar_md5_bypass: None) -> Splits:
    """The fake CIFAR-10 through the suite's own loader (random crop of the padded image + flip, then normalize)."""
    write_cifar10(tmp_path, train=40, test=20)
    return vd.cifar10(tmp_path)


@pytest.fixture
def mnist(tmp_path: Path) -> torchvision.datasets.MNIST:
    write_mnist(tmp_path, train=30, test=10)
    return torchvision.datasets.MNIST(str(tmp_path), train=True, download=False,
                                      transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))


def per_sample(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return default_collate([data[i] for i in range(len(data))])


def test_mnist_is_decoded_to_exactly_the_per_sample_tensors(mnist: torchvision.datasets.MNIST) -> None:
    data = decode(mnist)
    assert isinstance(data, Decoded) and not data.replay and len(data) == 30
    inputs, targets = per_sample(mnist)
    assert torch.equal(data.tensors[0], inputs) and torch.equal(data.tensors[1], targets)
    assert torch.equal(data[7][0], mnist[7][0]) and data[7][1] == mnist[7][1]


def test_cifar_test_images_are_decoded_to_exactly_the_per_sample_tensors(cifar: Splits) -> None:
    data = decode(cifar.test)
    assert isinstance(data, Decoded) and not data.replay
    assert all(torch.equal(a, b) for a, b in zip(data.tensors, per_sample(cifar.test)))


def test_other_deterministic_transforms_are_decoded_sample_by_sample(mnist: torchvision.datasets.MNIST) -> None:
    resized = torchvision.datasets.MNIST(mnist.root, train=True, transform=transforms.Compose([transforms.Resize(14), transforms.ToTensor()]))
    data = decode(resized)
    assert isinstance(data, Decoded) and data.tensors[0].shape == (30, 1, 14, 14)
    assert all(torch.equal(a, b) for a, b in zip(data.tensors, per_sample(resized)))


def test_bulk_decoding_that_disagrees_with_the_per_sample_path_is_not_used(mnist: torchvision.datasets.MNIST,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "_bulk", lambda view: (torch.zeros(30, 1, 28, 28), torch.as_tensor(mnist.targets)))
    data = decode(mnist)
    assert all(torch.equal(a, b) for a, b in zip(data.tensors, per_sample(mnist)))


def test_cifar_crops_and_flips_are_replayed_with_torchvisions_draws(cifar: Splits) -> None:
    data = decode(cifar.train)
    assert [type(op).__name__ for op in data.replay] == ["RandomCrop", "RandomFlip"]
    indices = [5, 3, 3, 39, 0, 17, 22, 8, 11, 30]
    torch.manual_seed(4)
    expected = default_collate([cifar.train[i] for i in indices])
    after_per_sample = torch.get_rng_state()
    torch.manual_seed(4)
    got = take(data, indices)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), "the same crops, flips and padding values"
    assert torch.equal(torch.get_rng_state(), after_per_sample), "later draws (dropout, the next batch) see the same generator"
    torch.manual_seed(4)
    assert not torch.equal(got[0], take(data, list(reversed(indices)))[0].flip(0)), "the draws follow the sample order"


class TinyNet(nn.Module):
    """Batch norm and dropout: training draws from the global generator between batches, as real models do."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Dropout(0.3), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_training_on_decoded_data_gives_bit_identical_weights_and_metrics(cifar: Splits) -> None:
    recipe = ScheduledRecipe("sgd", lr=0.05, epochs=3, batch_size=16, momentum=0.9, nesterov=True)  # 40 = 16 + 16 + 8
    states, metrics = [], []
    for splits in (cifar, prepared(cifar, CPU)):
        torch.manual_seed(0)
        model = TinyNet(3)
        fit(model, splits.train, recipe, seed=3, device=CPU)
        states.append(model.state_dict())
        metrics.append(evaluate(model, splits.test, device=CPU))
    assert isinstance(prepared(cifar, CPU).train, Decoded)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    "transform",
    [
        transforms.Compose([transforms.ColorJitter(0.2), transforms.ToTensor()]),
        transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x * 2)]),
        transforms.Compose([transforms.RandomCrop(28, padding=2, padding_mode="reflect"), transforms.ToTensor()]),
        transforms.Compose([transforms.RandomCrop(24), transforms.ToTensor()]),  # changes the size
        transforms.Compose([transforms.RandomHorizontalFlip(), transforms.Resize(20), transforms.ToTensor()]),  # not pointwise
        transforms.Compose([transforms.ToTensor(), transforms.RandomHorizontalFlip()]),  # random after decoding
        None,  # PIL images: nothing to stack
    ],
    ids=["color-jitter", "lambda", "reflect-padding", "smaller-crop", "flip-then-resize", "flip-last", "no-transform"],
)
def test_transforms_not_provably_replayable_keep_the_per_sample_path(tmp_path: Path, transform: object) -> None:
    write_mnist(tmp_path, train=8, test=4)
    data = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False, transform=transform)
    assert decode(data) is data


def test_datasets_the_harness_cannot_vouch_for_are_not_decoded(mnist: torchvision.datasets.MNIST) -> None:
    class Noisy(torchvision.datasets.MNIST):
        def __getitem__(self, index: int):
            image, target = super().__getitem__(index)
            return image + torch.rand(()), target

    noisy = copy.copy(mnist)
    noisy.__class__ = Noisy  # (built this way: the subclass would look for its files under Noisy/)
    assert decode(noisy) is noisy, "a subclass may change __getitem__"
    relabelled = torchvision.datasets.MNIST(mnist.root, train=True, transform=mnist.transform, target_transform=lambda t: t % 2)
    assert decode(relabelled) is relabelled
    assert decode(mnist, limit=30 * 28 * 28 * 4 - 1) is mnist, "larger than the memory limit"


def test_a_subset_is_decoded_through_its_dataset(mnist: torchvision.datasets.MNIST) -> None:
    subset = Subset(mnist, [9, 2, 4])
    data = decode(subset)
    assert isinstance(data, Decoded)
    assert torch.equal(data.tensors[0], torch.stack([mnist[i][0] for i in (9, 2, 4)]))


def test_each_dataset_is_decoded_once_per_process(mnist: torchvision.datasets.MNIST) -> None:
    assert decoded(mnist) is decoded(mnist)
    tensors = decoded(mnist)
    assert decoded(tensors) is tensors, "tensors are already decoded"


def test_a_user_suites_fingerprint_does_not_change_when_its_data_is_decoded(mnist: torchvision.datasets.MNIST) -> None:
    """The fingerprint keys the cached base model: decoding must not make every user retrain it."""
    from pytest_shrinkbench.suites.user import fingerprint

    assert fingerprint(Splits(decode(mnist), decode(mnist))) == fingerprint(Splits(mnist, mnist))


def test_a_random_split_of_tensors_is_gathered_once() -> None:
    tensors = TensorDataset(torch.randn(10, 3), torch.arange(10, dtype=torch.int32))
    part, _ = random_split(tensors, [6, 4], generator=torch.Generator().manual_seed(0))
    data = decode(part)
    assert isinstance(data, Decoded)
    assert all(torch.equal(a, b) for a, b in zip(data.tensors, per_sample(part))), "values and dtypes as the DataLoader collates them"
