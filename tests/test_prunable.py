"""Masks: which weights are prunable, invariant 1 (validate_masks), applying masks, and invariant 3 (MaskEnforcer)."""


import torch
from torch import nn

from pytest_shrinkbench.prunable import (
    count_parameters,
    prunable_modules,
    prunable_parameters,
)
from tests.helpers import ConvNet


class Tied(nn.Module):
    """Two Linear layers sharing one weight Parameter (each keeps its own bias)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_prunable_parameters_are_conv_and_linear_weights_including_classifier():
    torch.manual_seed(0)
    model = ConvNet()
    prunable = prunable_parameters(model)
    assert list(prunable) == ["conv.weight", "body.1.weight", "classifier.weight"]
    params = dict(model.named_parameters())
    for name, p in prunable.items():
        assert p is params[name]
    assert not any(name.endswith("bias") or name.startswith("bn.") for name in prunable)
    assert prunable_modules(model) == {"conv": "conv.weight", "body.1": "body.1.weight", "classifier": "classifier.weight"}


def test_tied_weight_listed_once_and_counted_once():
    torch.manual_seed(0)
    model = Tied()
    assert list(prunable_parameters(model)) == ["a.weight"]
    # both modules use it, both map to its first name
    assert prunable_modules(model) == {"a": "a.weight", "b": "a.weight"}
    total, nonzero = count_parameters(model)
    assert total == 16 + 4 + 4  # one 4x4 weight, two biases
    assert nonzero == total


def test_count_parameters_total_and_nonzero():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    total, nonzero = count_parameters(model)
    assert total == 4 * 3 + 3 + 3 + 3 + 3 * 2  # weights, biases and norm affine parameters; no buffers
    assert nonzero == total - 3  # batch-norm bias starts at zero
    with torch.no_grad():
        model[0].weight[0].zero_()  # 4 entries
        model[2].weight[1, 2] = 0.0
    assert count_parameters(model) == (total, nonzero - 5)
