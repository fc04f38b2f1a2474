"""The walk over a model's blocks that calibration-based one-shot methods share (Wanda, SparseGPT).

The model's blocks are its longest ``nn.ModuleList`` of modules holding prunable layers (a transformer's
layers: nanoGPT's and GPT-2's ``h``, LLaMA's ``layers``); a model without one is a single block. The
calibration windows are run up to the first block, then block by block: the inputs of every prunable layer
of a block are gathered (:class:`~.layer.Inputs`), each layer is pruned by the method's rule, and the block
is run again, pruned, to give the next block its inputs, so later layers see what the earlier pruned ones
produce (the papers' sequential order). Prunable layers outside the blocks (a head not excluded) are pruned
last, from one pass of the whole pruned model. The walk works on a copy: the context's model is untouched.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .layer import Inputs, keep_per_row

# (weight as (outputs, inputs), its inputs) -> (mask, new weight or None for the old one, masked)
LayerRule = Callable[[Tensor, Inputs], tuple[Tensor, Tensor | None]]
CHUNK = 16  # calibration windows per forward pass: bounds the activations held at once


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the first block's inputs are captured."""


def keep_fraction(ctx: Any) -> float:
    """The fraction of the prunable weights a method may keep at the context's compression (on its basis)."""
    return ctx.keep_budget() / sum(p.numel() for p in ctx.prunable.values())


def keep_rows(ctx: Any, scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Masks keeping the highest ``scores`` within every output row of each prunable weight (or the context's
    N:M pattern along its inputs), at the context's compression: :func:`~.layer.keep_per_row` on each weight
    seen as (outputs, inputs), whichever way round it is stored."""
    keep, masks = keep_fraction(ctx), {}
    for name, score in scores.items():
        stored_in_out = ctx.input_dims.get(name, 1) == 0  # transformers' Conv1D: (inputs, outputs)
        rows = score.detach().T if stored_in_out else score.detach().flatten(1)
        mask = keep_per_row(rows, keep, ctx.pattern)
        masks[name] = mask.T.contiguous() if stored_in_out else mask.view_as(score)
    return masks


def blocks_of(model: nn.Module, layers: dict[str, nn.Module]) -> list[nn.Module]:
    """The model's repeated blocks in order: the longest ModuleList whose members hold prunable layers."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)
             and all(any(layer is inner for inner in member.modules() for layer in layers.values()) for member in m)]
    return list(max(lists, key=len)) if lists else [model]


def prune_in_order(ctx: Any, rule: LayerRule, hessian: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Masks (and new weights, where ``rule`` returns them) for every prunable weight of ``ctx``, walking the
    model's blocks in order on ``ctx.calibration``. ``hessian``: gather ``XᵀX`` of each layer's inputs too."""
    if ctx.calibration is None:
        raise ValueError("this method needs calibration windows, which only suites declaring them give (ctx.calibration)")
    model = copy.deepcopy(ctx.model).eval()
    params = {id(p): n for n, p in model.named_parameters()}
    names = {module: params[id(m.weight)] for module, m in model.named_modules()
             if isinstance(m._parameters.get("weight"), nn.Parameter) and params[id(m.weight)] in ctx.prunable}
    modules = dict(model.named_modules())
    layers = {name: modules[name] for name in names}
    for name in set(ctx.prunable) - set(names.values()):
        raise ValueError(f"{name} is not the weight of a layer module: this walk prunes layers' weights only")
    for name, layer in layers.items():
        if layer.weight.dim() != 2:
            raise ValueError(f"{name} is a {type(layer).__name__}: this walk prunes linear layers only")
    transposed = {name for name in names if ctx.input_dims.get(names[name], 1) == 0}  # stored (inputs, outputs)
    blocks = blocks_of(model, layers)
    masks: dict[str, Tensor] = {}
    weights: dict[str, Tensor] = {}
    with torch.no_grad():
        calls = [((chunk,), {}) for chunk in ctx.calibration.split(CHUNK)]
        if blocks[0] is not model:
            calls = [_inputs_of(model, blocks[0], args) for args, _ in calls]
        for block in blocks:
            inside = {n: m for n, m in layers.items() if n not in masks and any(m is x for x in block.modules())}
            _prune(inside, names, transposed, block, calls, rule, hessian, masks, weights)
            if block is not blocks[-1]:
                calls = [((_first(block(*args, **kwargs)), *args[1:]), kwargs) for args, kwargs in calls]
        rest = {n: m for n, m in layers.items() if names[n] not in masks}
        if rest:
            _prune(rest, names, transposed, model, [((chunk,), {}) for chunk in ctx.calibration.split(CHUNK)], rule,
                   hessian, masks, weights)
    return masks, weights


def _prune(layers: dict[str, nn.Module], names: dict[str, str], transposed: set[str], runner: nn.Module, calls: list,
           rule: LayerRule, hessian: bool, masks: dict[str, Tensor], weights: dict[str, Tensor]) -> None:
    """Gather the inputs of ``layers`` while ``runner`` runs ``calls``, then prune each layer in place (in the copy).
    A weight in ``transposed`` is stored (inputs, outputs) and handled as its transpose."""
    matrices = {name: layer.weight.detach().T if name in transposed else layer.weight.detach() for name, layer in layers.items()}
    seen = {name: Inputs(matrices[name].shape[1], hessian, layer.weight.device) for name, layer in layers.items()}
    hooks = [layer.register_forward_pre_hook(lambda _m, args, s=seen[name]: s.add(args[0])) for name, layer in layers.items()]
    try:
        for args, kwargs in calls:
            runner(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    for name, layer in layers.items():
        matrix = matrices[name]
        mask, new = rule(matrix, seen[name])
        new = torch.where(mask, matrix if new is None else new.to(matrix.dtype), 0.0)
        layer.weight.copy_(new.T if name in transposed else new)
        masks[names[name]] = mask.T.contiguous() if name in transposed else mask
        weights[names[name]] = layer.weight.detach().clone()


def _inputs_of(model: nn.Module, block: nn.Module, args: tuple) -> tuple[tuple, dict]:
    """The positional and keyword arguments ``block`` is called with when ``model`` runs on ``args``."""
    captured: list[tuple[tuple, dict]] = []

    def stop(_module: nn.Module, block_args: tuple, block_kwargs: dict) -> None:
        captured.append((block_args, block_kwargs))
        raise _Reached

    hook = block.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model(*args)
    except _Reached:
        pass
    finally:
        hook.remove()
    if not captured:
        raise ValueError("the model's first block never ran on the calibration windows")
    return captured[0]


def _first(output: Any) -> Tensor:
    """A block's hidden states, whether it returns them alone or first in a tuple (older transformers blocks)."""
    return output[0] if isinstance(output, (tuple, list)) else output
