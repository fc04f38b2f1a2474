"""The pruning context: what a method is given, and the helpers that make a method a few lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..prunable import count_parameters, keep_pattern, prunable_parameters, trace_model


@dataclass
class PruneContext:
    """What a method sees: the model, the requested compression, a batch of training data and, on suites that
    pin them (language models), calibration batches.

    ``compression`` is on the suite's ``basis``: ``model`` (total parameters ÷ non-zero parameters of the whole
    model, biases and norms included, as in ShrinkBench) or ``prunable`` (prunable weights ÷ the non-zero ones,
    as language-model papers count: x2 is 50% of the pruned linears); :meth:`keep_top` turns any per-weight
    scores into masks that hit it exactly. ``calibration`` is the suite's pinned calibration windows (token
    indices, ``count × length``), drawn from the training split with the case's seed; None on other suites.
    ``prunable`` is every weight that feeds a matmul or a conv (the harness traces the model once and hands
    the names over; a context made without them traces the model on its batch). ``pattern`` is the method's
    declared N:M pattern, ``(n, m)`` or None.
    """

    model: nn.Module
    compression: float
    inputs: Tensor
    targets: Tensor
    seed: int = 0
    step: int = 0  # which call of a gradual method this is (0 .. steps - 1); one-shot methods: 0 of 1
    steps: int = 1
    prunable_names: Sequence[str] | None = None  # the harness's traced prunable set (None: trace the model here)
    input_dims: Mapping[str, int] | None = None  # each prunable weight's input dimension (N:M groups run along it)
    pattern: tuple[int, int] | None = None
    calibration: Tensor | None = None
    basis: str = "model"
    prunable: dict[str, nn.Parameter] = field(init=False)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.prunable_names is None:
            trace = trace_model(self.model, self.inputs[:1])
            self.prunable_names, self.input_dims = trace.prunable, trace.input_dim
        self.prunable = prunable_parameters(self.model, self.prunable_names)
        self.input_dims = dict(self.input_dims or {})
        device = next(iter(self.prunable.values())).device if self.prunable else torch.device("cpu")
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self._gradients: dict[str, Tensor] | None = None

    @property
    def batch(self) -> tuple[Tensor, Tensor]:
        return self.inputs, self.targets

    def advance(self, compression: float) -> None:
        """Move to the next call of a gradual method, whose target is ``compression`` (the harness calls this).

        Drops the cached :meth:`gradients`: fine-tuning has changed the weights since they were computed.
        """
        if self.step + 1 >= self.steps:
            raise ValueError(f"step {self.step} is the last of {self.steps}; there is no next step")
        self.step += 1
        self.compression = compression
        self._gradients = None

    def keep_budget(self) -> int:
        """How many prunable weights may stay non-zero for the model to reach ``compression`` on its basis.

        On the ``model`` basis, non-prunable parameters (biases, norms) are all counted as kept, so a ratio
        they alone exceed is unreachable and says so.
        """
        prunable_total = sum(p.numel() for p in self.prunable.values())
        if self.basis == "prunable":
            return min(round(prunable_total / self.compression), prunable_total)
        total, nonzero = count_parameters(self.model)
        fixed_nonzero = nonzero - sum(int(torch.count_nonzero(p)) for p in self.prunable.values())
        budget = round(total / self.compression) - fixed_nonzero
        if budget < 0:
            raise ValueError(
                f"compression x{self.compression:g} is unreachable: the {fixed_nonzero} non-prunable non-zero "
                f"parameters alone exceed {total} / {self.compression:g}"
            )
        return min(budget, prunable_total)

    def keep_top(self, scores: Mapping[str, Tensor], layerwise: bool = False) -> dict[str, Tensor]:
        """Masks keeping the highest-scoring weights so that the whole model reaches ``compression``.

        With an N:M ``pattern`` the pattern decides instead: the n highest scores of every m consecutive
        inputs of each weight are kept (a weight whose input size is not a multiple of m stays dense).
        Global (default): one threshold across all prunable weights — what
        ``torch.nn.utils.prune.global_unstructured`` does, ties broken the same way.
        Layerwise: every prunable layer keeps the same fraction of its weights (largest-remainder
        rounding, so the total is still exact).
        """
        names = list(self.prunable)
        if set(scores) != set(names):
            raise ValueError(f"scores must cover exactly the prunable parameters {names}, got {sorted(scores)}")
        flat = {}
        for name in names:
            score = scores[name].detach()
            if score.shape != self.prunable[name].shape:
                raise ValueError(f"scores of {name!r} have shape {tuple(score.shape)}, expected {tuple(self.prunable[name].shape)}")
            if not torch.isfinite(score).all():
                raise ValueError(f"scores of {name!r} contain NaN or infinite values")
            flat[name] = score.reshape(-1)
        if self.pattern is not None:
            return keep_pattern({n: scores[n] for n in names}, self.input_dims, self.pattern)
        budget = self.keep_budget()
        if layerwise:
            sizes = torch.tensor([float(flat[n].numel()) for n in names])
            quota = sizes * (budget / sizes.sum())
            keep = quota.floor().long()
            remainder_order = torch.argsort(quota - keep, descending=True, stable=True)
            keep[remainder_order[: budget - int(keep.sum())]] += 1
            return {n: _keep_largest(flat[n], int(k)).view_as(scores[n]) for n, k in zip(names, keep.tolist())}
        everything = torch.cat([flat[n] for n in names])
        kept = _keep_largest(everything, budget).split([flat[n].numel() for n in names])
        return {n: k.view_as(scores[n]) for n, k in zip(names, kept)}

    def gradients(self) -> dict[str, Tensor]:
        """∂(cross-entropy)/∂w of each prunable weight on the context's batch, in eval mode.

        Eval mode, so computing them leaves batch-norm statistics of the base model untouched.
        """
        if self._gradients is None:
            was_training = self.model.training
            self.model.eval()
            try:
                loss = F.cross_entropy(self.model(self.inputs), self.targets)
                grads = torch.autograd.grad(loss, list(self.prunable.values()))
            finally:
                self.model.train(was_training)
            self._gradients = dict(zip(self.prunable, grads))
        return self._gradients

    @torch.no_grad()
    def activations(self) -> dict[str, Tensor]:
        """Output of every named submodule on the context's batch (eval mode), keyed by module name."""
        outputs: dict[str, Tensor] = {}
        handles = [
            module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
            for name, module in self.model.named_modules()
            if name
        ]
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(self.inputs)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        return outputs


def _keep_largest(scores: Tensor, keep: int) -> Tensor:
    """Boolean mask removing the ``numel - keep`` smallest scores, exactly the set torch's L1Unstructured drops.

    Where that set is unambiguous (no tie straddles the threshold, the usual case with real-valued
    scores), a selection finds the threshold in linear time; ``torch.topk`` with a large ``k``, which
    L1Unstructured uses, sorts and took most of a magnitude method's time (44 ms of 431k scores on one
    CPU thread, against 6). Where ties straddle the threshold, ``topk`` itself picks, so that the
    choice among equal scores stays torch's.
    """
    drop = scores.numel() - keep
    if drop <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    mask = scores > torch.kthvalue(scores, drop).values
    if int(mask.sum()) == keep:
        return mask
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask[torch.topk(scores, k=drop, largest=False).indices] = False
    return mask
