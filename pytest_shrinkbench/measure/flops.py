"""Theoretical FLOPs: dense per layer (PyTorch's FlopCounterMode on the meta device), and scaled by weight density."""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def module_flops(model: nn.Module, input_shape: tuple[int, ...], modules: list[str],
                 dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """FLOPs of one forward pass of one example, per named module, counted by PyTorch's FlopCounterMode.

    The count runs on a meta-device copy, so it costs no compute and no memory whatever the
    model. FlopCounterMode counts a multiply-add as two FLOPs. The copy runs in eval mode: a
    training-mode batch norm refuses one example on a 1×1 map (ResNet-18's last stage at 32×32).
    ``dtype`` is the input's (a language model's: token indices).
    """
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter:
        meta(torch.empty((1, *input_shape), dtype=dtype, device="meta"))
    counts = counter.get_flop_counts()
    root = type(model).__name__
    return {name: int(sum(counts.get(f"{root}.{name}", {}).values())) for name in modules}


def sparse_flops(dense: Mapping[str, int], weights: Mapping[str, Tensor]) -> int:
    """FLOPs left when a pruned weight performs no multiply-add: each module's FLOPs × its weight density.

    ``dense`` and ``weights`` are both keyed by module name.
    """
    total = 0.0
    for name, flops in dense.items():
        weight = weights[name]
        total += flops * int(torch.count_nonzero(weight)) / weight.numel()
    return round(total)
