"""Invariants 2, 4 and 5 of docs/measuring.md, checked on the harness's pruned model (1 is masks.validate_masks, 3 is
masks.MaskEnforcer).

No method code ever touches this model: the checks now guard the harness itself and unusual user
models (tied weights, buffers, hooks of their own) rather than a method's tricks."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..errors import InvariantViolation

_MODULE_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def check_no_hooks(model: nn.Module, when: str) -> None:
    """Once the harness has detached its own hooks, none may remain: a hook a method left behind can
    train kept weights or change outputs in ways no mask check sees."""
    found = [
        f"{name or type(model).__name__}.{kind}"
        for name, module in model.named_modules()
        for kind in _MODULE_HOOKS
        if getattr(module, kind, None)
    ] + [f"{name}.{kind}" for name, p in model.named_parameters() for kind in _TENSOR_HOOKS if getattr(p, kind, None)]
    if found:
        raise InvariantViolation(f"{when}: the model still carries hooks ({', '.join(found)}); a method must not leave hooks behind")


@torch.no_grad()
def check_pruned(
    model: nn.Module,
    prunable: Mapping[str, nn.Parameter],
    masks: Mapping[str, Tensor],
    inputs: Tensor,
    fresh_model: Callable[[], nn.Module],
    when: str,
) -> None:
    """Invariants 2, 4 and 5 on ``model`` as it stands ``when`` (e.g. "after pruning")."""
    was_training = model.training
    model.eval()
    try:
        _masked_are_zero(prunable, masks, when)
        logits = model(inputs)
        _masked_are_unused(model, prunable, masks, inputs, logits, when)
        _self_contained(model, fresh_model, inputs, logits, when)
        _masked_are_zero(prunable, masks, f"{when}, after forward passes")
    finally:
        model.train(was_training)


def _masked_are_zero(prunable: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor], when: str) -> None:
    """Invariant 2: every masked entry is exactly zero, so non-zero counts never exceed the mask's."""
    for name, param in prunable.items():
        offending = int(((param != 0) & ~masks[name]).sum())
        if offending:
            raise InvariantViolation(f"invariant 2 ({when}): {name!r} has {offending} masked entries that are not zero")


def _masked_are_unused(
    model: nn.Module,
    prunable: Mapping[str, nn.Parameter],
    masks: Mapping[str, Tensor],
    inputs: Tensor,
    logits: Tensor,
    when: str,
) -> None:
    """Invariant 4: scribbling on masked entries and re-applying the masks leaves the logits bit-identical."""
    noise = torch.Generator(device=inputs.device).manual_seed(0)
    for name, param in prunable.items():
        removed = ~masks[name]
        scribble = torch.randn(param.shape, generator=noise, device=param.device, dtype=param.dtype)
        param.copy_(torch.where(removed, scribble, param))
        param.masked_fill_(removed, 0.0)
    again = model(inputs)
    if not torch.equal(logits, again):
        raise InvariantViolation(
            f"invariant 4 ({when}): giving masked weights arbitrary values and re-applying the masks changed "
            f"{int((logits != again).sum())} of {logits.numel()} logits; the model reads masked weights from somewhere"
        )


def _self_contained(model: nn.Module, fresh_model: Callable[[], nn.Module], inputs: Tensor, logits: Tensor, when: str) -> None:
    """Invariant 5: the state_dict alone, in a fresh model, reproduces the logits (no hidden hooks or copies)."""
    fresh = fresh_model()
    result = fresh.load_state_dict(model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InvariantViolation(
            f"invariant 5 ({when}): the pruned model's state_dict does not fit a fresh model "
            f"(missing {result.missing_keys}, unexpected {result.unexpected_keys})"
        )
    fresh.eval()
    again = fresh(inputs)
    if not torch.equal(logits, again):
        raise InvariantViolation(
            f"invariant 5 ({when}): a fresh model loaded with the pruned state_dict gives different logits "
            f"({int((logits != again).sum())} of {logits.numel()} differ); the pruned model depends on hooks or "
            "state outside its state_dict"
        )
