"""Masks: which weights are prunable, invariant 1 (validate_masks), applying masks, and invariant 3 (MaskEnforcer)."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_shrinkbench import InvariantViolation, MaskError
from pytest_shrinkbench.prunable import (
    prunable_parameters,
)
from pytest_shrinkbench.run.masks import MaskEnforcer, apply_masks, validate_masks
from tests.helpers import ConvNet


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def half_masks(prunable, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=g) < 0.5 for name, p in prunable.items()}


# --- prunable parameters ---------------------------------------------------------------------------


# --- validate_masks (invariant 1) ------------------------------------------------------------------


@pytest.fixture
def prunable():
    torch.manual_seed(0)
    return prunable_parameters(ConvNet(), example=torch.zeros(1, 3, 4, 4))


def full_masks(prunable):
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable.items()}


def test_validate_masks_accepts_good_masks_in_prunable_order_as_the_harness_own_copies(prunable):
    masks = dict(reversed(list(full_masks(prunable).items())))
    out = validate_masks(masks, prunable)
    assert list(out) == list(prunable)
    for name in prunable:
        assert torch.equal(out[name], masks[name]) and out[name] is not masks[name] and type(out[name]) is torch.Tensor


class Lying(torch.Tensor):
    """A mask that would answer the harness's questions with lies."""

    def sum(self, *args, **kwargs):
        return super().sum(*args, **kwargs) * 0


def test_validate_masks_refuses_tensor_subclasses(prunable):
    masks = full_masks(prunable)
    masks["conv.weight"] = masks["conv.weight"].as_subclass(Lying)
    with pytest.raises(MaskError, match=re.escape("mask of 'conv.weight' is a Lying, not a plain torch.Tensor")):
        validate_masks(masks, prunable)


def test_apply_masks_counts_the_kept_weights_new_values_change(prunable):
    masks = full_masks(prunable)
    masks["conv.weight"][0] = False
    new = prunable["conv.weight"].detach().clone()
    new[0] += 1.0  # masked out: does not count
    new[1, 0, 0, 0] += 1.0  # kept: counts
    assert apply_masks(prunable, masks, {"conv.weight": new}) == 1


def test_validate_masks_rejects_non_dict(prunable):
    with pytest.raises(MaskError, match="must be a dict.*got list"):
        validate_masks([m for m in full_masks(prunable).values()], prunable)


def test_validate_masks_rejects_missing_parameter(prunable):
    masks = full_masks(prunable)
    del masks["body.1.weight"]
    with pytest.raises(MaskError, match=re.escape("no mask for prunable parameters ['body.1.weight']")):
        validate_masks(masks, prunable)


def test_validate_masks_rejects_unknown_parameter(prunable):
    masks = full_masks(prunable)
    masks["conv.bias"] = torch.ones(4, dtype=torch.bool)
    with pytest.raises(MaskError, match=re.escape("unknown parameters ['conv.bias']")):
        validate_masks(masks, prunable)


def test_validate_masks_rejects_float_mask(prunable):
    masks = full_masks(prunable)
    masks["classifier.weight"] = masks["classifier.weight"].float()
    with pytest.raises(MaskError, match=r"mask of 'classifier\.weight' has dtype torch\.float32"):
        validate_masks(masks, prunable)


def test_validate_masks_rejects_wrong_shape(prunable):
    masks = full_masks(prunable)
    masks["conv.weight"] = masks["conv.weight"].reshape(4, -1)
    with pytest.raises(MaskError, match=r"mask of 'conv\.weight' has shape \(4, 27\), parameter has \(4, 3, 3, 3\)"):
        validate_masks(masks, prunable)


def test_validate_masks_rejects_non_tensor_and_wrong_device(prunable):
    masks = full_masks(prunable)
    masks["conv.weight"] = masks["conv.weight"].tolist()
    with pytest.raises(MaskError, match=r"mask of 'conv\.weight' is a list"):
        validate_masks(masks, prunable)
    masks = full_masks(prunable)
    masks["conv.weight"] = torch.ones(prunable["conv.weight"].shape, dtype=torch.bool, device="meta")
    with pytest.raises(MaskError, match=r"mask of 'conv\.weight' is on meta"):
        validate_masks(masks, prunable)


# --- apply_masks -----------------------------------------------------------------------------------


def test_apply_masks_zeroes_exactly_the_masked_entries():
    model = mlp()
    prunable = prunable_parameters(model, example=torch.zeros(1, 6))
    before = {name: p.detach().clone() for name, p in prunable.items()}
    biases = {name: p.detach().clone() for name, p in model.named_parameters() if name not in prunable}
    masks = half_masks(prunable)
    apply_masks(prunable, masks, {})
    for name, p in prunable.items():
        assert torch.all(p[~masks[name]] == 0)
        assert torch.equal(p[masks[name]], before[name][masks[name]])
        assert int(torch.count_nonzero(p)) == int(masks[name].sum())  # init weights have no zeros
    for name, p in model.named_parameters():
        if name in biases:
            assert torch.equal(p, biases[name])


