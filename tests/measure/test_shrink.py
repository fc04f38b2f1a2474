"""Physically shrinking structured-pruned models: smaller layers, the same function, only where the graph allows."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from pytest_shrinkbench.measure.shrink import shrink
from pytest_shrinkbench.measure.structured import structured_flops
from pytest_shrinkbench.prunable import trace_model
from tests.helpers import traced


def remove_channels(model: nn.Module, layer: str, channels: list[int]) -> None:
    """Zero whole output channels (filters or rows) of ``layer``, as a structured mask would."""
    with torch.no_grad():
        dict(model.named_modules())[layer].weight[channels] = 0


def randomize_norms(model: nn.Module) -> None:
    """Batch norms with non-trivial statistics, so a removed channel's constant output is not zero."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            with torch.no_grad():
                module.bias.copy_(torch.rand(module.num_features, generator=generator) + 0.5)  # positive: ReLU keeps it


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


class Unpadded(nn.Module):
    """Convs without padding, batch norm, pooling, flatten into a linear: every fold is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 6, 3), nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(6 * 2 * 2, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def test_shrunk_model_computes_the_same_logits_with_fewer_channels() -> None:
    torch.manual_seed(0)
    model = Unpadded()
    randomize_norms(model)
    remove_channels(model, "conv1", [0, 5])
    remove_channels(model, "conv2", [1, 2, 3])
    remove_channels(model, "fc1", [4, 9, 10, 15])
    x = torch.randn(7, 3, 8, 8)
    shrunk = shrink(model, x)
    assert shrunk.exact
    assert shrunk.layers == {"conv1": (8, 6), "conv2": (6, 3), "fc1": (16, 12)}
    assert shrunk.channels == 2 + 3 + 4
    small = dict(shrunk.model.named_modules())
    assert small["conv1"].weight.shape == (6, 3, 3, 3) and small["bn1"].running_mean.shape == (6,)
    assert small["conv2"].weight.shape == (3, 6, 3, 3) and small["bn2"].num_features == 3
    assert small["fc1"].weight.shape == (12, 3 * 2 * 2), "the flattened consumer loses 4 columns per removed channel"
    assert small["fc2"].weight.shape == (5, 12)
    torch.testing.assert_close(logits(shrunk.model, x), logits(model, x), rtol=1e-5, atol=1e-5)
    assert dict(model.named_modules())["conv1"].weight.shape == (8, 3, 3, 3), "the original model is untouched"


def test_shrunk_flops_equal_the_structured_accounting_for_whole_channels() -> None:
    """For purely structured masks, the dense FLOPs of the shrunk model are what the theory credits."""
    torch.manual_seed(0)
    model = Unpadded()
    remove_channels(model, "conv1", [1, 2, 7])
    remove_channels(model, "conv2", [0])
    remove_channels(model, "fc1", [3])
    trace, params, links = traced(model, (3, 8, 8))
    theory = structured_flops(trace, params, links)
    shrunk = shrink(model, torch.randn(2, 3, 8, 8)).model
    assert trace_model(shrunk, torch.zeros(1, 3, 8, 8)).total == theory < trace.total


def test_zero_padded_consumer_is_shrunk_but_not_exact() -> None:
    """A removed channel's constant meets a zero-padded conv: only the borders differ, and it says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    randomize_norms(model)
    remove_channels(model, "0", [2])
    x = torch.randn(3, 2, 6, 6)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"0": (4, 3)} and not shrunk.exact
    difference = (logits(shrunk.model, x) - logits(model, x)).abs()
    assert difference[..., 1:-1, 1:-1].max() < 1e-5, "the interior is exact"
    assert difference.max() > 1e-3, "the borders are not: that is why exact is False"


def inverted_residual(padding: int) -> nn.Sequential:
    """MobileNetV2's block: expand 1×1 → bn → relu6 → depthwise 3×3 → bn → relu6 → project 1×1 → bn."""
    return nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, padding=padding, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4))


def test_depthwise_conv_and_its_norm_are_cut_with_the_expand_channels() -> None:
    torch.manual_seed(0)
    model = inverted_residual(padding=0)
    randomize_norms(model)
    remove_channels(model, "0", [1, 4, 6])
    x = torch.randn(3, 3, 7, 7)
    shrunk = shrink(model, x)
    assert shrunk.exact, "no padding: the depthwise conv turns each constant into a constant everywhere"
    assert shrunk.layers == {"0": (8, 5)}
    small = dict(shrunk.model.named_modules())
    assert small["3"].weight.shape == (5, 1, 3, 3) and small["3"].groups == small["3"].in_channels == small["3"].out_channels == 5
    assert small["1"].num_features == small["4"].num_features == 5
    assert small["6"].weight.shape == (4, 5, 1, 1) and small["6"].bias is not None, "the constants folded into a new bias"
    torch.testing.assert_close(logits(shrunk.model, x), logits(model, x), rtol=1e-5, atol=1e-5)
    trace, params, links = traced(model, (3, 7, 7))
    theory = structured_flops(trace, params, links)
    assert trace_model(shrunk.model, torch.zeros(1, 3, 7, 7)).total == theory < trace.total


