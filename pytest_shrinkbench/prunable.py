"""What can be pruned and how size and work are counted: the definitions both sides of the trust boundary share.

A method's context (keep_top, keep_budget) and the harness's compression check must agree exactly
on which parameters are prunable and on what "non-zero parameters of the whole model" means.

Prunable is decided by what the model *does*, not by its module types: one forward pass of one
example is traced at the dispatch level (on the meta device: no compute, no memory), and every
parameter consumed as the weight operand of a matmul or a convolution — directly, or through a view,
slice, transpose or copy of it — is prunable. So attention's packed ``in_proj_weight`` (sliced into
q, k and v), a weight used through ``F.linear`` or ``@``, and transformers' ``Conv1D`` count like a
``nn.Linear``. The same pass attributes every matmul's and convolution's FLOPs (counted by
``torch.utils.flop_counter``'s formulas, so totals equal ``FlopCounterMode``'s) to the parameter
supplying its weight operand; matmuls of two activations (attention's QKᵀ and AV) are counted,
attributed to nobody: dense work that no mask removes.

Embedding tables are lookups, not FLOPs: never prunable unless a suite opts them in (a table tied to
an output projection is still an embedding). Biases and norms are never pruned, always counted.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten
# (operand positions of the two matrices) per matmul; the FLOPs formulas come from torch.utils.flop_counter.
_MATMULS = {aten.mm: (0, 1), aten.addmm: (1, 2), aten.bmm: (0, 1), aten.baddbmm: (1, 2)}
_CONVS = {aten.convolution, aten._convolution, aten.cudnn_convolution, aten._slow_conv2d_forward,
          aten.convolution_overrideable}
_EMBEDDINGS = {aten.embedding, aten._embedding_bag, aten.embedding_bag, aten._embedding_bag_forward_only}
# Ops whose output holds the same values as their input: a weight passed through them is still that weight.
_COPIES = {aten.clone, aten._to_copy, aten.detach, aten.alias, aten.lift_fresh, aten._unsafe_view, aten.lift_fresh_copy}
_TRANSPOSES = {aten.t, aten.transpose, aten.permute, aten.numpy_T}
# Shape queries: answered directly, never decomposed (as FlopCounterMode does).
# Layers as modules: what structured accounting and physical shrinking follow (conv and linear modules).
LAYER_MODULES = (nn.Linear, nn.modules.conv._ConvNd)
_QUERIES = {aten.sym_size, aten.size, aten.stride, aten.sym_stride, aten.storage_offset, aten.sym_storage_offset,
            aten.numel, aten.sym_numel, aten.dim, aten.is_contiguous, aten.sym_is_contiguous,
            aten.is_strides_like_format, aten.is_non_overlapping_and_dense}


@dataclass(frozen=True)
class Trace:
    """What one traced forward pass says about a model.

    ``prunable``: parameter names (``named_parameters`` order), the weight operands of matmuls and convs,
    less exclusions and embeddings. ``flops``: FLOPs of one example's forward pass per parameter that
    supplied a weight operand (prunable or not: an excluded ``lm_head`` does work too). ``total``: all
    FLOPs of the pass, attributed or not. ``input_dim``: per prunable weight, the dimension its matmul
    contracts (the weight's *input* dimension: 1 for ``nn.Linear`` and convs, 0 for a ``Conv1D`` used as
    ``x @ W``), along which N:M groups run. ``embeddings``: parameters used as lookup tables.
    """

    prunable: tuple[str, ...]
    flops: dict[str, int]
    total: int
    input_dim: dict[str, int] = field(default_factory=dict)
    embeddings: tuple[str, ...] = ()

    @property
    def fixed_flops(self) -> int:
        """FLOPs no mask can remove: activation×activation matmuls and the work of non-prunable weights."""
        return self.total - sum(self.flops.get(name, 0) for name in self.prunable)


def trace_model(model: nn.Module, example: Tensor, *, exclude: Sequence[str] = (), embeddings: bool = False) -> Trace:
    """Trace one forward pass of ``example`` (one input, with its batch dimension) through ``model``.

    The model itself is untouched: its parameters and buffers are swapped for meta tensors of the same
    shapes in a functional call, in eval mode, with PyTorch's fused attention fast path switched off (it
    hides every weight of a layer in one op that counts as 0 FLOPs). A model that cannot run on the meta
    device is traced on its own device with a zero input of the same shape instead. ``exclude``: name
    patterns (fnmatch, any of a tied parameter's names) never prunable; ``embeddings``: embedding tables
    are prunable too.
    """
    params = dict(model.named_parameters())
    names_of: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    excluded = {name for name, param in params.items() if any(fnmatch.fnmatchcase(n, pattern)
                                                              for n in names_of[id(param)] for pattern in exclude)}
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        try:
            tracer = _run(model, example, "meta")
        except Exception:  # noqa: BLE001  (an op without a meta kernel, a device mixed in by the model: trace for real)
            tracer = _run(model, example, None)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    lookups = [name for name in params if name in tracer.embeddings]
    weights = [name for name in params if name in tracer.weights and name not in tracer.embeddings]
    prunable = [name for name in params if name not in excluded and (name in weights or (embeddings and name in lookups))]
    return Trace(tuple(prunable), {n: tracer.flops[n] for n in params if n in tracer.flops}, tracer.total,
                 {n: tracer.weights.get(n, 1) for n in prunable}, tuple(lookups))


def _run(model: nn.Module, example: Tensor, device: str | None) -> "_Tracer":
    """One traced forward pass; ``device`` "meta": on meta copies of the state, None: on the model's own tensors."""
    if device == "meta":
        state = {name: torch.empty_like(t, device="meta") for name, t in model.named_parameters()}
        state.update({name: torch.empty_like(t, device="meta") for name, t in model.named_buffers()})
        example = torch.zeros_like(example, device="meta")
    else:
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        device = next(iter(state.values())).device if state else torch.device("cpu")
        example = torch.zeros(example.shape, dtype=example.dtype, device=device)
    tracer = _Tracer({id(state[name]): name for name, _ in model.named_parameters()})
    with torch.no_grad(), tracer:
        functional_call(model, state, (example,))
    return tracer


class _Tracer(TorchDispatchMode):
    """Follows each parameter through views and copies, and records who feeds which matmul or conv with what work."""

    def __init__(self, params: dict[int, str]) -> None:
        super().__init__()
        # id of a tensor → (parameter name, whether its two dims are swapped relative to the parameter; None: unknown)
        self.derived: dict[int, tuple[str, bool | None]] = {pid: (name, False) for pid, name in params.items()}
        self.alive: list[Tensor] = []  # keeps derived tensors alive, so their ids are never reused
        self.flops: dict[str, int] = {}
        self.weights: dict[str, int] = {}  # weight operand → its input (contracted) dimension
        self.embeddings: set[str] = set()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet in _QUERIES:
            return func(*args, **kwargs)
        if packet not in flop_registry:
            decomposed = func.decompose(*args, **kwargs)  # count what composite ops are made of, as FlopCounterMode does
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        self._follow(func, packet, args, out)
        if packet in flop_registry:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            self.total += flops
            self._attribute(packet, args, flops)
        elif packet in _EMBEDDINGS and args and id(args[0]) in self.derived:
            self.embeddings.add(self.derived[id(args[0])][0])
        return out

    def _follow(self, func, packet, args, out) -> None:  # noqa: ANN001
        """A view or copy of a parameter is that parameter (a transpose swaps which of its dims is the input)."""
        if not args or not isinstance(args[0], Tensor) or id(args[0]) not in self.derived:
            return
        if not (func.is_view or packet in _COPIES):
            return
        name, swapped = self.derived[id(args[0])]
        outs = out if isinstance(out, (list, tuple)) else [out]
        for tensor in outs:
            if not isinstance(tensor, Tensor):
                continue
            if packet in _TRANSPOSES:
                turned = tensor.dim() == 2 and args[0].dim() == 2
                now = (not swapped if swapped is not None else None) if turned else None
            else:
                now = swapped if tensor.dim() == args[0].dim() else None
            self.derived[id(tensor)] = (name, now)
            self.alive.append(tensor)

    def _attribute(self, packet, args, flops: int) -> None:  # noqa: ANN001
        if packet in _CONVS:
            operands = [(args[1], 1)] if len(args) > 1 else []
        elif packet in _MATMULS:
            left, right = _MATMULS[packet]
            # x @ W contracts W's first dim (its input when not swapped); W @ x contracts its last.
            operands = [(args[right], 0), (args[left], 1)]
        else:
            return
        for tensor, contracted in operands:
            found = self.derived.get(id(tensor)) if isinstance(tensor, Tensor) else None
            if found is None:
                continue
            name, swapped = found
            self.flops[name] = self.flops.get(name, 0) + flops
            if name not in self.weights:
                dim = 1 if packet in _CONVS or swapped is None or tensor.dim() != 2 else (contracted if not swapped else 1 - contracted)
                self.weights[name] = dim
            return


def prunable_parameters(model: nn.Module, names: Iterable[str] | None = None, example: Tensor | None = None) -> dict[str, nn.Parameter]:
    """The prunable weights of ``model`` keyed by their ``named_parameters`` name (a tied weight appears once).

    ``names``: the prunable set already traced for this architecture (a subject's, handed to a method's
    child); else it is traced now with ``example`` (one input with its batch dimension).
    """
    params = dict(model.named_parameters())
    if names is None:
        if example is None:
            raise ValueError("prunable_parameters needs the traced names or an example input to trace")
        names = trace_model(model, example).prunable
    names = list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameters {missing}: it is not the architecture these names were traced on")
    return {name: params[name] for name in names}


def prunable_modules(model: nn.Module) -> dict[str, str]:
    """Name of every conv and linear *module* → the ``named_parameters`` name of its weight.

    Used where layers are followed as modules (structured accounting's channel links, physical
    shrinking); what is prunable is :func:`trace_model`'s answer, which includes these and more.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        module_name: names[id(module.weight)]
        for module_name, module in model.named_modules()
        if isinstance(module, LAYER_MODULES)
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and id(module.weight) in names
    }


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Total and non-zero parameters of the whole model (biases and norms included; tied counted once)."""
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int(torch.count_nonzero(param))
    return total, nonzero


def example_input(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """One input of ``shape`` (no batch dimension) with a batch dimension of 1, on the meta device: what a trace needs."""
    return torch.empty((1, *shape), dtype=dtype, device="meta")


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"2:4"`` → ``(2, 4)``: N kept of every M consecutive weights along a weight's input dimension."""
    if pattern is None:
        return None
    try:
        n, m = (int(part) for part in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"pattern {pattern!r} is not N:M (for example 2:4)") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r}: N:M needs 0 < N < M")
    return n, m


def pattern_ratio(pattern: tuple[int, int]) -> float:
    """The compression of the layers an N:M pattern covers: M / N (x2 for 2:4)."""
    return pattern[1] / pattern[0]


def input_rows(tensor: Tensor, input_dim: int) -> Tensor:
    """``tensor`` (a weight or its mask) as rows of its inputs: (outputs, inputs), the input dimension last and
    a conv's inputs flattened (in × kh × kw), so that N:M groups are consecutive entries of a row."""
    if tensor.dim() == 2 and input_dim == 0:
        return tensor.t()
    return tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.reshape(1, -1)


def pattern_covers(shape: Sequence[int], input_dim: int, pattern: tuple[int, int]) -> bool:
    """Whether an N:M pattern applies to a weight of ``shape``: its input size is a multiple of M.
    (Sparse kernels need whole groups; a weight that has none is left dense by the rule of docs/measuring.md.)"""
    if len(shape) == 2:
        inputs = shape[input_dim]
    else:
        inputs = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return inputs % pattern[1] == 0


def pattern_violation(mask: Tensor, input_dim: int, pattern: tuple[int, int]) -> str | None:
    """Where ``mask`` breaks its N:M pattern (the first bad group: its row, columns and kept count), or None.
    An uncovered weight (input size not a multiple of M) must stay dense."""
    n, m = pattern
    if not pattern_covers(mask.shape, input_dim, pattern):
        dropped = int((~mask).sum())
        return None if dropped == 0 else (f"its input size is not a multiple of {m}, so the {n}:{m} pattern leaves it dense, "
                                          f"but {dropped} of its weights are masked")
    rows = input_rows(mask, input_dim)
    kept = rows.reshape(rows.shape[0], -1, m).sum(dim=2)
    bad = (kept != n).nonzero()
    if len(bad) == 0:
        return None
    row, group = (int(i) for i in bad[0])
    return (f"group {group} of input row {row} (inputs {group * m}..{group * m + m - 1}) keeps {int(kept[row, group])} of {m}, "
            f"the {n}:{m} pattern keeps {n}; {len(bad)} bad group(s) in all")


def keep_n_of_m(rows: Tensor, pattern: tuple[int, int]) -> Tensor:
    """The mask keeping the ``n`` highest scores of every ``m`` consecutive entries of each row of ``rows``
    (outputs × inputs); all of it when the inputs are not a multiple of ``m`` (left dense)."""
    n, m = pattern
    if rows.shape[1] % m:
        return torch.ones_like(rows, dtype=torch.bool)
    groups = rows.reshape(rows.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    return keep.scatter_(2, groups.topk(n, dim=2).indices, True).reshape(rows.shape)


def keep_pattern(scores: Mapping[str, Tensor], input_dims: Mapping[str, int], pattern: tuple[int, int]) -> dict[str, Tensor]:
    """Masks keeping the ``n`` highest scores of every ``m`` consecutive inputs, on every covered weight (uncovered: dense)."""
    masks = {}
    for name, score in scores.items():
        dim = input_dims.get(name, 1)
        keep = keep_n_of_m(input_rows(score.detach(), dim), pattern)
        masks[name] = (keep.t() if score.dim() == 2 and dim == 0 else keep).reshape(score.shape).contiguous()
    return masks
