"""One pruning step on the harness's side: call the method, check its masks, apply them, check the compression."""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CaseFailure
from ..prunable import count_parameters, parse_pattern, pattern_ratio
from ..sandbox.protocol import MethodInfo
from ..sandbox.runner import MethodCalls
from ..suites.subject import Subject
from .masks import apply_masks, validate_masks, validate_pattern

# Achieved compression may differ from the requested one by rounding to whole parameters only.
COMPRESSION_TOLERANCE = 0.005


def not_run(ratio: float, subject: Subject, method: MethodInfo) -> str | None:
    """Why a case is skipped rather than run, or None: a method needing calibration runs only on suites that
    declare it, a pattern method only at the ratio its pattern implies, and on the ``model`` basis a ratio the
    non-prunable parameters alone exceed cannot be reached by any method (on the ``prunable`` basis every ratio can)."""
    if method.calibrated and subject.suite.calibration is None:
        return f"method {method.name} needs calibration windows, which suite {subject.suite.name} does not declare"
    pattern = parse_pattern(method.pattern)
    if pattern is not None:
        implied = pattern_ratio(pattern)
        if ratio != implied:
            return (f"its {pattern[0]}:{pattern[1]} pattern implies x{implied:g} on the layers it covers, "
                    f"so it runs only at ratio {implied:g}, not x{ratio:g}")
        return None
    if subject.suite.compression_basis == "model" and round(subject.params_total / ratio) < subject.fixed_nonzero:
        return (f"x{ratio:g} is unreachable on suite {subject.suite.name}: its {subject.fixed_nonzero} non-prunable "
                f"non-zero parameters alone exceed {subject.params_total} / {ratio:g}")
    return None


def record_size(model: nn.Module, result: dict[str, Any]) -> tuple[int, int]:
    """The model's total and non-zero parameters, and its whole-model compression, into ``result``."""
    total, nonzero = count_parameters(model)
    result.update(params_total=total, params_nonzero=nonzero, compression=total / nonzero if nonzero else None)
    return total, nonzero


def record_prunable_size(prunable: Mapping[str, nn.Parameter], result: dict[str, Any], basis: str) -> tuple[int, int]:
    """The prunable weights' total and non-zero counts, their compression and the suite's basis, into ``result``."""
    total = sum(p.numel() for p in prunable.values())
    nonzero = sum(int(torch.count_nonzero(p)) for p in prunable.values())
    result.update(compression_prunable=total / nonzero if nonzero else None, compression_basis=basis)
    return total, nonzero


def check_compression(model: nn.Module, target: float, when: str, masks: dict[str, torch.Tensor] | None,
                      prunable: Mapping[str, nn.Parameter], result: dict[str, Any] | None = None,
                      basis: str = "model") -> tuple[int, int]:
    """Total and non-zero parameters on ``basis`` (``model``: all parameters; ``prunable``: the ``prunable``
    weights), failing the case unless they reach ``target``. With ``masks``
    (a gradual method's intermediate step) the prunable weights count by their masks: a regrown weight is kept
    though still zero. ``result`` gets the model's counts on both bases before any failure, so a failed row
    still says what was achieved."""
    total, nonzero = record_size(model, result if result is not None else {})
    prunable_total, prunable_nonzero = record_prunable_size(prunable, result if result is not None else {}, basis)
    if masks is not None:
        regrown = sum(int(masks[n].sum()) - int(torch.count_nonzero(p)) for n, p in prunable.items())
        nonzero, prunable_nonzero = nonzero + regrown, prunable_nonzero + regrown
    if basis == "prunable":
        total, nonzero, what = prunable_total, prunable_nonzero, "prunable weights"
    else:
        what = "parameters"
    if nonzero == 0 or abs(total / nonzero / target - 1) > COMPRESSION_TOLERANCE:
        achieved = f"x{total / nonzero:.4g}" if nonzero else "everything pruned"
        raise CaseFailure(
            f"requested compression x{target:g}{when} but the masks achieve {achieved} "
            f"({nonzero} of {total} {what} non-zero; {round(total / target)} expected)"
        )
    return total, nonzero


def prune_step(calls: MethodCalls, prunable: dict[str, nn.Parameter], compression: float, step: int,
               state: dict[str, torch.Tensor] | None, result: dict[str, Any], pattern: tuple[int, int] | None = None,
               input_dims: Mapping[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Call the method across the boundary (its time, child process included, added to ``prune_seconds``),
    check what came back, and apply it to the harness's own model; return the harness's copy of the masks.

    ``state`` is what the method sees of the model at this call (None: the base weights it started from).
    ``pattern``: the method's declared N:M pattern, checked on every mask along ``input_dims``; the weights it
    leaves dense are recorded in ``result``.
    """
    start = time.perf_counter()
    answer = calls.call(compression, step, state)
    result["prune_seconds"] = result.get("prune_seconds", 0.0) + time.perf_counter() - start
    if answer.error is not None:
        raise CaseFailure(answer.error)
    masks = validate_masks(answer.masks, prunable)
    if pattern is not None:
        result["pattern_dense"] = validate_pattern(masks, input_dims or {}, pattern)
    changed = apply_masks(prunable, masks, answer.weights)
    result["weights_changed"] = result.get("weights_changed", 0) + changed
    return masks
