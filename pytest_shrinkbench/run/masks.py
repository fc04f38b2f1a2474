"""Masks on the harness's side: checking what a method returned (invariant 1), applying it, enforcing it (invariant 3)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import InvariantViolation, MaskError
from ..prunable import pattern_covers, pattern_violation


def _plain(value: object, what: str) -> Tensor:
    """``value`` if it is a plain tensor: a subclass could answer the harness's own questions (``sum``,
    ``__bool__``, ``copy_``) with lies, so none is accepted, whatever it claims to be."""
    if not isinstance(value, Tensor):
        raise MaskError(f"{what} is a {type(value).__name__}, not a tensor")
    if type(value) not in (Tensor, nn.Parameter):
        raise MaskError(f"{what} is a {type(value).__name__}, not a plain torch.Tensor")
    return value


def validate_masks(masks: object, prunable: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Invariant 1: one boolean mask per prunable parameter, of its shape and on its device.

    Returns the harness's own copies (plain tensors, in the prunable parameters' order): nothing
    the method handed over is used afterwards."""
    if not isinstance(masks, Mapping):
        raise MaskError(f"masks must be a dict of parameter name -> bool tensor, got {type(masks).__name__}")
    unknown = sorted(set(masks) - set(prunable))
    missing = [name for name in prunable if name not in masks]
    if unknown:
        raise MaskError(f"masks for unknown parameters {unknown}; prunable parameters are {list(prunable)}")
    if missing:
        raise MaskError(f"no mask for prunable parameters {missing}")
    for name, param in prunable.items():
        mask = _plain(masks[name], f"mask of {name!r}")
        if mask.dtype != torch.bool:
            raise MaskError(f"mask of {name!r} has dtype {mask.dtype}, expected torch.bool (True = keep)")
        if mask.shape != param.shape:
            raise MaskError(f"mask of {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(param.shape)}")
        if mask.device != param.device:
            raise MaskError(f"mask of {name!r} is on {mask.device}, parameter is on {param.device}")
    return {name: torch.empty(param.shape, dtype=torch.bool, device=param.device).copy_(masks[name].detach())
            for name, param in prunable.items()}


def validate_pattern(masks: Mapping[str, Tensor], input_dims: Mapping[str, int], pattern: tuple[int, int]) -> list[str]:
    """Invariant 1 for a method that declared an N:M pattern: every covered weight keeps exactly N of every M
    consecutive inputs, every uncovered one (input size not a multiple of M) stays dense. Returns the names
    of the weights the pattern leaves dense; a violation names the weight and its first bad group."""
    dense = []
    for name, mask in masks.items():
        dim = input_dims.get(name, 1)
        problem = pattern_violation(mask, dim, pattern)
        if problem is not None:
            raise MaskError(f"mask of {name!r} breaks the declared {pattern[0]}:{pattern[1]} pattern: {problem}")
        if not pattern_covers(mask.shape, dim, pattern):
            dense.append(name)
    return dense


