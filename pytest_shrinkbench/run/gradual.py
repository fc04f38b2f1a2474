"""Gradual methods on the harness's side: Zhu & Gupta's schedule, and fine-tuning that calls the method again on it."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..errors import CaseFailure, InvariantViolation
from ..identity import CaseSpec
from ..sandbox.protocol import MethodInfo
from ..sandbox.runner import MethodCalls
from ..suites.subject import Subject
from ..suites.training import fit
from .invariants import check_pruned
from .masks import MaskEnforcer
from .pruning import check_compression, prune_step


def gradual_schedule(ratio: float, steps: int, total: int) -> tuple[list[float], list[int]]:
    """Targets and timing of a gradual method (Zhu & Gupta 2017's cubic schedule, within the fine-tuning budget).

    Sparsity after call k (1..steps) is ``s_f * (1 - (1 - k/steps)**3)`` with ``s_f = 1 - 1/ratio``:
    most weights go early, the last few gently. Call 1 is before fine-tuning; calls 2..steps follow
    optimizer steps evenly spread (every Δt steps, as Zhu & Gupta prune) over the first half of the
    ``total`` optimizer steps of fine-tuning, so the final masks are fine-tuned for the second half.
    Returns (compressions, 0-based indices of the optimizer steps after which calls 2..steps happen):
    strictly increasing, and each call is followed by at least one optimizer step. Raises CaseFailure
    when there are fewer optimizer steps than calls.
    """
    final = 1 - 1 / ratio
    compressions = [1 / (1 - final * (1 - (1 - k / steps) ** 3)) for k in range(1, steps + 1)]
    compressions[-1] = ratio
    if steps > total:
        raise CaseFailure(f"a method of {steps} steps needs at least {steps} fine-tuning optimizer steps "
                          f"(one per call, the last one after the last call); the suite's recipe has {total}")
    span = max(steps - 1, total // 2)  # the calls happen within the first ``span`` optimizer steps
    return compressions, [-(-k * span // (steps - 1)) - 1 for k in range(1, steps)]


def finetune_gradually(
    info: MethodInfo, calls: MethodCalls, model: nn.Module, prunable: dict[str, nn.Parameter], subject: Subject,
    spec: CaseSpec, masks: dict[str, torch.Tensor], compressions: list[float], prune_after: list[int], total: int,
    check_inputs: torch.Tensor, result: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Fine-tune with the suite's recipe, calling the method again after each optimizer step of ``prune_after``.

    Between mask changes everything a one-shot case guarantees holds (invariant 3 checked every
    epoch). At each change: the previous enforcer's record is checked, the new masks are validated,
    must not revive a pruned weight (unless the method declares ``regrowth``), must hit the step's
    compression, and pass invariants 2, 4 and 5; the optimizer's per-weight state (momentum, Adam
    moments) of newly pruned entries is zeroed, so it cannot move them off zero. Each call ships the
    model's current weights to the method's child (kept for the whole case) and its masks back.
    """
    who = f"method {info.name!r}"
    state = {"masks": masks, "enforcer": MaskEnforcer(prunable, masks), "optimizer": None}
    step_after = {index: step for step, index in enumerate(prune_after, start=1)}  # optimizer step -> ctx.step of the call

    def on_optimizer(optimizer: torch.optim.Optimizer) -> None:
        state["optimizer"] = optimizer
        state["enforcer"].attach(optimizer)

    def on_epoch_end(epoch: int) -> None:
        state["enforcer"].check(f"fine-tuning epoch {epoch + 1}")

    def on_step(index: int) -> None:
        step = step_after.get(index)
        if step is None:
            return
        when = f" (step {step + 1} of {info.steps}, after optimizer step {index + 1} of {total})"
        state["enforcer"].check(f"fine-tuning up to optimizer step {index + 1}, before step {step + 1} of {info.steps}")
        state["enforcer"].remove()
        new = prune_step(calls, prunable, compressions[step], step, model.state_dict(), result)
        if not info.regrowth:
            for name, mask in new.items():
                revived = int((mask & ~state["masks"][name]).sum())
                if revived:
                    raise InvariantViolation(
                        f"{who} revived {revived} pruned entries of {name!r}{when}; declare @method(..., regrowth=True) to allow it"
                    )
        check_compression(model, compressions[step], when, new, prunable, basis=subject.suite.compression_basis)
        check_pruned(model, prunable, new, check_inputs, subject.fresh_model, f"after pruning{when}")  # restores the mode
        with torch.no_grad():
            for name, param in prunable.items():
                for value in state["optimizer"].state.get(param, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        value.mul_(new[name].to(value.dtype))
        state["masks"] = new
        state["enforcer"] = MaskEnforcer(prunable, new)
        state["enforcer"].attach(state["optimizer"])

    start = time.perf_counter()
    try:
        fit(model, subject.data.train, subject.suite.finetune_recipe, seed=spec.seed, device=subject.device,
            on_optimizer=on_optimizer, on_step=on_step, on_epoch_end=on_epoch_end, loss=subject.suite.objective.loss)
    finally:
        state["enforcer"].remove()
    result["finetune_seconds"] = time.perf_counter() - start
    return state["masks"]
