"""Metrics: parameter counts and FlopCounterMode FLOPs per module, dense and scaled by weight density."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pytest_shrinkbench.measure.flops import module_flops, sparse_flops
from pytest_shrinkbench.prunable import count_parameters, prunable_modules


def conv_flops(cout, hout, wout, cin, kh, kw, groups=1):
    """FlopCounterMode: two FLOPs per multiply-add; bias adds are not counted."""
    return 2 * cout * hout * wout * (cin // groups) * kh * kw


def linear_flops(fin, fout):
    return 2 * fin * fout


class Stack(nn.Module):
    """3x10x10 -> conv 3x3 (8x8) -> depthwise 3x3 stride 2 (4x4) -> pointwise -> nested linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.pw = nn.Conv2d(4, 6, 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 5))

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.pw(self.dw(x)))
        return self.head(F.max_pool2d(x, 1))


EXPECTED = {
    "conv1": conv_flops(4, 8, 8, 3, 3, 3),
    "dw": conv_flops(4, 4, 4, 4, 3, 3, groups=4),
    "pw": conv_flops(6, 4, 4, 4, 1, 1),
    "head.1": linear_flops(96, 5),
}


def stack():
    torch.manual_seed(0)
    return Stack()


def test_module_flops_match_hand_computation():
    model = stack()
    names = list(prunable_modules(model))
    assert names == ["conv1", "dw", "pw", "head.1"]
    assert module_flops(model, (3, 10, 10), names) == EXPECTED
    assert EXPECTED == {"conv1": 13824, "dw": 1152, "pw": 768, "head.1": 960}


def test_module_flops_per_example_and_model_untouched():
    """One example, whatever the batch; the count runs on a meta copy, so the model stays where it was."""
    model = stack()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = module_flops(model, (3, 10, 10), ["conv1", "bn", "head"])
    assert flops["conv1"] == EXPECTED["conv1"]
    assert flops["bn"] == 0  # norms are not counted
    assert flops["head"] == EXPECTED["head.1"]  # a container sums its children
    assert all(p.device.type == "cpu" for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_module_flops_scale_with_input_size():
    model = stack()
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 5))
    flops = module_flops(model, (3, 18, 18), ["conv1", "head.2"])
    assert flops == {"conv1": conv_flops(4, 16, 16, 3, 3, 3), "head.2": linear_flops(96, 5)}


def test_sparse_flops_scale_each_module_by_its_density():
    model = stack()
    with torch.no_grad():
        model.conv1.weight.view(-1)[:54].zero_()  # 108 weights, half left
        model.dw.weight.view(-1)[:27].zero_()  # 36 weights, a quarter left
        model.pw.weight.view(-1)[:16].zero_()  # 24 weights, a third left
        model.pw.bias.zero_()  # biases do not change FLOPs
    weights = {module: dict(model.named_parameters())[param] for module, param in prunable_modules(model).items()}
    dense = module_flops(model, (3, 10, 10), list(weights))
    expected = EXPECTED["conv1"] / 2 + EXPECTED["dw"] / 4 + EXPECTED["pw"] / 3 + EXPECTED["head.1"]
    assert sparse_flops(dense, weights) == round(expected) == 8416
    assert sparse_flops(dense, {n: torch.ones_like(w) for n, w in weights.items()}) == sum(EXPECTED.values())
    assert sparse_flops(dense, {n: torch.zeros_like(w) for n, w in weights.items()}) == 0


def test_resnet18_reference_params_and_flops():
    """The reference of docs/measuring.md: torchvision ResNet-18 at 224x224 has 11,689,512 parameters and 3.63 GFLOPs (1.82 GMACs)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    total, nonzero = count_parameters(model)
    assert total == 11_689_512
    assert nonzero < total  # batch-norm biases start at zero
    names = list(prunable_modules(model))
    assert len(names) == 21  # 20 convolutions (3 of them downsample shortcuts) + fc
    flops = module_flops(model, (3, 224, 224), names)
    assert all(flops[n] > 0 for n in names)
    assert flops["conv1"] == conv_flops(64, 112, 112, 3, 7, 7)
    assert flops["fc"] == linear_flops(512, 1000)
    assert sum(flops.values()) == pytest.approx(3.63e9, rel=0.01)
    assert sum(flops.values()) / 2 == pytest.approx(1.82e9, rel=0.01)
