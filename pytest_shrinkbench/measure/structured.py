"""Structured masks and what they buy in FLOPs.

A conv filter (or a linear row) whose weights are all zero is a *removed output channel*. Its
output is then a constant (the bias, through batch norm and the activation), which a physically
shrunk model folds into the next layer's bias, so the work the next layer spends on that input
channel goes too. Torch-Pruning and NNI count MACs of the shrunk model the same way. (With zero
padding the constant differs at the borders; theoretical FLOPs ignore that, as those tools do.)

``channel_links`` traces the model with ``torch.fx`` and finds, for each conv and linear layer,
the one conv or linear layer that produces its input through channel-preserving ops only (batch
norm, activations, pooling, dropout, identity, ``flatten(1)``, depthwise convs). A layer fed by
anything else (a residual add, a concatenation, a reshape) gets no producer, and no structured
saving: that is conservative, never optimistic.

A depthwise conv (``groups == in_channels == out_channels``, as in MobileNetV2's inverted residual)
is both a consumer and a channel-preserving op: its filter c reads only input channel c, so a
removed input channel removes its filter c's work and leaves its output channel c a constant (bias
+ constant × kernel sum, up to zero-padded borders, as above); and a depthwise filter that is all
zero is a removed channel of its own. The layer after it is therefore linked past it to the
producer before it, and loses the union of both's removed channels. When nothing links the
depthwise conv upwards, it is the producer itself (its own all-zero filters still count).

When tracing fails (data-dependent control flow, untraceable code), the caller falls back to
plain density scaling and says so in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..prunable import LAYER_MODULES, Trace, prunable_modules
from .flops import sparse_flops

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
    """``producer``'s output channel c feeds input columns ``[c * group, (c + 1) * group)`` of the consumer.

    ``through`` names the depthwise convs on the way, in data-flow order: channel c is removed for
    the consumer when the producer *or* any of them removed it. A ``depthwise`` consumer has one
    input column per filter: channel c feeds its filter c (its weight's row, not a column).
    """

    producer: str
    group: int
    through: tuple[str, ...] = ()
    depthwise: bool = False


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose output channel c reads input channel c only (one filter per channel, no multiplier)."""
    return (isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd)
            and module.groups == module.in_channels == module.out_channels > 1)


