"""A user suite built on a torchvision model (ResNet-18, weights=None) runs end to end, structured FLOPs included."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from pytest_shrinkbench.measure.flops import sparse_flops
from pytest_shrinkbench.measure.structured import (
    Link,
    channel_links,
    structured_flops,
    weight_links,
)
from pytest_shrinkbench.prunable import prunable_modules, trace_model

# torchvision's ResNet-18 and SqueezeNet 1.1 have 11,689,512 and 1,235,496 parameters with 1000 classes;
# with 4, their heads (a linear, a 1×1 conv, both from 512 channels) have 512*4 + 4.
RESNET18_4_PARAMS = 11_689_512 - (512 * 1000 + 1000) + (512 * 4 + 4)
SQUEEZENET_4_PARAMS = 1_235_496 - (512 * 1000 + 1000) + (512 * 4 + 4)


def resnet18_macs(size: int, classes: int) -> int:
    """Conv and linear multiply-adds of torchvision's ResNet-18 on one ``size``×``size`` image, by hand."""

    def out(n: int, stride: int) -> int:  # 7×7 pad 3, 3×3 pad 1, 1×1 pad 0 convs and the 3×3 pad 1 max pool
        return (n - 1) // stride + 1

    side = out(size, 2)
    macs = 64 * 3 * 7 * 7 * side * side  # conv1
    side = out(side, 2)  # max pool
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = block == 0 and stride != 1
            side = out(side, stride if block == 0 else 1)
            macs += cout * cin * 9 * side * side + cout * cout * 9 * side * side  # conv1, conv2
            if first:
                macs += cout * cin * side * side  # downsample 1×1
            cin = cout
    return macs + 512 * classes


def test_hand_count_matches_the_reference() -> None:
    """docs/measuring.md: ResNet-18 at 224×224 is 1.82 GMACs (3.63 GFLOPs)."""
    assert resnet18_macs(224, 1000) == pytest.approx(1.82e9, rel=0.005)


def counted_flops(model: torch.nn.Module, size: int) -> int:
    """All FLOPs FlopCounterMode counts for one ``size``×``size`` image, whatever the module."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def test_flops_of_a_training_mode_resnet18_at_32x32() -> None:
    """At 32×32 the last stage is 1×1: a training-mode batch norm refuses the one-example count (a bug, fixed)."""
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    assert model.training
    trace = trace_model(model, torch.zeros(1, 3, 32, 32))
    assert trace.total == sum(trace.flops.values()) == 2 * resnet18_macs(32, 4)
    assert trace.flops["conv1.weight"] == 2 * 64 * 3 * 49 * 16 * 16 and trace.flops["fc.weight"] == 2 * 512 * 4
    assert model.training, "the model itself is left as it was"


def test_resnet18_links_stop_at_residual_adds() -> None:
    """Only a block's conv2 (fed by its conv1) and the stem's consumer get structured credit; anything after an add gets none."""
    links = channel_links(torchvision.models.resnet18(weights=None, num_classes=4))
    assert links is not None, "torch.fx traces torchvision's ResNet"
    assert links["layer1.0.conv2"] == Link("layer1.0.conv1", 1)
    assert "layer1.1.conv1" not in links, "fed by layer1.0's residual add"
    expected = {"layer1.0.conv1": Link("conv1", 1)}  # through bn1, relu and the max pool
    expected.update({f"layer{i}.{j}.conv2": Link(f"layer{i}.{j}.conv1", 1) for i in range(1, 5) for j in range(2)})
    assert links == expected


def test_squeezenet_links_stop_at_concatenations() -> None:
    """Both expand convs of a Fire module read its squeeze; the next squeeze reads their concatenation: no link."""
    links = channel_links(torchvision.models.squeezenet1_1(weights=None, num_classes=4))
    assert links is not None
    assert links["features.3.expand1x1"] == links["features.3.expand3x3"] == Link("features.3.squeeze", 1)
    assert links["features.3.squeeze"] == Link("features.0", 1), "through relu and the max pool"
    assert "features.4.squeeze" not in links and "classifier.1" not in links


def test_mobilenet_v2_links_pass_through_depthwise_convs() -> None:
    """Each inverted residual's depthwise conv is linked to its expand conv, and the project conv past it too."""
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=4)
    links = channel_links(model)
    assert links is not None
    assert links["features.1.conv.0.0"] == Link("features.0.0", 1, depthwise=True), "block 1 has no expand conv"
    assert links["features.1.conv.1"] == Link("features.0.0", 1, through=("features.1.conv.0.0",))
    assert links["features.2.conv.1.0"] == Link("features.2.conv.0.0", 1, depthwise=True)
    assert links["features.2.conv.2"] == Link("features.2.conv.0.0", 1, through=("features.2.conv.1.0",))
    assert "features.4.conv.0.0" not in links, "fed by features.3's residual add"
    depthwise = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d) and module.groups > 1}
    assert len(depthwise) == 17 and {name for name, link in links.items() if link.depthwise} == depthwise

    # Filters only (as a filter-pruning method leaves them): the weaker half of every expand conv's filters.
    modules = dict(model.named_modules())
    weights = {name: modules[name].weight.detach().clone() for name in prunable_modules(model)}
    for i in range(2, 18):
        w = weights[f"features.{i}.conv.0.0"]
        norms = w.flatten(1).abs().sum(1)
        w[norms < norms.median()] = 0
    trace = trace_model(model, torch.zeros(1, 3, 64, 64))
    params = {prunable_modules(model)[name]: w for name, w in weights.items()}
    # The links as they were before depthwise convs passed channels through: the depthwise conv opaque, the producer of its consumer.
    opaque = {name: Link(link.through[-1], link.group) if link.through else link for name, link in links.items() if not link.depthwise}
    assert structured_flops(trace, params, weight_links(model, opaque)) == sparse_flops(trace, params), \
        "the expand convs' channels bought nothing"
    # Through the depthwise convs: speedup 1.75 instead of 1.27 (the depthwise and project convs lose half their work).
    assert sparse_flops(trace, params) > 1.35 * structured_flops(trace, params, weight_links(model, links))


