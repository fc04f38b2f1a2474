"""What can be pruned and how size is counted: the two definitions both sides of the trust boundary share.

A method's context (keep_top, keep_budget) and the harness's compression check must agree exactly
on which parameters are prunable and on what "non-zero parameters of the whole model" means.
"""

from __future__ import annotations

import torch
from torch import nn

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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Total and non-zero parameters of the whole model (biases and norms included; tied counted once)."""
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int(torch.count_nonzero(param))
    return total, nonzero
