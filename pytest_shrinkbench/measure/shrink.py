"""Physically shrinking a model whose masks removed whole output channels.

Theoretical FLOPs credit every zero; dense kernels only get faster when a layer actually has
fewer channels. ``shrink`` builds that smaller model, so its real latency can be measured beside
the theoretical speedup (Blalock et al.: the two are not interchangeable).

A producer layer (conv with ``groups == 1``, or linear) loses its removed output channels when
every use of its output reaches, through channel-preserving ops only, consumers that
:func:`~pytest_shrinkbench.measure.structured.channel_links` links to it. Batch norms on the way lose the
same channels, and so do depthwise convs on the way (their filters, bias and ``groups``): a
depthwise filter reading a removed channel only turns one constant into another, which the
consumer after it folds like any other. (A depthwise conv's own all-zero filters, credited by the
structured FLOPs, are not cut: that would cut a live producer channel too.) A removed channel's
output is a constant (its bias, through norm and activation); it is folded into each consumer's
bias, which is exact for linear consumers and for convs that do not zero-pad, and differs only at
the borders of a zero-padded conv or depthwise conv on the way (``Shrunk.exact`` says which).
Anything else (a residual add, a concatenation, a functional batch norm, a layer called twice or
sharing its weight) keeps its channels: the shrunk model is never smaller than the graph allows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..prunable import LAYER_MODULES
from .structured import (
    PASS_FUNCTIONS,
    PASS_METHODS,
    PASS_MODULES,
    Link,
    channel_links,
    flatten_start,
    removed_channels,
    trace,
)

SLICEABLE_NORMS = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Shrunk:
    """The physically smaller model and what was removed from it."""

    model: nn.Module
    channels: int = 0  # producers' output channels physically removed (depthwise convs and norms on the way lose the same)
    exact: bool = True  # the removed channels' constant outputs were folded exactly (see the module docstring)
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # producer → (channels before, after)


@dataclass
class _Plan:
    """Per-module slicing, decided on the unmodified model before anything is cut."""

    out_keep: dict[str, Tensor] = field(default_factory=dict)  # producer → output channels kept
    in_keep: dict[str, Tensor] = field(default_factory=dict)  # consumer → input columns kept
    depthwise: dict[str, Tensor] = field(default_factory=dict)  # depthwise conv on the way → channels kept
    norms: dict[str, Tensor] = field(default_factory=dict)  # batch norm → channels kept
    bias_shift: dict[str, Tensor] = field(default_factory=dict)  # consumer → its cut inputs' constant work


def _is_pass(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A channel-preserving op whose per-channel state (if any) can be sliced."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if flatten_start(node, module) == 1:
        return True
    if module is not None:
        return isinstance(module, PASS_MODULES)
    if node.op == "call_function":
        return node.target in PASS_FUNCTIONS and node.target is not torch.nn.functional.batch_norm
    return node.op == "call_method" and node.target in PASS_METHODS


def _reach(start: torch.fx.Node, producer: str, links: dict[str, Link], modules: dict[str, nn.Module],
           calls: dict[str, int]) -> tuple[list[str], list[str], list[str]] | None:
    """(consumers, batch norms, depthwise convs) reached from ``start``'s output through pass ops and depthwise convs
    linked to ``producer``; None if any use is something else."""
    consumers: list[str] = []
    norms: list[str] = []
    depthwise: list[str] = []
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user.args[:1] != (node,):  # the channels must be the op's first input, not a second operand
                return None
            link = links.get(user.target) if user.op == "call_module" else None
            stateful = link is not None or (user.op == "call_module" and isinstance(modules[user.target], SLICEABLE_NORMS))
            if stateful and calls[user.target] > 1:  # its weights serve other inputs too (a stateless ReLU may be reused)
                return None
            if link is not None and link.producer == producer and link.depthwise:
                depthwise.append(user.target)
                frontier.append(user)
            elif link is not None and link.producer == producer:
                consumers.append(user.target)
            elif _is_pass(user, modules):
                if user.op == "call_module" and isinstance(modules[user.target], SLICEABLE_NORMS):
                    norms.append(user.target)
                frontier.append(user)
            else:
                return None
    return (consumers, norms, depthwise) if consumers else None


def _module_calls(graph: torch.fx.Graph, modules: dict[str, nn.Module]) -> dict[str, int]:
    """How often each module runs; a layer sharing its weight with another counts as running twice (it cannot be cut alone)."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    owners: dict[int, int] = {}
    for module in modules.values():
        if isinstance(module, LAYER_MODULES):
            owners[id(module.weight)] = owners.get(id(module.weight), 0) + 1
    for name, module in modules.items():
        if isinstance(module, LAYER_MODULES) and owners[id(module.weight)] > 1:
            calls[name] = 2
    return calls


