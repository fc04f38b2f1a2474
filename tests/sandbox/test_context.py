"""PruneContext helpers a method builds on: activations and the seeded batch."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

from pytest_shrinkbench import PruneContext, prune
from pytest_shrinkbench.prunable import count_parameters, prunable_modules
from pytest_shrinkbench.run.masks import apply_masks, validate_masks
from pytest_shrinkbench.sandbox.context import _keep_largest
from pytest_shrinkbench.sandbox.methods import load_installed

load_installed()  # registers the baselines


def test_activations_are_per_module_outputs_and_leave_no_trace() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).train()
    inputs = torch.randn(4, 6)
    ctx = PruneContext(model, 2.0, inputs, torch.tensor([0, 1, 2, 0]))
    outputs = ctx.activations()
    assert list(outputs) == ["0", "1", "2"]
    assert torch.equal(outputs["0"], model[0](inputs))
    assert torch.equal(outputs["1"], outputs["0"].relu())
    assert torch.equal(outputs["2"], model(inputs))
    assert model.training, "the model's mode is restored"
    assert not any(m._forward_hooks for m in model.modules()), "the recording hooks are removed"


def test_generator_is_seeded_by_the_case() -> None:
    model = nn.Linear(4, 2)
    draw = lambda seed: torch.rand(5, generator=PruneContext(model, 2.0, torch.zeros(1, 4), torch.zeros(1), seed=seed).generator)
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


def test_advance_moves_to_the_next_step_and_drops_cached_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ctx = PruneContext(model, 2.0, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), steps=2)
    first = ctx.gradients()
    assert ctx.gradients() is first, "cached within a step"
    with torch.no_grad():
        model.weight.mul_(0.5)
    ctx.advance(4.0)
    assert (ctx.step, ctx.compression) == (1, 4.0)
    again = ctx.gradients()
    assert again is not first and not torch.equal(again["weight"], first["weight"]), "recomputed on the new weights"
    with pytest.raises(ValueError, match="step 1 is the last of 2"):
        ctx.advance(8.0)


RATIOS = [1, 2, 2.5, 3, 4, 8, 16, 32]


class Net(nn.Module):
    """Conv + batch norm + two linear layers, biases everywhere: 4698 parameters, 66 of them not prunable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 4).flatten(1)
        return self.fc2(torch.tanh(self.fc1(x)))


def net(seed=0, bn_bias=0.1):
    """Batch-norm biases set non-zero so that every parameter starts non-zero (x1 is then exact too)."""
    torch.manual_seed(seed)
    model = Net()
    nn.init.constant_(model.bn.bias, bn_bias)
    return model


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def context(model, ratio):
    x, y = batch()
    return PruneContext(model, ratio, x, y, seed=0)


def magnitude(ctx):
    return {name: w.detach().abs() for name, w in ctx.prunable.items()}


def test_net_parameter_counts():
    total, nonzero = count_parameters(net())
    assert total == 216 + 8 + 16 + 4096 + 32 + 320 + 10
    assert nonzero == total


def test_zero_valued_parameters_count_as_pruned():
    """Zero batch-norm biases (torch's default) are not kept: x1 keeps every weight, other ratios stay exact."""
    model = net(bn_bias=0.0)
    total, nonzero = count_parameters(model)
    assert nonzero == total - 8
    ctx = context(model, 1)
    assert ctx.keep_budget() == sum(p.numel() for p in ctx.prunable.values())
    ctx = context(model, 4)
    apply_masks(ctx.prunable, ctx.keep_top(magnitude(ctx)), {})
    assert count_parameters(model)[1] == round(total / 4)


@pytest.mark.parametrize("layerwise", [False, True], ids=["global", "layerwise"])
@pytest.mark.parametrize("ratio", RATIOS)
def test_keep_top_hits_compression_exactly(ratio, layerwise):
    model = net()
    total, _ = count_parameters(model)
    ctx = context(model, ratio)
    masks = validate_masks(ctx.keep_top(magnitude(ctx), layerwise=layerwise), ctx.prunable)
    apply_masks(ctx.prunable, masks, {})
    _, nonzero = count_parameters(model)
    assert nonzero == round(total / ratio)


