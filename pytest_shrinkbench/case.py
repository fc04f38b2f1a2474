"""One case — method × suite × ratio × seed — from pruning to measurements, checking invariants throughout."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from . import methods
from .context import PruneContext
from .errors import CaseFailure
from .invariants import check_architecture, check_no_hooks, check_pruned, check_untouched, shapes
from .guards import isolated_globals, time_limit
from .masks import MaskEnforcer, apply_masks, prunable_modules, validate_masks
from .metrics import count_parameters, sparse_flops
from .structured import count_removed_channels, structured_flops
from .subject import Subject
from .training import evaluate, fit

# Achieved compression may differ from the requested one by rounding to whole parameters only.
COMPRESSION_TOLERANCE = 0.005


@dataclass(frozen=True)
class CaseSpec:
    """The identity of a case; everything else about it is pinned by the suite."""

    method: str
    suite: str
    ratio: float
    seed: int
    weights: str | None = None  # tag of the base checkpoint when a suite has several (--shrink-weights)

    @property
    def id(self) -> str:
        """Test id, e.g. ``global-magnitude-digits-cnn-x8-seed1`` (``...-seed1-w3f2a9c1d`` with a checkpoint tag)."""
        tag = f"-{self.weights}" if self.weights else ""
        return f"{self.method}-{self.suite}-x{self.ratio:g}-seed{self.seed}{tag}"

    @property
    def label(self) -> str:
        """How failure messages name the case."""
        tag = f" weights={self.weights}" if self.weights else ""
        return f"method={self.method} suite={self.suite} ratio=x{self.ratio:g} seed={self.seed}{tag}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment(device: torch.device) -> dict[str, str]:
    """Library versions and hardware recorded with every result (numbers from different stacks differ)."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def run_case(spec: CaseSpec, subject: Subject, result: dict[str, Any] | None = None, *, timeout: float = 0) -> dict[str, Any]:
    """Run one case on ``subject`` and return its measurements.

    Measurements are written into ``result`` as soon as they exist, so a case that fails late
    still reports what it measured before failing. Raises :class:`CaseFailure` (message prefixed
    with the case's label) when the method crashes, its masks are malformed, it misses the
    requested compression, an invariant breaks, or the case runs past ``timeout`` seconds (0: no limit).
    """
    result = {} if result is None else result
    try:
        with isolated_globals(), time_limit(timeout):
            _run(spec, subject, result)
    except CaseFailure as failure:
        failure.args = (f"[{spec.label}] {failure}",)
        raise
    except Exception as exc:  # a method's hook or stray state broke the harness's own steps
        raise CaseFailure(f"[{spec.label}] {type(exc).__name__}: {exc}") from exc
    return result


def finetune(model: nn.Module, subject: Subject, seed: int, enforcer: MaskEnforcer | None = None) -> float:
    """Fine-tune with the suite's pinned recipe, under ``enforcer``'s masks if given; return the seconds.

    The invariant-3 checks run at every epoch end; the enforcer is detached afterwards either way.
    """
    start = time.perf_counter()
    try:
        fit(
            model,
            subject.data.train,
            subject.suite.finetune_recipe,
            seed=seed,
            device=subject.device,
            on_optimizer=enforcer.attach if enforcer else None,
            on_epoch_end=(lambda epoch: enforcer.check(f"fine-tuning epoch {epoch + 1}")) if enforcer else None,
        )
    finally:
        if enforcer:
            enforcer.remove()
    return time.perf_counter() - start


def provenance(spec: CaseSpec, subject: Subject) -> dict[str, Any]:
    """What a case's numbers depend on besides its spec, known before it runs: the method's source
    hash, the base weights' sha256, the recipe hash and the environment. With the spec, this is the
    case's identity in the results store (:func:`pytest_shrinkbench.store.case_key`)."""
    return dict(
        base_sha256=subject.sha256,
        recipe_hash=subject.suite.finetune_recipe.digest(),
        method_hash=methods.METHODS.get(spec.method).source_hash(),
        top1_base=subject.base_top1,
        top5_base=subject.base_top5,
        **environment(subject.device),
    )


def _run(spec: CaseSpec, subject: Subject, result: dict[str, Any]) -> None:
    m = methods.METHODS.get(spec.method)
    result.update(provenance(spec, subject))
    torch.manual_seed(spec.seed)
    model = subject.fresh_model()
    architecture = shapes(model)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    inputs, targets = subject.batch(spec.seed)
    ctx = PruneContext(model, spec.ratio, inputs, targets, seed=spec.seed)

    start = time.perf_counter()
    masks, weights = methods.call(m, ctx)
    result["prune_seconds"] = time.perf_counter() - start
    who = f"method {spec.method!r}"
    check_architecture(architecture, model, who)
    masks = validate_masks(masks, ctx.prunable)
    check_untouched(before, model, masks, who)
    apply_masks(ctx.prunable, masks, weights)

    total, nonzero = count_parameters(model)
    result.update(params_total=total, params_nonzero=nonzero, compression=total / nonzero if nonzero else None)
    if nonzero == 0 or abs(total / nonzero / spec.ratio - 1) > COMPRESSION_TOLERANCE:
        achieved = f"x{total / nonzero:.4g}" if nonzero else "everything pruned"
        raise CaseFailure(
            f"requested compression x{spec.ratio:g} but the masks achieve {achieved} "
            f"({nonzero} of {total} parameters non-zero; {round(total / spec.ratio)} expected)"
        )
    check_inputs = subject.check_inputs()
    check_pruned(model, ctx.prunable, masks, check_inputs, subject.fresh_model, "after pruning")
    result["top1_pre"], result["top5_pre"] = evaluate(model, subject.data.test, device=subject.device)

    result["finetune_seconds"] = finetune(model, subject, spec.seed, MaskEnforcer(ctx.prunable, masks))
    check_pruned(model, ctx.prunable, masks, check_inputs, subject.fresh_model, "after fine-tuning")
    check_no_hooks(model, "after fine-tuning")
    result["top1"], result["top5"] = evaluate(model, subject.data.test, device=subject.device)

    weights_by_module = {module: ctx.prunable[param] for module, param in prunable_modules(model).items()}
    dense = sum(subject.dense_flops.values())
    if subject.channel_links is None:  # untraceable: each layer's FLOPs scaled by its density only
        sparse, accounting = sparse_flops(subject.dense_flops, weights_by_module), "density"
    else:  # a removed output channel also removes its consumers' input-channel work
        sparse, accounting = structured_flops(subject.dense_flops, weights_by_module, subject.channel_links), "structured"
    result.update(flops_dense=dense, flops_sparse=sparse, speedup=dense / sparse if sparse else None,
                  flops_accounting=accounting, channels_removed=count_removed_channels(weights_by_module))
