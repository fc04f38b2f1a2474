"""Structured masks: removed output channels, their consumers found by torch.fx, and the FLOPs they save."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_shrinkbench.measure.flops import sparse_flops
from pytest_shrinkbench.measure.structured import (
    Link,
    channel_links,
    count_removed_channels,
    removed_channels,
    structured_flops,
    weight_links,
)
from pytest_shrinkbench.prunable import prunable_modules
from pytest_shrinkbench.suites import digits as models
from tests.helpers import traced


class Stack(nn.Module):
    """conv(1→4, 3×3, pad 1) → bn → relu → conv(4→2, 3×3, pad 1) → flatten → linear(2·5·5 → 3), on 1×5×5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))), 1))


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {module: params[param] for module, param in prunable_modules(model).items()}


def test_hand_computed_conv_bn_relu_conv_stack() -> None:
    model = Stack()
    trace, params, links = traced(model, (1, 5, 5))
    # MACs: conv1 4·1·9·25 = 900, conv2 2·4·9·25 = 1800, fc 3·50 = 150; FlopCounterMode counts 2 per MAC.
    assert trace.flops == {"conv1.weight": 1800, "conv2.weight": 3600, "fc.weight": 300}
    assert channel_links(model) == {"conv2": Link("conv1", 1), "fc": Link("conv2", 25)}
    assert links == {"conv2.weight": Link("conv1.weight", 1), "fc.weight": Link("conv2.weight", 25)}
    with torch.no_grad():
        model.conv1.weight[1] = 0  # remove output channel 1 of conv1: conv2 loses input channel 1
        model.conv2.weight[0] = 0  # remove output channel 0 of conv2: fc loses its first 25 columns
    weights = weights_of(model)
    # conv1: 3/4 of 900 MACs; conv2: channel 0 gone (1/2) and input channel 1 gone (3/4): 1800·3/8 = 675;
    # fc: columns 0..24 gone: 150/2 = 75. Total 675 + 675 + 75 = 1425 MACs = 2850 FLOPs.
    assert structured_flops(trace, params, links) == 2 * (675 + 675 + 75)
    # Density scaling alone: 675 + 900 + 150 MACs.
    assert sparse_flops(trace, params) == 2 * (675 + 900 + 150)
    assert count_removed_channels(weights) == 2
    assert removed_channels(model.conv1.weight).tolist() == [False, True, False, False]


def test_unstructured_masks_cost_the_same_either_way() -> None:
    model = Stack()
    with torch.no_grad():
        for w in (model.conv1.weight, model.conv2.weight, model.fc.weight):
            w.view(w.shape[0], -1)[:, 0] = 0  # one weight of every channel: no channel removed
    trace, params, links = traced(model, (1, 5, 5))
    weights = weights_of(model)
    assert structured_flops(trace, params, links) == sparse_flops(trace, params)
    assert count_removed_channels(weights) == 0


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1)
        self.conv2 = nn.Conv2d(2, 2, 1)
        self.conv3 = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.conv3(self.conv2(y) + y)


def test_a_residual_add_blocks_the_saving() -> None:
    """conv3's input is conv2's output plus conv1's: a channel removed from conv2 is not removed from it."""
    links = channel_links(Residual())
    assert links == {"conv2": Link("conv1", 1)}


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.fc(x)


def test_untraceable_model_has_no_links() -> None:
    assert channel_links(Untraceable()) is None


def test_embedded_suites_are_traced() -> None:
    assert channel_links(models.DigitsCNN()) == {
        "features.1.0": Link("features.0.0", 1), "features.3.0": Link("features.1.0", 1), "classifier": Link("features.3.0", 4),
    }
    assert channel_links(models.DigitsMLP()) == {"fc2": Link("fc1", 1), "fc3": Link("fc2", 1)}


def test_reshape_and_grouped_consumers_get_no_link() -> None:
    """A ``view`` breaks the link; so does a grouped conv that is not depthwise (groups of channels, or a multiplier)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.grouped = nn.Conv2d(4, 4, 3, groups=2)
            self.multiplier = nn.Conv2d(4, 8, 1, groups=4)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.multiplier(self.grouped(self.conv(x)))
            return self.fc(x.view(x.shape[0], -1))

    assert channel_links(Net()) == {}


class Inverted(nn.Module):
    """MobileNetV2's inverted residual in small: expand 1×1 (2→4) → bn → relu6 → depthwise 3×3 → bn → relu6 → project 1×1 (4→3)."""

    def __init__(self, padding: int = 1) -> None:
        super().__init__()
        self.expand, self.bn1 = nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)
        self.dw, self.bn2 = nn.Conv2d(4, 4, 3, padding=padding, groups=4), nn.BatchNorm2d(4)
        self.project = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn1(self.expand(x)))
        return self.project(nn.functional.relu6(self.bn2(self.dw(x))))


