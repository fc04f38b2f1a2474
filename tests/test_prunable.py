"""What is prunable: every weight that feeds a matmul or a conv, found by tracing what the model does; and how size is counted."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pytest_shrinkbench.prunable import (
    count_parameters,
    keep_pattern,
    parse_pattern,
    pattern_violation,
    prunable_modules,
    prunable_parameters,
    trace_model,
)
from pytest_shrinkbench.suites import digits
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


class Functional(nn.Module):
    """Weights used through F.linear, ``@`` (as transformers' Conv1D stores them: inputs × outputs), and an embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 12)
        self.w = nn.Parameter(torch.randn(20, 12))  # F.linear: outputs × inputs
        self.v = nn.Parameter(torch.randn(20, 8))  # h @ v: inputs × outputs
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, tokens):
        h = F.linear(self.embed(tokens).mean(1), self.w)
        return (h @ self.v) * self.scale


def encoder(layers=2, width=32):
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(width, 4, 2 * width, batch_first=True), layers)


def counted_by_flop_counter(model, example):
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        meta(torch.zeros_like(example, device="meta"))
    return counter.get_total_flops()


def test_conv_and_linear_weights_are_prunable_including_classifier():
    torch.manual_seed(0)
    model = ConvNet()
    prunable = prunable_parameters(model, example=torch.zeros(1, 3, 4, 4))
    assert list(prunable) == ["conv.weight", "body.1.weight", "classifier.weight"]
    params = dict(model.named_parameters())
    for name, p in prunable.items():
        assert p is params[name]
    assert prunable_modules(model) == {"conv": "conv.weight", "body.1": "body.1.weight", "classifier": "classifier.weight"}


def test_the_embedded_suites_prunable_sets_are_their_conv_and_linear_weights():
    """The trace finds exactly what the module rule of earlier releases found: the built-in suites' rows stay the same."""
    example = torch.zeros(1, 1, 8, 8)
    for model in (digits.DigitsCNN(), digits.DigitsMLP()):
        trace = trace_model(model, example)
        assert trace.prunable == tuple(dict.fromkeys(prunable_modules(model).values()))
        assert trace.fixed_flops == 0 and trace.total == sum(trace.flops.values())


def test_attention_in_proj_weight_is_prunable_and_every_matmul_is_counted():
    """nn.MultiheadAttention's packed in_proj_weight (sliced into q, k and v) and its functional out_proj count like linears."""
    model = encoder()
    example = torch.zeros(1, 8, 32)
    trace = trace_model(model, example)
    assert "layers.0.self_attn.in_proj_weight" in trace.prunable
    assert "layers.0.self_attn.out_proj.weight" in trace.prunable
    assert not any(n.endswith("bias") or ".norm" in n for n in trace.prunable)
    assert trace.flops["layers.0.self_attn.in_proj_weight"] == 2 * 8 * 32 * 96
    assert trace.flops["layers.0.self_attn.out_proj.weight"] == 2 * 8 * 32 * 32
    # QKᵀ and AV: activation × activation, counted and attributed to nobody: 2 layers × 2 matmuls × 2·8·8·32.
    assert trace.fixed_flops == 2 * 2 * 2 * 8 * 8 * 32
    assert trace.total == counted_by_flop_counter(model, example)


@pytest.mark.parametrize("kind", ["own transformer", "torchvision ViT", "F.linear and @"])
def test_recorded_dense_flops_cover_the_flop_counter(kind):
    """≥ 95% of FlopCounterMode's total is recorded (all of it is), and what prunable weights carry is attributed to them."""
    if kind == "own transformer":
        model, example = encoder(), torch.zeros(1, 8, 32)
    elif kind == "torchvision ViT":
        torch.manual_seed(0)
        model = torchvision.models.VisionTransformer(32, 4, 2, 4, 64, 128, num_classes=10)
        example = torch.zeros(1, 3, 32, 32)
    else:
        torch.manual_seed(0)
        model, example = Functional(), torch.zeros(1, 5, dtype=torch.long)
    trace = trace_model(model, example)
    reference = counted_by_flop_counter(model, example)
    assert reference > 0 and trace.total >= 0.95 * reference
    attributed = sum(trace.flops[n] for n in trace.prunable)
    assert attributed + trace.fixed_flops == trace.total
    assert attributed >= 0.8 * trace.total  # the model's work is mostly its weights'


def test_functional_weights_are_prunable_with_their_input_dimension_and_embeddings_are_not():
    torch.manual_seed(0)
    model = Functional()
    trace = trace_model(model, torch.zeros(1, 5, dtype=torch.long))
    assert trace.prunable == ("w", "v")
    assert trace.input_dim == {"w": 1, "v": 0}, "F.linear reads a weight's rows as outputs; h @ v reads v's rows as inputs"
    assert trace.embeddings == ("embed.weight",)
    assert trace.flops == {"w": 2 * 12 * 20, "v": 2 * 20 * 8}
    opted_in = trace_model(model, torch.zeros(1, 5, dtype=torch.long), embeddings=True)
    assert opted_in.prunable == ("w", "v", "embed.weight")  # named_parameters order: own parameters first