def test_zero_padded_depthwise_conv_is_cut_but_not_exact() -> None:
    torch.manual_seed(0)
    model = inverted_residual(padding=1)
    randomize_norms(model)
    remove_channels(model, "0", [0, 5])
    x = torch.randn(3, 3, 7, 7)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"0": (8, 6)} and dict(shrunk.model.named_modules())["3"].groups == 6
    assert not shrunk.exact
    difference = (logits(shrunk.model, x) - logits(model, x)).abs()
    assert difference[..., 1:-1, 1:-1].max() < 1e-5, "the interior is exact"
    assert difference.max() > 1e-3, "the depthwise conv's borders are not: that is why exact is False"


def test_torchvision_mobilenet_v2_shrinks_through_its_depthwise_convs() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=3).eval()
    randomize_norms(model)
    remove_channels(model, "features.2.conv.0.0", list(range(0, 96, 3)))
    remove_channels(model, "features.2.conv.1.0", [1, 2])  # the depthwise conv's own channels: credited, not cut
    x = torch.randn(2, 3, 32, 32)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"features.2.conv.0.0": (96, 64)}
    small = dict(shrunk.model.named_modules())
    assert small["features.2.conv.1.0"].groups == small["features.2.conv.1.1"].num_features == 64
    assert small["features.2.conv.2"].in_channels == 64
    assert not shrunk.exact, "the depthwise conv pads with zeros"
    assert logits(shrunk.model, x).shape == (2, 3)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x + self.b(torch.relu(self.a(x))))


def test_layers_feeding_a_residual_add_keep_their_channels() -> None:
    torch.manual_seed(0)
    model = Residual()
    remove_channels(model, "a", [0, 1])  # a feeds only b: shrinkable
    remove_channels(model, "b", [3])  # b feeds the add: its channel 3 still carries x's channel 3
    x = torch.randn(4, 6)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"a": (6, 4)}
    torch.testing.assert_close(logits(shrunk.model, x), logits(model, x), rtol=1e-5, atol=1e-5)


class Shared(nn.Module):
    """A reused stateless ReLU (fine), a layer called twice and a tied weight (neither may be cut alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.a, self.b, self.twice = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.tied_in, self.tied_out = nn.Linear(6, 6), nn.Linear(6, 6)
        self.tied_out.weight = self.tied_in.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.b(self.relu(self.a(x))))
        x = self.twice(self.relu(self.twice(x)))
        return self.head(self.relu(self.tied_out(self.relu(self.tied_in(x)))))


def test_reused_relu_is_fine_but_reused_or_tied_layers_are_not_cut() -> None:
    torch.manual_seed(0)
    model = Shared()
    for layer in ("a", "twice", "tied_in"):
        remove_channels(model, layer, [1])
    x = torch.randn(5, 4)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"a": (6, 5)}
    torch.testing.assert_close(logits(shrunk.model, x), logits(model, x), rtol=1e-5, atol=1e-5)


def test_untraceable_model_comes_back_unshrunk() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h if h.sum() > 0 else -h)  # data-dependent control flow: torch.fx cannot trace it

    model = Branchy()
    remove_channels(model, "a", [0])
    shrunk = shrink(model, torch.randn(2, 4))
    assert shrunk.channels == 0 and shrunk.layers == {}
    assert shrunk.model is not model


def test_torchvision_resnet_shrinks_inside_blocks_only() -> None:
    """In a torchvision ResNet-18 a block's first conv feeds only its second (shrinkable); the second feeds a residual add."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    randomize_norms(model)
    remove_channels(model, "layer1.0.conv1", list(range(0, 64, 2)))
    remove_channels(model, "layer1.0.conv2", [0, 1, 2])
    x = torch.randn(2, 3, 32, 32)
    shrunk = shrink(model, x)
    assert shrunk.layers == {"layer1.0.conv1": (64, 32)}
    small = dict(shrunk.model.named_modules())
    assert small["layer1.0.bn1"].num_features == 32 and small["layer1.0.conv2"].in_channels == 32
    assert not shrunk.exact, "conv2 pads with zeros and the removed channels' constants are positive"
    assert logits(shrunk.model, x).shape == (2, 3)


@pytest.mark.parametrize("removed", [[], list(range(8))], ids=["nothing removed", "everything removed"])
def test_nothing_or_everything_removed_is_left_alone(removed: list[int]) -> None:
    model = Unpadded()
    remove_channels(model, "conv1", removed)
    assert shrink(model, torch.randn(2, 3, 8, 8)).layers == {}
