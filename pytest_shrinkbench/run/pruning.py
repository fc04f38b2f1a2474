"""One pruning step on the harness's side: call the method, check its masks, apply them, check the compression."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..errors import CaseFailure
from ..prunable import count_parameters
from ..sandbox import methods
from ..sandbox.context import PruneContext
from .invariants import check_architecture, check_untouched
from .masks import apply_masks, validate_masks

# Achieved compression may differ from the requested one by rounding to whole parameters only.
COMPRESSION_TOLERANCE = 0.005


def check_compression(model: nn.Module, target: float, when: str = "", masks: dict[str, torch.Tensor] | None = None,
                       prunable: dict[str, nn.Parameter] | None = None, result: dict[str, Any] | None = None) -> tuple[int, int]:
    """Total and non-zero parameters, failing the case unless they reach ``target``. With ``masks`` (a gradual
    method's intermediate step) the prunable weights count by their masks: a regrown weight is kept though still zero.
    ``result`` gets the model's counts before any failure, so a failed row still says what was achieved."""
    total, nonzero = count_parameters(model)
    if result is not None:
        result.update(params_total=total, params_nonzero=nonzero, compression=total / nonzero if nonzero else None)
    if masks is not None and prunable is not None:
        nonzero += sum(int(masks[n].sum()) - int(torch.count_nonzero(p)) for n, p in prunable.items())
    if nonzero == 0 or abs(total / nonzero / target - 1) > COMPRESSION_TOLERANCE:
        achieved = f"x{total / nonzero:.4g}" if nonzero else "everything pruned"
        raise CaseFailure(
            f"requested compression x{target:g}{when} but the masks achieve {achieved} "
            f"({nonzero} of {total} parameters non-zero; {round(total / target)} expected)"
        )
    return total, nonzero


def prune_step(m: methods.Method, ctx: PruneContext, model: nn.Module, architecture: dict, who: str,
           result: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Call the method (its time added to ``prune_seconds``), check its masks and that it edited nothing
    in place, apply them; return the masks.

    Every call sees the model in training mode (a fresh model is, and fine-tuning is when a gradual
    method is called again), and the mode is restored after it: a method that switches to eval
    mode must not leave the rest of fine-tuning running without dropout or batch statistics.
    """
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    start = time.perf_counter()
    try:
        masks, weights = methods.call(m, ctx)
    finally:
        model.train()
    result["prune_seconds"] = result.get("prune_seconds", 0.0) + time.perf_counter() - start
    check_architecture(architecture, model, who)
    masks = validate_masks(masks, ctx.prunable)
    check_untouched(before, model, masks, who)
    apply_masks(ctx.prunable, masks, weights)
    return masks