def _pads_with_zeros(conv: nn.Module) -> bool:
    """Whether a conv sees zeros past its borders (where a folded constant input would have been)."""
    padding = conv.padding if isinstance(conv.padding, (tuple, str)) else (conv.padding,)
    padded = padding != "valid" if isinstance(padding, str) else any(p != 0 for p in padding)
    return padded and conv.padding_mode == "zeros"


@torch.no_grad()
def _plan(model: nn.Module, inputs: Tensor) -> tuple[_Plan, bool]:
    """Decide what to cut, and the constants the cut channels feed each consumer (read on ``inputs``)."""
    plan, exact = _Plan(), True
    graph = trace(model)
    if graph is None:
        return plan, exact
    links = channel_links(model, graph) or {}
    modules = dict(model.named_modules())
    calls = _module_calls(graph, modules)
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] > 1 or not isinstance(modules[node.target], LAYER_MODULES):
            continue
        if getattr(modules[node.target], "groups", 1) != 1:
            continue
        gone = removed_channels(modules[node.target].weight)
        if not gone.any() or gone.all():
            continue
        reached = _reach(node, node.target, links, modules, calls)
        if reached is None:
            continue
        consumers, norms, depthwise = reached
        plan.out_keep[node.target] = ~gone
        for norm in norms:
            plan.norms[norm] = ~gone
        for conv in depthwise:
            plan.depthwise[conv] = ~gone
        for consumer in consumers:
            plan.in_keep[consumer] = (~gone).repeat_interleave(links[consumer].group)

    captured: dict[str, Tensor] = {}
    handles = [
        modules[name].register_forward_pre_hook(lambda module, args, name=name: captured.__setitem__(name, args[0]))
        for name in plan.in_keep
    ]
    was_training = model.training
    try:
        model.eval()
        model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for name, keep in plan.in_keep.items():
        consumer, x, cut_columns = modules[name], captured[name], ~keep
        if isinstance(consumer, nn.Linear):  # features on the last dimension
            cut = x[..., cut_columns].reshape(-1, int(cut_columns.sum()))
            constant = cut[0]
            weight = consumer.weight[:, cut_columns]
        else:  # one constant per channel, read at the centre (away from any padding effect upstream)
            channels = x[:, cut_columns]
            constant = channels[(0, slice(None), *(size // 2 for size in channels.shape[2:]))]
            cut = channels.transpose(0, 1).reshape(len(constant), -1).T
            weight = consumer.weight[:, cut_columns].flatten(2).sum(dim=2)
            exact &= not (_pads_with_zeros(consumer) and constant.any())
        exact &= bool((cut == constant).all())
        plan.bias_shift[name] = weight @ constant
    return plan, exact


def _replace(module: nn.Module, name: str, value: Tensor | None) -> None:
    if value is not None:
        setattr(module, name, nn.Parameter(value.clone(), requires_grad=False))


@torch.no_grad()
def shrink(model: nn.Module, inputs: Tensor) -> Shrunk:
    """A physically smaller copy of ``model`` without the removed output channels the graph lets go.

    ``inputs`` (a batch the model accepts) is used once, to read the constants removed channels
    feed their consumers. An untraceable model comes back as an unshrunk copy.
    """
    model = copy.deepcopy(model)
    plan, exact = _plan(model, inputs)
    modules = dict(model.named_modules())
    for name, shift in plan.bias_shift.items():
        consumer = modules[name]
        _replace(consumer, "bias", shift if consumer.bias is None else consumer.bias + shift)
    for name, keep in plan.out_keep.items():
        producer = modules[name]
        _replace(producer, "weight", producer.weight[keep])
        _replace(producer, "bias", producer.bias[keep] if producer.bias is not None else None)
        setattr(producer, "out_features" if isinstance(producer, nn.Linear) else "out_channels", int(keep.sum()))
    for name, keep in plan.in_keep.items():
        consumer = modules[name]
        _replace(consumer, "weight", consumer.weight[:, keep])
        setattr(consumer, "in_features" if isinstance(consumer, nn.Linear) else "in_channels", int(keep.sum()))
    for name, keep in plan.depthwise.items():
        conv = modules[name]
        _replace(conv, "weight", conv.weight[keep])
        _replace(conv, "bias", conv.bias[keep] if conv.bias is not None else None)
        conv.in_channels = conv.out_channels = conv.groups = int(keep.sum())
    for name, keep in plan.norms.items():
        norm = modules[name]
        norm.num_features = int(keep.sum())
        _replace(norm, "weight", norm.weight[keep] if norm.weight is not None else None)
        _replace(norm, "bias", norm.bias[keep] if norm.bias is not None else None)
        for buffer in ("running_mean", "running_var"):
            if getattr(norm, buffer, None) is not None:
                setattr(norm, buffer, getattr(norm, buffer)[keep].clone())
    layers = {name: (keep.numel(), int(keep.sum())) for name, keep in plan.out_keep.items()}
    return Shrunk(model.eval(), sum(before - after for before, after in layers.values()), exact, layers)
