"""Structured masks and what they buy in FLOPs.

A conv filter (or a linear row) whose weights are all zero is a *removed output channel*. Its
output is then a constant (the bias, through batch norm and the activation), which a physically
shrunk model folds into the next layer's bias, so the work the next layer spends on that input
channel goes too. Torch-Pruning and NNI count MACs of the shrunk model the same way. (With zero
padding the constant differs at the borders; theoretical FLOPs ignore that, as those tools do.)

``channel_links`` traces the model with ``torch.fx`` and finds, for each conv and linear layer,
the one conv or linear layer that produces its input through channel-preserving ops only (batch
norm, activations, pooling, dropout, identity, ``flatten(1)``). A layer fed by anything else
(a residual add, a concatenation, a reshape) gets no producer, and no structured saving: that is
conservative, never optimistic. When tracing fails (data-dependent control flow, untraceable
code), the caller falls back to plain density scaling and says so in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import PRUNABLE_MODULES

PASS_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardtanh, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)
PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.hardswish,
    F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.batch_norm,
}
PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True)
class Link:
    """``producer``'s output channel c feeds input columns ``[c * group, (c + 1) * group)`` of the consumer."""

    producer: str
    group: int


def flatten_start(node: "torch.fx.Node", module: nn.Module | None) -> int | None:
    """``start_dim`` of a flatten node (None if the node is no flatten)."""
    if isinstance(module, nn.Flatten):
        return module.start_dim if module.end_dim == -1 else None
    if (node.op == "call_function" and node.target is torch.flatten) or (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start if end == -1 else None
    return None


def channel_links(model: nn.Module) -> dict[str, Link] | None:
    """Consumer module name → :class:`Link` to its producer; None when ``torch.fx`` cannot trace the model."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:
        return None
    modules = dict(model.named_modules())
    links: dict[str, Link] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), PRUNABLE_MODULES) or not node.args:
            continue
        consumer = modules[node.target]
        source, flattened = node.args[0], False
        while isinstance(source, torch.fx.Node):
            module = modules.get(source.target) if source.op == "call_module" else None
            if isinstance(module, PRUNABLE_MODULES):
                break
            start = flatten_start(source, module)
            if start is not None:
                if start != 1:
                    source = None
                    break
                flattened = True
            elif not (
                isinstance(module, PASS_MODULES)
                or (source.op == "call_function" and source.target in PASS_FUNCTIONS)
                or (source.op == "call_method" and source.target in PASS_METHODS)
            ):
                source = None
                break
            source = source.args[0] if source.args else None
        if not isinstance(source, torch.fx.Node):
            continue
        producer = modules[source.target]
        channels = producer.weight.shape[0]
        if isinstance(consumer, nn.Linear):
            if isinstance(producer, nn.Linear) and not flattened and consumer.in_features == channels:
                links[node.target] = Link(source.target, 1)
            elif flattened and consumer.in_features % channels == 0:
                links[node.target] = Link(source.target, consumer.in_features // channels)
        elif consumer.groups == 1 and consumer.in_channels == channels and not flattened:
            links[node.target] = Link(source.target, 1)
    return links


def removed_channels(weight: Tensor) -> Tensor:
    """Bool per output channel (filter, row): True when all its weights are zero."""
    return weight.detach().reshape(weight.shape[0], -1).count_nonzero(dim=1) == 0


def structured_flops(dense: Mapping[str, int], weights: Mapping[str, Tensor], links: Mapping[str, Link]) -> int:
    """FLOPs left when pruned weights do no work *and* removed output channels remove their consumers' input work.

    Each module's FLOPs × the density of its weight after also dropping the input columns its
    producer's removed channels feed. ``dense`` and ``weights`` are keyed by module name.
    """
    total = 0.0
    for name, flops in dense.items():
        weight = weights[name].detach()
        link = links.get(name)
        if link is None:
            nonzero = int(torch.count_nonzero(weight))
        else:
            gone = removed_channels(weights[link.producer]).repeat_interleave(link.group)
            nonzero = int(torch.count_nonzero(weight[:, ~gone]))
        total += flops * nonzero / weight.numel()
    return round(total)


def count_removed_channels(weights: Mapping[str, Tensor]) -> int:
    """Whole output channels removed, over all prunable layers (each weight once)."""
    seen: dict[int, Tensor] = {id(w): w for w in weights.values()}
    return sum(int(removed_channels(w).sum()) for w in seen.values())
