"""A case's parts, one at a time, for a researcher's own tests of their own method (the fixtures: plugin/testing.py).

Every part is the harness's own function — the subject's model and seeded batch, the first pruning
step of a case, mask validation, the compression check, evaluation, parameter and FLOPs counting —
so a test that passes here holds for the benchmark's numbers too. Nothing here is re-implemented.

The method runs in this process: it is the researcher's own code under their own test, and a
debugger or a print must reach it. The benchmark's cases, whose rows reach the leaderboard, keep
their sandbox.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..errors import CaseFailure
from ..measure.structured import pruned_flops
from ..prunable import count_parameters, parse_pattern, prunable_parameters
from ..sandbox.calling import answer_call
from ..sandbox.context import PruneContext
from ..sandbox.methods import Method
from ..suites.recipe import Recipe
from ..suites.registry import Suite
from ..suites.subject import Subject
from ..suites.training import measure as measure_metrics, optimizer_steps
from .gradual import gradual_schedule
from .masks import apply_masks, validate_masks, validate_pattern
from .pruning import check_compression


@dataclass(frozen=True)
class ShrinkSubject:
    """A suite made concrete — data, verified base weights — with the harness's own checks and counts.

    Loaded once per test process and shared by every test that asks for its suite: nothing here
    changes it (:meth:`model` is a new copy each call).
    """

    subject: Subject

    @property
    def name(self) -> str:
        return self.subject.suite.name

    @property
    def suite(self) -> Suite:
        return self.subject.suite

    @property
    def train(self) -> Dataset:
        """Training data: what base training, a method's batch and fine-tuning draw from."""
        return self.subject.data.train

    @property
    def test(self) -> Dataset:
        """Held-out data: what :meth:`evaluate` (and every top-1 of the benchmark) is measured on."""
        return self.subject.data.test

    @property
    def recipe(self) -> Recipe:
        """The pinned fine-tuning recipe every case gets after pruning."""
        return self.subject.suite.finetune_recipe

    @property
    def device(self) -> torch.device:
        return self.subject.device

    @property
    def identity(self) -> dict[str, str]:
        """What a case's numbers on this subject depend on besides the method: recorded with every row."""
        return {"suite": self.name, "base_sha256": self.subject.sha256, "recipe_hash": self.subject.finetune_hash}

    @property
    def base(self) -> dict[str, float]:
        """The dense base model's metrics (every case's ``top1_base``, ``top5_base``; ``perplexity_base`` on a language suite)."""
        return dict(self.subject.base_metrics)

    def model(self) -> nn.Module:
        """A new model holding the verified base weights (training mode, as a case's): every case starts from this."""
        return self.subject.fresh_model()

    def batch(self, seed: int, size: int = 256) -> tuple[Tensor, Tensor]:
        """The training batch a method sees in a case with ``seed`` (``ctx.inputs``, ``ctx.targets``)."""
        return self.subject.batch(seed, size)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The suite's metrics of ``model`` on the held-out data (top-1 and top-5; perplexity too on a language suite),
        as every case measures them (leaves it in eval mode)."""
        return measure_metrics(model, self.test, self.subject.suite.objective, device=self.device)

    def check_masks(self, model: nn.Module, masks: Mapping[str, Tensor], ratio: float) -> None:
        """Raise what a case raises for these masks at ``ratio``: :class:`~pytest_shrinkbench.MaskError` when they
        are malformed (invariant 1), :class:`~pytest_shrinkbench.CaseFailure` when, applied to ``model``, they miss
        the compression on the suite's basis by more than 0.5%. ``model`` is left as it is."""
        masked = self._masked(model, masks)
        check_compression(masked, ratio, "", None, prunable_parameters(masked, self.subject.trace.prunable),
                          basis=self.subject.suite.compression_basis)

    def measure(self, model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        """The size and FLOPs fields of a case's row for ``model`` (with ``masks`` applied to a copy, if given).

        ``params_total``, ``params_nonzero``, ``compression`` (biases and norms counted), ``flops_dense``,
        ``flops_sparse``, ``speedup`` (theoretical), ``flops_accounting`` (``structured`` where torch.fx
        traces the model, else ``density``) and ``channels_removed``.
        """
        model = self._masked(model, masks) if masks is not None else self._same_architecture(model)
        total, nonzero = count_parameters(model)
        return {"params_total": total, "params_nonzero": nonzero, "compression": total / nonzero if nonzero else None,
                **pruned_flops(model, self.subject.trace, self.subject.channel_links)}

    def _same_architecture(self, model: nn.Module) -> nn.Module:
        """``model`` itself, if its parameters are the suite's (names and shapes: the FLOPs are counted per weight)."""
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        expected = {name: tuple(p.shape) for name, p in self.subject.fresh_model().named_parameters()}
        if shapes != expected:
            differ = sorted(set(shapes.items()) ^ set(expected.items()))
            raise ValueError(f"the model is not suite {self.name!r}'s: its parameters differ in {differ[:5]}")
        return model

    def _masked(self, model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
        """A copy of ``model`` with ``masks`` applied, once they pass the harness's validation."""
        valid = validate_masks(masks, prunable_parameters(self._same_architecture(model), self.subject.trace.prunable))
        masked = copy.deepcopy(model)
        apply_masks(prunable_parameters(masked, self.subject.trace.prunable), valid, {})
        return masked


@dataclass(frozen=True)
class Pruned:
    """What a case's first pruning step leaves: the method's validated masks, and a fresh base model holding
    its new weights (if it returned any) with the masks applied — what fine-tuning would start from."""

    method: str
    suite: str
    ratio: float
    seed: int
    compression: float  # what the method was asked for: ``ratio``, or a gradual method's first target
    masks: dict[str, Tensor]
    model: nn.Module


@dataclass(frozen=True)
class ShrinkMethod:
    """A registered method, called as a case calls it: ``method(subject, ratio, seed) -> Pruned``."""

    method: Method

    @property
    def name(self) -> str:
        return self.method.name

    def __call__(self, subject: ShrinkSubject, ratio: float, seed: int = 0) -> Pruned:
        """Run a case's first pruning step: the same fresh model, seeded batch, context and global seed.

        Raises what the step raises in a case: :class:`~pytest_shrinkbench.CaseFailure` when the method
        crashes (with the method's own traceback) or edits the model instead of returning masks,
        :class:`~pytest_shrinkbench.MaskError` for malformed masks.
        The compression is not checked here (:meth:`ShrinkSubject.check_masks` does), so a test may inspect
        the masks of a method that misses it. A gradual method (``steps > 1``) makes its first call, whose
        target is the first of its schedule (``Pruned.compression``).
        """
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 1 <= ratio < math.inf:
            raise ValueError(f"ratio must be a finite number >= 1, got {ratio!r}")
        m, s = self.method, subject.subject
        compression = float(ratio)
        if m.steps > 1:
            compression = gradual_schedule(ratio, m.steps, optimizer_steps(s.data.train, s.suite.finetune_recipe, s.fresh_model()))[0][0]
        masks, model = _first_step(m, s, compression, seed)
        return Pruned(m.name, s.suite.name, float(ratio), seed, compression, masks, model)


def _first_step(m: Method, subject: Subject, compression: float, seed: int) -> tuple[dict[str, Tensor], nn.Module]:
    """A case's first call of ``m``, in this process, given what a case's child is given; what came back is
    checked and applied to a model of the harness's own, as a case does (:func:`..run.pruning.prune_step`)."""
    inputs, targets = subject.batch(seed)
    own = subject.fresh_model()
    torch.manual_seed(seed)  # as in a case's child: the method's global RNG starts from the case's seed
    pattern = parse_pattern(m.pattern)
    ctx = PruneContext(own, compression, inputs, targets, seed=seed, steps=m.steps, prunable_names=subject.trace.prunable,
                       input_dims=subject.trace.input_dim, pattern=pattern)
    with torch.enable_grad():  # grad mode restored on exit, whatever the method set
        answer = answer_call(m, ctx, reraise=True)
    if answer.error is not None:
        raise CaseFailure(answer.error)
    model = subject.fresh_model()
    prunable = prunable_parameters(model, subject.trace.prunable)
    masks = validate_masks(answer.masks, prunable)
    if pattern is not None:
        validate_pattern(masks, subject.trace.input_dim, pattern)
    apply_masks(prunable, masks, answer.weights)
    return masks, model