@torch.no_grad()
def apply_masks(prunable: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> int:
    """Write a method's new weight values (if any), then zero every masked entry once. Returns how many
    kept entries the new values changed: methods that update weights (SparseGPT-style) are allowed, and seen."""
    unknown = sorted(set(weights) - set(prunable))
    if unknown:
        raise MaskError(f"new weights for unknown or non-prunable parameters {unknown}")
    changed = 0
    for name, value in weights.items():
        param = prunable[name]
        if not isinstance(value, Tensor) or value.shape != param.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise MaskError(f"new weights of {name!r} have shape {shape}, parameter has {tuple(param.shape)}")
        value = _plain(value, f"new weights of {name!r}").detach()
        if not value.is_floating_point():
            raise MaskError(f"new weights of {name!r} have dtype {value.dtype}, parameter has {param.dtype}")
        value = value.to(device=param.device, dtype=param.dtype)
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise MaskError(f"new weights of {name!r} contain {bad} NaN or infinite entries")
        changed += int(((value != param) & masks[name]).sum())
        param.copy_(value)
    for name, param in prunable.items():
        param.masked_fill_(~masks[name], 0.0)
    return changed


class MaskEnforcer:
    """Keeps masked weights at zero during fine-tuning, and proves it after every optimizer step.

    Enforcement is one multiply of each gradient by its keep mask, in a tensor hook, so a zeroed
    weight gets no update from SGD, momentum, Adam or weight decay: nothing multiplies in the
    forward pass. The multiply stays per parameter on purpose. Masking all gradients at once in
    the step pre-hook (one ``_foreach_mul_``) would be marginally cheaper, but the gradient half of
    invariant 3 would then only check that multiply, and a method writing gradient into pruned
    entries behind the harness's back (a later tensor hook, a global step pre-hook) would be
    silently cancelled instead of reported. Checked after the harness's own masking, such a write
    is caught and named.

    Verification (invariant 3) runs in optimizer step hooks: before each step every masked
    gradient entry must be zero, after it every masked weight. A check is three ops for the whole
    model, whatever its number of layers (on digits-cnn a quarter of the time a per-parameter loop
    took): cast all the tensors into one flat boolean buffer (non-zero, NaN included, is True),
    keep its masked entries, and add them to a per-entry count of offending steps on the device
    (9 bytes per prunable weight in all). :meth:`check` reads the total once per epoch, so
    checking costs no per-step sync, and only when it is non-zero sums the counts per parameter
    for the message. The buffers live on the first parameter's device (the harness keeps a model
    on one device).
    """

    def __init__(self, prunable: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        self.prunable = dict(prunable)
        self.steps = 0
        params = list(self.prunable.values())
        device = params[0].device if params else torch.device("cpu")
        self._sizes = [p.numel() for p in params]
        self._removed = torch.cat([torch.zeros(0, dtype=torch.bool, device=device)]
                                  + [~masks[name].reshape(-1).to(device) for name in self.prunable])
        self._flags = torch.empty_like(self._removed)
        self._flag_views = [flat.view(p.shape) for flat, p in zip(self._flags.split(self._sizes), params)]
        self._no_grad = torch.zeros((), dtype=torch.bool, device=device)
        # Row 0: steps in which each masked entry had a non-zero gradient; row 1: a non-zero weight.
        self._offences = torch.zeros(2, len(self._removed), dtype=torch.int32, device=device)
        self._handles = [param.register_hook(masks[name].to(param.dtype).mul) for name, param in self.prunable.items()]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self._handles.append(optimizer.register_step_pre_hook(self._before_step))
        self._handles.append(optimizer.register_step_post_hook(self._after_step))

    @torch.no_grad()
    def _tally(self, row: int, tensors: list[Tensor]) -> None:
        torch._foreach_copy_(self._flag_views, tensors)
        self._offences[row].add_(self._flags.logical_and_(self._removed))

    def _before_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self._tally(0, [self._no_grad if p.grad is None else p.grad for p in self.prunable.values()])

    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self.steps += 1
        self._tally(1, list(self.prunable.values()))

    def check(self, when: str) -> None:
        """Raise if any step so far let a masked entry get a gradient or a value."""
        if not int(self._offences.sum()):
            return
        counts = [part.sum(dim=1).tolist() for part in self._offences.split(self._sizes, dim=1)]
        for name, (grads, weights) in zip(self.prunable, counts):
            if grads:
                raise InvariantViolation(
                    f"invariant 3 ({when}): {name!r} received non-zero gradient in {grads} masked entries "
                    f"(summed over {self.steps} optimizer steps)"
                )
            if weights:
                raise InvariantViolation(
                    f"invariant 3 ({when}): {name!r} had {weights} masked entries non-zero after optimizer steps "
                    f"(summed over {self.steps} steps)"
                )

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