def flatten_start(node: "torch.fx.Node", module: nn.Module | None) -> int | None:
    """``start_dim`` of a flatten node (None if the node is no flatten)."""
    if isinstance(module, nn.Flatten):
        return module.start_dim if module.end_dim == -1 else None
    if (node.op == "call_function" and node.target is torch.flatten) or (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start if end == -1 else None
    return None


def trace(model: nn.Module) -> torch.fx.Graph | None:
    """The model's ``torch.fx`` graph; None when it cannot be traced (data-dependent control flow, untraceable code)."""
    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception:
        return None


def channel_links(model: nn.Module, graph: torch.fx.Graph | None = None) -> dict[str, Link] | None:
    """Consumer module name → :class:`Link` to its producer; None when ``torch.fx`` cannot trace the model.

    ``graph``: the model's graph when the caller has already traced it.
    """
    graph = graph or trace(model)
    if graph is None:
        return None
    modules = dict(model.named_modules())
    links: dict[str, Link] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), LAYER_MODULES) or not node.args:
            continue
        consumer = modules[node.target]
        found = _producer(node.args[0], modules)
        if found is None:
            continue
        producer, through, flattened = found
        channels = modules[producer].weight.shape[0]
        if isinstance(consumer, nn.Linear):
            if isinstance(modules[producer], nn.Linear) and not flattened and consumer.in_features == channels:
                links[node.target] = Link(producer, 1, through)
            elif flattened and consumer.in_features % channels == 0:
                links[node.target] = Link(producer, consumer.in_features // channels, through)
        elif not flattened and consumer.in_channels == channels and (consumer.groups == 1 or is_depthwise(consumer)):
            links[node.target] = Link(producer, 1, through, depthwise=is_depthwise(consumer))
    return links


def _producer(source: object, modules: dict[str, nn.Module]) -> tuple[str, tuple[str, ...], bool] | None:
    """(producer, depthwise convs passed in data-flow order, whether a ``flatten(1)`` was passed) for a layer's input.

    Walks up from ``source`` through channel-preserving ops and depthwise convs to the first other
    conv or linear layer. When the walk breaks above a depthwise conv, the topmost depthwise conv
    reached is the producer (with those below it passed); None when no layer is reached at all.
    """
    through: list[str] = []
    fallback: tuple[str, tuple[str, ...], bool] | None = None
    flattened = False
    while isinstance(source, torch.fx.Node):
        module = modules.get(source.target) if source.op == "call_module" else None
        if isinstance(module, LAYER_MODULES):
            if not is_depthwise(module):
                return source.target, tuple(reversed(through)), flattened
            fallback = (source.target, tuple(reversed(through)), flattened)
            through.append(source.target)
        else:
            start = flatten_start(source, module)
            if start is not None:
                if start != 1 or through:  # a flatten above a depthwise conv: not a layout this walk understands
                    return fallback
                flattened = True
            elif not (
                isinstance(module, PASS_MODULES)
                or (source.op == "call_function" and source.target in PASS_FUNCTIONS)
                or (source.op == "call_method" and source.target in PASS_METHODS)
            ):
                return fallback
        source = source.args[0] if source.args else None
    return fallback


def removed_channels(weight: Tensor) -> Tensor:
    """Bool per output channel (filter, row): True when all its weights are zero."""
    return weight.detach().reshape(weight.shape[0], -1).count_nonzero(dim=1) == 0


def link_removed(link: Link, weights: Mapping[str, Tensor]) -> Tensor:
    """Bool per producer channel: removed for the consumer by the producer or by a depthwise conv on the way."""
    gone = removed_channels(weights[link.producer])
    for depthwise in link.through:
        gone = gone | removed_channels(weights[depthwise])
    return gone


def weight_links(model: nn.Module, links: Mapping[str, Link]) -> dict[str, Link]:
    """:func:`channel_links` keyed by weight parameter names instead of module names (consumer, producer and the
    depthwise convs on the way): FLOPs and masks are per parameter."""
    weight_of = prunable_modules(model)
    return {weight_of[consumer]: Link(weight_of[link.producer], link.group, tuple(weight_of[t] for t in link.through),
                                      link.depthwise)
            for consumer, link in links.items()}


def structured_flops(trace: Trace, weights: Mapping[str, Tensor], links: Mapping[str, Link]) -> int:
    """FLOPs left when pruned weights do no work *and* removed output channels remove their consumers' input work.

    Each prunable weight's FLOPs × its density after also dropping the input columns its producer's
    removed channels feed (for a depthwise conv: its filters reading them), plus the work no mask removes.
    ``weights`` (every parameter) and ``links`` (:func:`weight_links`) are keyed by parameter name.
    """
    total = float(trace.fixed_flops)
    for name in trace.prunable:
        weight = weights[name].detach()
        link = links.get(name)
        if link is None:
            nonzero = int(torch.count_nonzero(weight))
        elif link.depthwise:
            nonzero = int(torch.count_nonzero(weight[~link_removed(link, weights)]))
        else:
            gone = link_removed(link, weights).repeat_interleave(link.group)
            nonzero = int(torch.count_nonzero(weight[:, ~gone]))
        total += trace.flops.get(name, 0) * nonzero / weight.numel()
    return round(total)


def count_removed_channels(weights: Mapping[str, Tensor]) -> int:
    """Whole output channels removed, over all prunable layers (each weight once)."""
    seen: dict[int, Tensor] = {id(w): w for w in weights.values()}
    return sum(int(removed_channels(w).sum()) for w in seen.values())


def pruned_flops(model: nn.Module, trace: Trace, links: Mapping[str, Link] | None) -> dict[str, Any]:
    """A pruned model's FLOPs fields of a row, counted one way wherever they are reported (a case, a user's test).

    ``trace`` is the dense model's (:func:`~pytest_shrinkbench.prunable.trace_model`: FLOPs per parameter),
    ``links`` its :func:`weight_links`, or None when torch.fx could not trace it: then each weight's FLOPs
    are scaled by its density only, and ``flops_accounting`` says so.
    """
    params = dict(model.named_parameters())
    prunable = {name: params[name] for name in trace.prunable}
    if links is None:
        sparse, accounting = sparse_flops(trace, params), "density"
    else:
        sparse, accounting = structured_flops(trace, params, links), "structured"
    return dict(flops_dense=trace.total, flops_sparse=sparse, speedup=trace.total / sparse if sparse else None,
                flops_accounting=accounting, channels_removed=count_removed_channels(prunable))