@pytest.mark.parametrize("ratio", RATIOS)
def test_keep_budget_counts_biases_and_norms_as_kept(ratio):
    model = net()
    total, nonzero = count_parameters(model)
    ctx = context(model, ratio)
    prunable_total = sum(p.numel() for p in ctx.prunable.values())
    fixed = nonzero - prunable_total
    assert ctx.keep_budget() == round(total / ratio) - fixed
    masks = ctx.keep_top(magnitude(ctx))
    assert sum(int(m.sum()) for m in masks.values()) == ctx.keep_budget()


@pytest.mark.parametrize("ratio", [2, 2.5, 3, 8, 32])
def test_layerwise_keeps_same_fraction_per_layer(ratio):
    model = net()
    ctx = context(model, ratio)
    budget = ctx.keep_budget()
    prunable_total = sum(p.numel() for p in ctx.prunable.values())
    masks = ctx.keep_top(magnitude(ctx), layerwise=True)
    for name, mask in masks.items():
        expected = mask.numel() * budget / prunable_total
        assert abs(int(mask.sum()) - expected) <= 1, name
        # and within the layer it keeps the largest magnitudes
        w = ctx.prunable[name].detach().abs()
        if (~mask).any():
            assert w[mask].min() >= w[~mask].max()


def test_global_keep_top_is_a_single_threshold():
    """Global pruning drops the smallest scores across layers, so fractions differ per layer."""
    model = net()
    ctx = context(model, 8)
    scores = magnitude(ctx)
    masks = ctx.keep_top(scores)
    kept = torch.cat([scores[n][masks[n]] for n in masks])
    dropped = torch.cat([scores[n][~masks[n]] for n in masks])
    assert kept.min() >= dropped.max()
    fractions = {n: m.float().mean().item() for n, m in masks.items()}
    assert max(fractions.values()) - min(fractions.values()) > 0.01


def test_unreachable_ratio_raises():
    model = net()
    # 66 non-prunable parameters: x100 would leave round(4698 / 100) = 47
    ctx = context(model, 100)
    with pytest.raises(ValueError, match="unreachable"):
        ctx.keep_budget()
    with pytest.raises(ValueError, match="unreachable"):
        ctx.keep_top(magnitude(ctx))
    # x70 leaves round(67.1) = 67: exactly one prunable weight survives
    ctx = context(net(), 70)
    assert sum(int(m.sum()) for m in ctx.keep_top(magnitude(ctx)).values()) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_raise(bad):
    ctx = context(net(), 4)
    scores = magnitude(ctx)
    scores["fc1.weight"][3, 4] = bad
    with pytest.raises(ValueError, match=r"'fc1\.weight' contain NaN or infinite"):
        ctx.keep_top(scores)
    with pytest.raises(ValueError, match=r"'fc1\.weight' contain NaN or infinite"):
        ctx.keep_top(scores, layerwise=True)


def test_scores_must_cover_prunable_parameters_with_their_shapes():
    ctx = context(net(), 4)
    scores = magnitude(ctx)
    del scores["fc2.weight"]
    with pytest.raises(ValueError, match="cover exactly the prunable parameters"):
        ctx.keep_top(scores)
    scores = magnitude(ctx)
    scores["fc2.weight"] = scores["fc2.weight"].t()
    with pytest.raises(ValueError, match=re.escape("scores of 'fc2.weight' have shape (32, 10)")):
        ctx.keep_top(scores)


