"""The five ShrinkBench baselines through the notebook API ``pytest_shrinkbench.prune``."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_shrinkbench import MaskError, PruneContext, prune
from pytest_shrinkbench.prunable import count_parameters, prunable_parameters
from pytest_shrinkbench.run.masks import apply_masks
from pytest_shrinkbench.sandbox.methods import load_installed

load_installed()  # registers the baselines

BASELINES = ["global-gradient", "global-magnitude", "layer-gradient", "layer-magnitude", "random"]


class Net(nn.Module):
    """Batch norm and dropout make train-mode and eval-mode gradients differ; tanh keeps every gradient non-zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 4 * 4, 24)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(torch.tanh(self.bn(self.conv(x))), 4).flatten(1)
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


def net():
    torch.manual_seed(0)
    model = Net()
    nn.init.constant_(model.bn.bias, 0.1)
    with torch.no_grad():  # stats a trained model would have, so eval-mode batch norm is not the identity
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def kept(masks):
    return sum(int(m.sum()) for m in masks.values())


def budget(model, ratio):
    return PruneContext(model, ratio, *batch()).keep_budget()


@pytest.mark.parametrize("ratio", [2, 4, 10])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_returns_valid_masks_hitting_the_ratio(name, ratio):
    model = net()
    total, _ = count_parameters(model)
    masks = prune(model, name, ratio, batch=batch(), seed=1)
    prunable = prunable_parameters(model, example=torch.zeros(1, 3, 4, 4))
    assert list(masks) == list(prunable)
    for n, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == prunable[n].shape
    apply_masks(prunable, masks, {})
    assert count_parameters(model)[1] == round(total / ratio)


@pytest.mark.parametrize("name", BASELINES)
def test_prune_does_not_modify_the_model(name):
    """Weights, batch-norm statistics and the train/eval mode are as before."""
    model = net()
    model.train()
    before = copy.deepcopy(model.state_dict())
    prune(model, name, 4, batch=batch(), seed=0)
    assert model.training
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())


def eval_mode_scores(model, x, y):
    """|w * dL/dw| by hand: cross-entropy on the batch, eval mode."""
    prunable = prunable_parameters(model, example=torch.zeros(1, 3, 4, 4))
    model.eval()
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(prunable.values()))
    model.train()
    return {n: (w.detach() * g).abs() for (n, w), g in zip(prunable.items(), grads)}


def top_mask(scores, keep):
    """Keep the ``keep`` largest of the concatenated scores."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, keep).indices] = True
    return dict(zip(scores, (m.view_as(s) for m, s in zip(mask.split([s.numel() for s in scores.values()]), scores.values()))))


@pytest.mark.parametrize("ratio", [2, 5, 16])
def test_global_gradient_keeps_top_weight_times_gradient(ratio):
    model = net()
    x, y = batch()
    masks = prune(model, "global-gradient", ratio, batch=(x, y), seed=0)
    scores = eval_mode_scores(model, x, y)
    keep = budget(model, ratio)
    assert kept(masks) == keep
    kept_scores = torch.cat([scores[n][masks[n]] for n in masks])
    dropped_scores = torch.cat([scores[n][~masks[n]] for n in masks])
    assert kept_scores.min() >= dropped_scores.max()
    expected = top_mask(scores, keep)
    for n in masks:
        assert torch.equal(masks[n], expected[n]), n


def test_global_gradient_uses_eval_mode():
    """The reference above discriminates: train-mode gradients (dropout, batch statistics) choose other weights."""
    model = net()
    x, y = batch()
    masks = prune(model, "global-gradient", 5, batch=(x, y), seed=0)
    torch.manual_seed(0)
    prunable = prunable_parameters(model, example=torch.zeros(1, 3, 4, 4))
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(prunable.values()))
    train_scores = {n: (w.detach() * g).abs() for (n, w), g in zip(prunable.items(), grads)}
    train_masks = top_mask(train_scores, kept(masks))
    assert any(not torch.equal(masks[n], train_masks[n]) for n in masks)


@pytest.mark.parametrize("ratio", [3, 8])
def test_layer_gradient_keeps_top_weight_times_gradient_per_layer(ratio):
    model = net()
    x, y = batch()
    masks = prune(model, "layer-gradient", ratio, batch=(x, y), seed=0)
    scores = eval_mode_scores(model, x, y)
    for n, mask in masks.items():
        assert scores[n][mask].min() >= scores[n][~mask].max(), n
        assert torch.equal(mask, top_mask({n: scores[n]}, int(mask.sum()))[n]), n


@pytest.mark.parametrize("ratio", [2, 3, 8, 20])
@pytest.mark.parametrize("name", ["layer-magnitude", "layer-gradient"])
def test_layerwise_baselines_keep_same_fraction_per_layer(name, ratio):
    model = net()
    masks = prune(model, name, ratio, batch=batch(), seed=0)
    keep = budget(model, ratio)
    prunable_total = sum(m.numel() for m in masks.values())
    assert kept(masks) == keep
    for n, mask in masks.items():
        assert abs(int(mask.sum()) - mask.numel() * keep / prunable_total) <= 1, n


def test_global_baselines_do_not_keep_same_fraction_per_layer():
    model = net()
    masks = prune(model, "global-magnitude", 8, batch=batch(), seed=0)
    fractions = [m.float().mean().item() for m in masks.values()]
    assert max(fractions) - min(fractions) > 0.05


def test_layer_magnitude_keeps_largest_magnitudes_per_layer():
    model = net()
    masks = prune(model, "layer-magnitude", 4, batch=batch(), seed=0)
    for n, w in prunable_parameters(model, example=torch.zeros(1, 3, 4, 4)).items():
        assert w.detach().abs()[masks[n]].min() >= w.detach().abs()[~masks[n]].max(), n


def test_random_is_reproducible_per_seed_and_differs_across_seeds():
    model = net()
    torch.manual_seed(123)
    first = prune(model, "random", 4, batch=batch(), seed=7)
    torch.manual_seed(456)  # the global RNG must not matter, only the case's seed
    again = prune(model, "random", 4, batch=batch(), seed=7)
    other = prune(model, "random", 4, batch=batch(), seed=8)
    for n in first:
        assert torch.equal(first[n], again[n]), n
    assert any(not torch.equal(first[n], other[n]) for n in first)
    assert kept(first) == kept(other) == budget(model, 4)


def test_random_is_not_magnitude():
    model = net()
    rnd = prune(model, "random", 4, batch=batch(), seed=0)
    mag = prune(model, "global-magnitude", 4, batch=batch(), seed=0)
    assert any(not torch.equal(rnd[n], mag[n]) for n in rnd)


def test_prune_accepts_a_function_and_validates_its_masks():
    model = net()
    masks = prune(model, lambda ctx: ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()}), 4, batch=batch())
    reference = prune(model, "global-magnitude", 4, batch=batch())
    for n in masks:
        assert torch.equal(masks[n], reference[n])

    def floats(ctx):
        return {n: torch.ones_like(w) for n, w in ctx.prunable.items()}

    with pytest.raises(MaskError, match=r"mask of 'conv\.weight' has dtype torch\.float32"):
        prune(model, floats, 4, batch=batch())


def test_prune_unknown_method_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown method 'no-such-method'.*global-magnitude"):
        prune(net(), "no-such-method", 4, batch=batch())
