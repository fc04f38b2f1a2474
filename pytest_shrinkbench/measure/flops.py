"""Theoretical FLOPs of a pruned model: each weight's dense FLOPs (from the traced forward pass) scaled by its density."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..prunable import Trace


def sparse_flops(trace: Trace, weights: Mapping[str, Tensor]) -> int:
    """FLOPs left when a pruned weight performs no multiply-add: the work no mask removes (activation×activation
    matmuls, non-prunable weights) plus each prunable weight's FLOPs × its density. ``weights`` is keyed by
    parameter name."""
    total = float(trace.fixed_flops)
    for name in trace.prunable:
        weight = weights[name]
        total += trace.flops.get(name, 0) * int(torch.count_nonzero(weight)) / weight.numel()
    return round(total)
