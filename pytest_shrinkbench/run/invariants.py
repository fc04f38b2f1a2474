"""Invariants 2, 4 and 5 of docs/measuring.md, checked on a pruned model (1 is masks.validate_masks, 3 is masks.MaskEnforcer)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..errors import InvariantViolation


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The architecture as far as the harness relies on it: parameter names and shapes."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def check_architecture(before: Mapping[str, tuple[int, ...]], model: nn.Module, who: str) -> None:
    """A method must prune by masks, not by swapping or reshaping layers."""
    after = shapes(model)
    if after != before:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        reshaped = sorted(n for n in set(before) & set(after) if before[n] != after[n])
        raise InvariantViolation(
            f"{who} changed the architecture (added {added}, removed {removed}, reshaped {reshaped}); "
            "methods must return masks, not edit the model"
        )


def check_untouched(before: Mapping[str, Tensor], model: nn.Module, masks: Mapping[str, Tensor], who: str) -> None:
    """A method may change nothing in place but entries its masks remove: new values must be *returned*,
    so the harness sees them (and batch-norm statistics stay those of the shared base model)."""
    changed = []
    for name, value in model.state_dict().items():
        old = before.get(name)
        if old is None or old.shape != value.shape:
            continue  # new or reshaped entries: the architecture and invariant-5 checks report those
        kept = masks.get(name)
        if not (torch.equal(value[kept], old[kept]) if kept is not None else torch.equal(value, old)):
            changed.append(name)
    if changed:
        raise InvariantViolation(
            f"{who} modified the model in place ({', '.join(changed)}); return masks, and new values for "
            "kept weights, instead"
        )


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
