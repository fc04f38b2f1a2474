"""FLOPs per weight (FlopCounterMode's formulas, attributed by the trace to the weight each matmul and conv reads),
dense and scaled by weight density."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pytest_shrinkbench.measure.flops import sparse_flops
from pytest_shrinkbench.prunable import count_parameters, trace_model


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
    "conv1.weight": conv_flops(4, 8, 8, 3, 3, 3),
    "dw.weight": conv_flops(4, 4, 4, 4, 3, 3, groups=4),
    "pw.weight": conv_flops(6, 4, 4, 4, 1, 1),
    "head.1.weight": linear_flops(96, 5),
}


def stack():
    torch.manual_seed(0)
    return Stack()


def test_flops_per_weight_match_hand_computation():
    trace = trace_model(stack(), torch.zeros(1, 3, 10, 10))
    assert trace.prunable == ("conv1.weight", "dw.weight", "pw.weight", "head.1.weight")
    assert trace.flops == EXPECTED
    assert EXPECTED == {"conv1.weight": 13824, "dw.weight": 1152, "pw.weight": 768, "head.1.weight": 960}
    assert trace.total == sum(EXPECTED.values()) and trace.fixed_flops == 0


def test_trace_counts_one_example_and_leaves_the_model_untouched():
    """One example, whatever the batch; the trace runs on meta tensors, so the model stays where it was, in its mode."""
    model = stack().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = trace_model(model, torch.zeros(1, 3, 10, 10))
    assert "bn.weight" not in trace.flops  # norms are counted as parameters, not FLOPs
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert trace_model(model, torch.zeros(1, 3, 10, 10, device="meta")) == trace


def test_flops_scale_with_input_size():
    model = stack()
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 5))
    flops = trace_model(model, torch.zeros(1, 3, 18, 18)).flops
    assert flops["conv1.weight"] == conv_flops(4, 16, 16, 3, 3, 3)
    assert flops["head.2.weight"] == linear_flops(96, 5)


def test_sparse_flops_scale_each_weight_by_its_density():
    model = stack()
    with torch.no_grad():
        model.conv1.weight.view(-1)[:54].zero_()  # 108 weights, half left
        model.dw.weight.view(-1)[:27].zero_()  # 36 weights, a quarter left
        model.pw.weight.view(-1)[:16].zero_()  # 24 weights, a third left
        model.pw.bias.zero_()  # biases do not change FLOPs
    trace = trace_model(model, torch.zeros(1, 3, 10, 10))
    weights = dict(model.named_parameters())
    expected = EXPECTED["conv1.weight"] / 2 + EXPECTED["dw.weight"] / 4 + EXPECTED["pw.weight"] / 3 + EXPECTED["head.1.weight"]
    assert sparse_flops(trace, weights) == round(expected) == 8416
    assert sparse_flops(trace, {n: torch.ones_like(w) for n, w in weights.items()}) == sum(EXPECTED.values())
    assert sparse_flops(trace, {n: torch.zeros_like(w) for n, w in weights.items()}) == 0


def test_resnet18_reference_params_and_flops():
    """The reference of docs/measuring.md: torchvision ResNet-18 at 224x224 has 11,689,512 parameters and 3.63 GFLOPs (1.82 GMACs)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    total, nonzero = count_parameters(model)
    assert total == 11_689_512
    assert nonzero < total  # batch-norm biases start at zero
    trace = trace_model(model, torch.zeros(1, 3, 224, 224))
    assert len(trace.prunable) == 21  # 20 convolutions (3 of them downsample shortcuts) + fc
    assert all(trace.flops[n] > 0 for n in trace.prunable)
    assert trace.flops["conv1.weight"] == conv_flops(64, 112, 112, 3, 7, 7)
    assert trace.flops["fc.weight"] == linear_flops(512, 1000)
    assert trace.total == sum(trace.flops.values()) == pytest.approx(3.63e9, rel=0.01)
    assert trace.total / 2 == pytest.approx(1.82e9, rel=0.01)
