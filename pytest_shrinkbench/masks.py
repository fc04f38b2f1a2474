"""Masks: which parameters are prunable, checking a method's masks, applying and enforcing them."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .errors import InvariantViolation, MaskError

PRUNABLE_MODULES = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_modules(model: nn.Module) -> dict[str, str]:
    """Name of every conv and linear module → the ``named_parameters`` name of its weight.

    A tied weight maps from each module that uses it to its first name.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        module_name: names[id(module.weight)]
        for module_name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and id(module.weight) in names
    }


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every conv and linear layer, keyed by their ``named_parameters`` name.

    The final classifier is included, a documented choice (its weights count towards size and
    FLOPs like any other layer's). Biases and norm parameters are never pruned but always counted.
    A tied weight appears once.
    """
    params = dict(model.named_parameters())
    return {name: params[name] for name in dict.fromkeys(prunable_modules(model).values())}


def validate_masks(masks: object, prunable: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Invariant 1: one boolean mask per prunable parameter, of its shape and on its device."""
    if not isinstance(masks, Mapping):
        raise MaskError(f"masks must be a dict of parameter name -> bool tensor, got {type(masks).__name__}")
    unknown = sorted(set(masks) - set(prunable))
    missing = [name for name in prunable if name not in masks]
    if unknown:
        raise MaskError(f"masks for unknown parameters {unknown}; prunable parameters are {list(prunable)}")
    if missing:
        raise MaskError(f"no mask for prunable parameters {missing}")
    for name, param in prunable.items():
        mask = masks[name]
        if not isinstance(mask, Tensor):
            raise MaskError(f"mask of {name!r} is a {type(mask).__name__}, not a tensor")
        if mask.dtype != torch.bool:
            raise MaskError(f"mask of {name!r} has dtype {mask.dtype}, expected torch.bool (True = keep)")
        if mask.shape != param.shape:
            raise MaskError(f"mask of {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(param.shape)}")
        if mask.device != param.device:
            raise MaskError(f"mask of {name!r} is on {mask.device}, parameter is on {param.device}")
    return {name: masks[name] for name in prunable}


@torch.no_grad()
def apply_masks(prunable: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> None:
    """Write a method's new weight values (if any), then zero every masked entry once."""
    unknown = sorted(set(weights) - set(prunable))
    if unknown:
        raise MaskError(f"new weights for unknown or non-prunable parameters {unknown}")
    for name, value in weights.items():
        param = prunable[name]
        if not isinstance(value, Tensor) or value.shape != param.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise MaskError(f"new weights of {name!r} have shape {shape}, parameter has {tuple(param.shape)}")
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise MaskError(f"new weights of {name!r} contain {bad} NaN or infinite entries")
        param.copy_(value)
    for name, param in prunable.items():
        param.masked_fill_(~masks[name], 0.0)


class MaskEnforcer:
    """Keeps masked weights at zero during fine-tuning, and proves it after every optimizer step.

    Enforcement is one multiply of each gradient (a tensor hook), so a zeroed weight gets no
    update from SGD, momentum, Adam or weight decay: nothing multiplies in the forward pass.
    Verification (invariant 3) runs in optimizer step hooks: before each step the masked
    gradient entries must be zero, after it the masked weights must be. Offending entries are
    counted on the device and read once per epoch, so checking costs no per-step sync.
    """

    def __init__(self, prunable: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        self.prunable = dict(prunable)
        self.removed = {name: ~mask for name, mask in masks.items()}
        self.keep = {name: masks[name].to(param.dtype) for name, param in self.prunable.items()}
        self.bad_grads = {name: torch.zeros((), dtype=torch.long, device=p.device) for name, p in prunable.items()}
        self.bad_weights = {name: torch.zeros((), dtype=torch.long, device=p.device) for name, p in prunable.items()}
        self.steps = 0
        self._handles = [param.register_hook(self.keep[name].mul) for name, param in self.prunable.items()]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self._handles.append(optimizer.register_step_pre_hook(self._before_step))
        self._handles.append(optimizer.register_step_post_hook(self._after_step))

    @torch.no_grad()
    def _before_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for name, param in self.prunable.items():
            if param.grad is not None:
                self.bad_grads[name] += (param.grad != 0).logical_and_(self.removed[name]).sum()

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self.steps += 1
        for name, param in self.prunable.items():
            self.bad_weights[name] += (param != 0).logical_and_(self.removed[name]).sum()

    def check(self, when: str) -> None:
        """Raise if any step so far let a masked entry get a gradient or a value."""
        for name in self.prunable:
            grads, weights = int(self.bad_grads[name]), int(self.bad_weights[name])
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
