"""Calling a method once and packaging what it returned: the same code in a child process and in-process.

The checks made here — that the method changed neither the architecture nor the model in place,
and returned plain tensors — are courtesies for an honest method's author (a clear message where
an edit would otherwise be silently lost); the harness never relies on them, as it never uses the
method's model and checks everything it receives again (:mod:`pytest_shrinkbench.run.masks`).
"""

from __future__ import annotations

import traceback
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import CaseFailure
from ..prunable import parse_pattern
from .context import PruneContext
from .methods import Method
from .protocol import Answer, Setup


def case_context(setup: Setup, model: nn.Module, compression: float, steps: int) -> PruneContext:
    """The context of a case's first call, from what the harness sent (its traced prunable set, the method's pattern)."""
    return PruneContext(model, compression, setup.inputs, setup.targets, seed=setup.seed, steps=steps,
                        prunable_names=setup.prunable, input_dims=setup.input_dims, pattern=parse_pattern(setup.method.pattern),
                        calibration=setup.calibration, basis=setup.basis)


def answer_call(method: Method, ctx: PruneContext, reraise: bool = False) -> Answer:
    """Call the method once and package what it returned (or why it returned nothing usable).

    ``reraise`` (the in-process debugging mode): an exception in the method becomes a CaseFailure that
    carries the method's own traceback, so ``--pdb`` lands in the method's frame.
    """
    who = f"method {method.name!r}"
    model = ctx.model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    architecture = {name: tuple(p.shape) for name, p in model.named_parameters()}
    model.train()
    try:
        out = method.fn(ctx)
    except Exception as exc:  # noqa: BLE001
        message = f"{who} raised {type(exc).__name__}: {exc}"
        if reraise:
            raise CaseFailure(message).with_traceback(exc.__traceback__) from None
        return Answer(error=message, details=traceback.format_exc())
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        masks, weights = out
    elif isinstance(out, Mapping):
        masks, weights = out, {}
    else:
        return Answer(error=f"{who} returned {type(out).__name__}; expected a dict of masks or (masks, new_weights)")
    problem = _architecture_changed(architecture, model, who) or _subclassed(masks, "mask") or _subclassed(weights, "new weights")
    if problem is None:
        problem = _edited_in_place(before, model, masks, who)
    if problem is not None:
        return Answer(error=problem)
    return Answer(masks={str(k): v.detach() if isinstance(v, Tensor) else v for k, v in masks.items()},
                  weights={str(k): v.detach() if isinstance(v, Tensor) else v for k, v in weights.items()})


def _subclassed(values: Mapping[str, Any], what: str) -> str | None:
    for name, value in values.items():
        if isinstance(value, Tensor) and type(value) not in (Tensor, nn.Parameter):
            return f"{what} of {name!r} is a {type(value).__name__}, not a plain torch.Tensor"
    return None


def _architecture_changed(before: dict[str, tuple[int, ...]], model: nn.Module, who: str) -> str | None:
    after = {name: tuple(p.shape) for name, p in model.named_parameters()}
    if after == before:
        return None
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    reshaped = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    return (f"{who} changed the architecture (added {added}, removed {removed}, reshaped {reshaped}); "
            "methods must return masks, not edit the model")


def _edited_in_place(before: Mapping[str, Tensor], model: nn.Module, masks: Mapping[str, Any], who: str) -> str | None:
    """New values must be *returned*: an in-place edit would be lost, as the harness prunes its own model."""
    changed = []
    for name, value in model.state_dict().items():
        old, kept = before.get(name), masks.get(name)
        if old is None or old.shape != value.shape:
            continue
        if isinstance(kept, Tensor) and kept.dtype == torch.bool and kept.shape == value.shape and kept.device == value.device:
            same = torch.equal(value[kept], old[kept])
        else:
            same = torch.equal(value, old)
        if not same:
            changed.append(name)
    if not changed:
        return None
    return f"{who} modified the model in place ({', '.join(changed)}); return masks, and new values for kept weights, instead"