def torch_global_l1_masks(model, amount):
    """torch.nn.utils.prune's global L1 masks on a deep copy, by our parameter name."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    names = prunable_modules(ref)  # module name -> parameter name, in model order
    tprune.global_unstructured(
        [(modules[m], "weight") for m in names], pruning_method=tprune.L1Unstructured, amount=amount
    )
    return {names[m]: modules[m].weight_mask for m in names}


def check_matches_torch(model, ratio):
    x, y = batch()
    masks = prune(model, "global-magnitude", ratio, batch=(x, y), seed=0)
    pruned = sum(int((~m).sum()) for m in masks.values())
    reference = torch_global_l1_masks(model, pruned)
    assert list(reference) == list(masks)
    for name, mask in masks.items():
        assert reference[name].dtype == torch.float32
        assert torch.equal(reference[name].bool(), mask), f"{name} differs from torch at x{ratio}"
    return pruned


@pytest.mark.parametrize("ratio", [1, 1.5, 2, 4, 8, 16, 32])
def test_global_magnitude_equals_torch_global_unstructured_l1(ratio):
    """THE reference: our global magnitude baseline keeps exactly what torch's global L1 pruning keeps."""
    model = net()
    pruned = check_matches_torch(model, ratio)
    total, _ = count_parameters(model)
    prunable_total = sum(m.weight.numel() for m in (model.conv, model.fc1, model.fc2))
    assert pruned == prunable_total - (round(total / ratio) - 66)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_global_magnitude_equals_torch_with_ties(ratio):
    """Weights on a coarse grid: many exactly equal magnitudes, still the same choice as torch."""
    model = net(seed=3)
    with torch.no_grad():
        for m in (model.conv, model.fc1, model.fc2):
            m.weight.copy_(torch.round(m.weight * 20) / 20)
            m.weight[m.weight == 0] = 0.05  # keep them non-zero
    magnitudes = torch.cat([m.weight.abs().flatten() for m in (model.conv, model.fc1, model.fc2)])
    assert magnitudes.unique().numel() < 10  # ties really are there
    check_matches_torch(model, ratio)


@pytest.mark.parametrize("case", ["distinct", "straddling ties", "ties below", "all equal", "keep none", "keep all"])
def test_keep_top_drops_exactly_the_set_torch_prune_drops(case):
    """The threshold shortcut gives L1Unstructured's masks bit for bit, and defers to torch's own topk where ties
    straddle the threshold (which of several equal scores goes is then torch's choice, as before)."""
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(4000, generator=generator)
    keep = 1000
    if case == "straddling ties":
        scores[torch.randperm(4000, generator=generator)[:400]] = scores.sort().values[3000]
    elif case == "ties below":
        scores[:2000] = 0.0  # a gradual method's second step: the pruned weights all score zero
    elif case == "all equal":
        scores = torch.ones(4000)
    elif case == "keep none":
        keep = 0
    elif case == "keep all":
        keep = 4000
    layer = nn.Linear(4000, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(scores[None])
    reference = tprune.l1_unstructured(layer, "weight", amount=4000 - keep).weight_mask[0].bool()
    mask = _keep_largest(scores, keep)
    assert int(mask.sum()) == keep
    assert torch.equal(mask, reference)


def test_a_pattern_context_keeps_n_of_m_and_a_notebook_prune_checks_it() -> None:
    """keep_top with ctx.pattern keeps 2 of every 4 inputs whatever the requested compression; prune() validates it."""
    from pytest_shrinkbench.errors import MaskError
    from pytest_shrinkbench.sandbox.methods import METHODS, method

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    ctx = PruneContext(model, 2.0, x, y, pattern=(2, 4))
    masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
    assert all(m.reshape(m.shape[0], -1, 4).sum(2).eq(2).all() for m in masks.values())

    @method("cheat-2of4", pattern="2:4")
    def cheat(ctx):
        masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
        masks["2.weight"][:] = True  # ignores its own declared pattern
        return masks

    try:
        with pytest.raises(MaskError, match=r"mask of '2.weight' breaks the declared 2:4 pattern"):
            prune(model, "cheat-2of4", 2, batch=(x, y))
    finally:
        METHODS.retain(lambda m: m.name != "cheat-2of4")


@pytest.mark.parametrize("kwargs, message", [({"pattern": "2/4"}, "not N:M"), ({"pattern": "2:4", "steps": 3}, "one-shot")])
def test_method_declarations_are_checked(kwargs, message) -> None:
    from pytest_shrinkbench.sandbox.methods import method

    with pytest.raises(ValueError, match=message):
        method("declared", **kwargs)