def test_apply_masks_writes_new_weights_then_masks_them():
    model = mlp()
    prunable = prunable_parameters(model, example=torch.zeros(1, 6))
    masks = half_masks(prunable)
    new = {"2.weight": torch.full_like(prunable["2.weight"], 7.0)}
    apply_masks(prunable, masks, new)
    w = prunable["2.weight"]
    assert torch.all(w[masks["2.weight"]] == 7.0)
    assert torch.all(w[~masks["2.weight"]] == 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_apply_masks_rejects_non_finite_new_weights(bad):
    model = mlp()
    prunable = prunable_parameters(model, example=torch.zeros(1, 6))
    masks = half_masks(prunable)
    before = prunable["0.weight"].detach().clone()
    value = torch.ones_like(before)
    value[1, 2] = bad
    with pytest.raises(MaskError, match=r"new weights of '0\.weight' contain 1 NaN or infinite entries"):
        apply_masks(prunable, masks, {"0.weight": value})
    assert torch.equal(prunable["0.weight"], before)  # nothing written


def test_apply_masks_rejects_new_weights_of_unknown_or_wrong_shape():
    model = mlp()
    prunable = prunable_parameters(model, example=torch.zeros(1, 6))
    masks = half_masks(prunable)
    with pytest.raises(MaskError, match=r"unknown or non-prunable parameters \['0\.bias'\]"):
        apply_masks(prunable, masks, {"0.bias": torch.zeros(12)})
    with pytest.raises(MaskError, match=r"new weights of '0\.weight' have shape \(6, 12\)"):
        apply_masks(prunable, masks, {"0.weight": torch.zeros(6, 12)})


# --- MaskEnforcer (invariant 3) --------------------------------------------------------------------


def masked_model():
    model = mlp()
    prunable = prunable_parameters(model, example=torch.zeros(1, 6))
    masks = half_masks(prunable)
    apply_masks(prunable, masks, {})
    return model, prunable, masks


def train_steps(model, optimizer, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    ],
    ids=["sgd-momentum-wd", "sgd-nesterov", "adam-wd", "adamw"],
)
def test_enforcer_keeps_masked_weights_exactly_zero(make_optimizer):
    model, prunable, masks = masked_model()
    kept_before = {name: p[masks[name]].detach().clone() for name, p in prunable.items()}
    enforcer = MaskEnforcer(prunable, masks)
    optimizer = make_optimizer(model.parameters())
    enforcer.attach(optimizer)
    train_steps(model, optimizer, steps=6)
    for name, p in prunable.items():
        assert torch.all(p[~masks[name]] == 0), name
        assert torch.all(p.grad[~masks[name]] == 0), name
        assert not torch.equal(p[masks[name]], kept_before[name]), f"{name}: kept weights did not train"
    assert enforcer.steps == 6
    enforcer.check("test")


def test_enforcer_detects_weight_written_after_step():
    """A step post-hook registered after attach writes a masked entry; the next step's check counts it."""
    model, prunable, masks = masked_model()
    enforcer = MaskEnforcer(prunable, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    enforcer.attach(optimizer)
    target = prunable["2.weight"]
    index = tuple(int(i) for i in (~masks["2.weight"]).nonzero()[0])

    def scribble(_opt, _args, _kwargs):
        with torch.no_grad():
            target[index] = 1.0

    optimizer.register_step_post_hook(scribble)
    train_steps(model, optimizer, steps=3)
    # written after steps 1 and 2, seen non-zero after steps 2 and 3
    with pytest.raises(InvariantViolation, match=r"'2\.weight' had 2 masked entries non-zero after optimizer steps"):
        enforcer.check("epoch 1")


def test_enforcer_detects_gradient_in_masked_entries():
    model, prunable, masks = masked_model()
    enforcer = MaskEnforcer(prunable, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    enforcer.attach(optimizer)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(model(x), y).backward()
    index = tuple(int(i) for i in (~masks["0.weight"]).nonzero()[0])
    prunable["0.weight"].grad[index] = 1.0  # something wrote a gradient behind the tensor hook's back
    optimizer.step()
    with pytest.raises(InvariantViolation, match=r"'0\.weight' received non-zero gradient in 1 masked entries"):
        enforcer.check("epoch 1")


def test_enforcer_remove_detaches_gradient_masking():
    """After remove(), nothing masks gradients any more (so the hooks really were what did it)."""
    model, prunable, masks = masked_model()
    enforcer = MaskEnforcer(prunable, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    enforcer.attach(optimizer)
    enforcer.remove()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    assert any(bool((p.grad[~masks[name]] != 0).any()) for name, p in prunable.items())
    optimizer.step()
    assert enforcer.steps == 0


def test_enforcer_counts_non_finite_masked_entries_only_and_accepts_missing_gradients():
    """NaN and inf count as non-zero in masked entries, never in kept ones; a parameter without a gradient is fine."""
    model, prunable, masks = masked_model()
    enforcer = MaskEnforcer(prunable, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step moves nothing
    enforcer.attach(optimizer)
    optimizer.step()  # no backward yet: every gradient is None
    enforcer.check("no gradients")
    kept, removed = masks["2.weight"], ~masks["2.weight"]
    with torch.no_grad():
        prunable["2.weight"][tuple(kept.nonzero()[0].tolist())] = float("nan")
        prunable["2.weight"][tuple(kept.nonzero()[1].tolist())] = float("inf")
    optimizer.step()
    enforcer.check("non-finite kept weights")
    with torch.no_grad():
        prunable["2.weight"][tuple(removed.nonzero()[0].tolist())] = float("nan")
        prunable["2.weight"][tuple(removed.nonzero()[1].tolist())] = float("-inf")
    optimizer.step()
    with pytest.raises(InvariantViolation, match=r"'2\.weight' had 2 masked entries non-zero after optimizer steps \(summed over 3 steps\)"):
        enforcer.check("non-finite masked weights")