def test_a_suite_excludes_weights_by_name_pattern():
    model = encoder()
    example = torch.zeros(1, 8, 32)
    trace = trace_model(model, example, exclude=("layers.1.*", "*.out_proj.weight"))
    assert trace.prunable == ("layers.0.self_attn.in_proj_weight", "layers.0.linear1.weight", "layers.0.linear2.weight")
    assert trace.total == trace_model(model, example).total, "excluded weights still do their work"


def test_tied_weight_listed_once_and_counted_once():
    torch.manual_seed(0)
    model = Tied()
    trace = trace_model(model, torch.zeros(1, 4))
    assert trace.prunable == ("a.weight",)
    assert trace.flops == {"a.weight": 2 * 2 * 16}, "both layers' work is the tied weight's"
    assert trace_model(model, torch.zeros(1, 4), exclude=("b.weight",)).prunable == (), "excluded by any of its names"
    # both modules use it, both map to its first name
    assert prunable_modules(model) == {"a": "a.weight", "b": "a.weight"}
    total, nonzero = count_parameters(model)
    assert total == 16 + 4 + 4  # one 4x4 weight, two biases
    assert nonzero == total


def test_a_model_that_cannot_run_on_meta_is_traced_on_its_own_device():
    class NeedsData(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            if x.sum().item() > 1e9:  # .item() has no meta kernel
                return x
            return self.fc(x)

    trace = trace_model(NeedsData(), torch.zeros(1, 4))
    assert trace.prunable == ("fc.weight",) and trace.flops == {"fc.weight": 24}


def test_prunable_parameters_refuse_names_of_another_architecture():
    with pytest.raises(ValueError, match="not the architecture"):
        prunable_parameters(Tied(), ["conv.weight"])


def test_count_parameters_total_and_nonzero():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    total, nonzero = count_parameters(model)
    assert total == 4 * 3 + 3 + 3 + 3 + 3 * 2  # weights, biases and norm affine parameters; no buffers
    assert nonzero == total - 3  # batch-norm bias starts at zero
    with torch.no_grad():
        model[0].weight[0].zero_()  # 4 entries
        model[2].weight[1, 2] = 0.0
    assert count_parameters(model) == (total, nonzero - 5)


def test_keep_pattern_keeps_n_of_every_m_inputs_along_each_weights_input_dimension():
    torch.manual_seed(0)
    scores = {"linear": torch.rand(3, 8), "conv": torch.rand(4, 2, 2, 2), "conv1d": torch.rand(8, 3), "odd": torch.rand(4, 9)}
    dims = {"linear": 1, "conv": 1, "conv1d": 0, "odd": 1}
    masks = keep_pattern(scores, dims, (2, 4))
    assert masks["linear"].reshape(3, 2, 4).sum(2).eq(2).all()
    assert masks["conv"].reshape(4, 2, 4).sum(2).eq(2).all(), "a conv's groups run along its flattened inputs (in × kh × kw)"
    assert masks["conv1d"].t().reshape(3, 2, 4).sum(2).eq(2).all(), "an inputs × outputs weight groups along its rows"
    assert masks["odd"].all(), "9 inputs are not a multiple of 4: left dense"
    for name, mask in masks.items():
        assert pattern_violation(mask, dims[name], (2, 4)) is None
        kept = scores[name][mask]
        assert kept.numel() == 0 or kept.min() >= 0  # masks are of the scores' shape and bool
    # the kept ones are the largest of each group
    groups = scores["linear"].reshape(3, 2, 4)
    assert torch.equal(masks["linear"].reshape(3, 2, 4), groups >= groups.topk(2, dim=2).values[..., 1:])


def test_a_3_of_4_group_is_named_with_its_row_and_inputs():
    mask = keep_pattern({"w": torch.arange(16.0).reshape(2, 8)}, {"w": 1}, (2, 4))["w"]
    mask[1, 5] = True  # row 1, group 1 (inputs 4..7) now keeps 3
    problem = pattern_violation(mask, 1, (2, 4))
    assert problem.startswith("group 1 of input row 1 (inputs 4..7) keeps 3 of 4, the 2:4 pattern keeps 2")
    uncovered = torch.ones(4, 9, dtype=torch.bool)
    uncovered[0, 0] = False
    assert "not a multiple of 4" in pattern_violation(uncovered, 1, (2, 4))


@pytest.mark.parametrize("text, expected", [("2:4", (2, 4)), ("4:8", (4, 8)), ("1:4", (1, 4)), (None, None)])
def test_patterns_parse(text, expected):
    assert parse_pattern(text) == expected


@pytest.mark.parametrize("text", ["2/4", "4:2", "0:4", "2:2", "two:four"])
def test_malformed_patterns_are_refused(text):
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern(text)