def test_depthwise_conv_passes_removed_channels_through() -> None:
    model = Inverted()
    trace, params, _ = traced(model, (2, 5, 5))
    # MACs: expand 4·2·25 = 200, dw 4·9·25 = 900 (one 3×3 filter per channel), project 3·4·25 = 300.
    assert trace.flops == {"expand.weight": 400, "dw.weight": 1800, "project.weight": 600}
    links = channel_links(model)
    assert links == {"dw": Link("expand", 1, depthwise=True), "project": Link("expand", 1, through=("dw",))}
    with torch.no_grad():
        model.expand.weight[1] = 0  # expand's channel 1 is a constant: the dw's filter 1 and project's column 1 do no work
        model.dw.weight[3] = 0  # the dw's own removed channel 3: project's column 3 does no work either
    weights = weights_of(model)
    # expand 3/4 of 200 = 150; dw: filters 0 and 2 live, 2/4 of 900 = 450; project: columns 0 and 2, 2/4 of 300 = 150.
    assert structured_flops(trace, params, weight_links(model, links)) == 2 * (150 + 450 + 150)
    # Before depthwise convs passed channels through, the dw was opaque (675) and project saw only the dw's own channel 3 (225).
    assert structured_flops(trace, params, {"project.weight": Link("dw.weight", 1)}) == 2 * (150 + 675 + 225)
    assert count_removed_channels(weights) == 2


def test_depthwise_conv_with_nothing_above_is_the_producer() -> None:
    """Fed by the model's input, the depthwise conv's own all-zero filters still remove the next layer's columns."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert channel_links(model) == {"3": Link("0", 1)}
    chain = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 2))
    assert channel_links(chain) == {"2": Link("0", 1, depthwise=True), "4": Link("0", 1, through=("2",))}


def _live_inputs(masks: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Each mask with the input columns its producer's removed channels feed set back to True: a row of it
    is all True for a filter kept whole, whatever its producers lost."""
    by_module = prunable_modules(model)
    full = {n: m.clone() for n, m in masks.items()}
    for module, link in channel_links(model).items():
        consumer, producer = by_module[module], by_module[link.producer]
        gone = removed_channels(masks[producer])
        m = full[consumer]
        m.view(m.shape[0], m.shape[1] // link.group, link.group, -1)[:, gone] = True
    return full


@pytest.mark.parametrize("ratio", [2, 4, 8, 32])
def test_l1_filter_removes_whole_filters_and_hits_the_ratio(ratio: float) -> None:
    from pytest_shrinkbench.sandbox.methods import load_installed

    load_installed()  # registers the baselines

    from pytest_shrinkbench import prune
    from pytest_shrinkbench.prunable import count_parameters
    from pytest_shrinkbench.sandbox.context import PruneContext

    torch.manual_seed(0)
    model = models.DigitsCNN()
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    masks = prune(model, "l1-filter", ratio, batch=batch)
    ctx = PruneContext(model, ratio, *batch)
    assert sum(int(m.sum()) for m in masks.values()) == ctx.keep_budget(), "exactly the requested compression"
    body = [n for n in masks if n != "classifier.weight"]
    for name in body:
        assert 0 < int(removed_channels(masks[name]).sum()) < masks[name].shape[0], f"{name}: filters removed, one kept at least"
    assert not removed_channels(masks["classifier.weight"]).any(), "the classifier keeps every class row"
    # A removed filter takes the weights reading its channel with it: no kept weight reads a removed channel.
    live = _live_inputs(masks, model)
    for name in masks:
        rows = masks[name].view(masks[name].shape[0], -1)
        dead_inputs = live[name].view(rows.shape[0], -1) & ~rows
        if name != "features.0.0.weight":
            assert dead_inputs.any(), f"{name}: consumer columns of removed filters are removed too"
    if ratio <= 8:  # whole filters plus one partial filter at most (rows incomplete beyond removed inputs)
        partial = sum(
            int((masks[n].view(masks[n].shape[0], -1).any(1) & ~live[n].view(masks[n].shape[0], -1).all(1)).sum())
            for n in masks
        )
        assert partial <= 1
    # Whole filters go in order of L1 norm: a removed filter of a layer never has a larger norm than a kept one.
    for name in body:
        w = dict(model.named_parameters())[name].detach()
        norms = w.reshape(w.shape[0], -1).abs().sum(1)
        rows = masks[name].view(w.shape[0], -1)
        gone, kept = ~rows.any(1), live[name].view(w.shape[0], -1).all(1)
        if gone.any() and kept.any():
            assert norms[gone].max() <= norms[kept].min()
    with torch.no_grad():
        for name, mask in masks.items():
            dict(model.named_parameters())[name].mul_(mask)
    total, nonzero = count_parameters(model)
    assert abs(total / nonzero / ratio - 1) <= 0.005


def test_mean_std_leaves_out_a_collapsed_models_speedup() -> None:
    from pytest_shrinkbench.results.leaderboard import mean, mean_std

    assert mean_std([2.0, None, 4.0], 1) == "3.0 ± 1.4"
    assert mean_std([None]) == "-" and mean([None]) is None


