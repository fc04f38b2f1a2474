"""One case on the harness's side — method × suite × ratio × seed — from masks to measurements, checking invariants throughout."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CaseFailure
from ..identity import CaseSpec, environment
from ..measure.structured import pruned_flops
from ..sandbox import methods
from ..sandbox.context import PruneContext
from ..suites.subject import Subject
from ..suites.training import evaluate, fit, optimizer_steps
from .gradual import finetune_gradually, gradual_schedule
from .guards import isolated_globals, time_limit
from .invariants import (
    check_no_hooks,
    check_pruned,
    shapes,
)
from .masks import MaskEnforcer
from .pruning import check_compression, prune_step


def run_case(spec: CaseSpec, subject: Subject, result: dict[str, Any] | None = None, *, timeout: float = 0,
             then: Callable[[nn.Module, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one case on ``subject`` and return its measurements.

    Measurements are written into ``result`` as soon as they exist, so a case that fails late
    still reports what it measured before failing. Raises :class:`CaseFailure` (message prefixed
    with the case's label) when the method crashes, its masks are malformed, it misses the
    requested compression, an invariant breaks, or the case runs past ``timeout`` seconds (0: no limit).
    ``then(model, result)`` measures more on the final pruned model (latency), outside the time limit.
    """
    result = {} if result is None else result
    try:
        with isolated_globals(), time_limit(timeout):
            model = _run(spec, subject, result)
        if then is not None:
            then(model, result)
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


def _run(spec: CaseSpec, subject: Subject, result: dict[str, Any]) -> nn.Module:
    m = methods.METHODS.get(spec.method)
    result.update(provenance(spec, subject))
    torch.manual_seed(spec.seed)
    model = subject.fresh_model()
    architecture = shapes(model)
    inputs, targets = subject.batch(spec.seed)
    total = optimizer_steps(subject.data.train, subject.suite.finetune_recipe)
    compressions, prune_after = gradual_schedule(spec.ratio, m.steps, total) if m.steps > 1 else ([spec.ratio], [])
    ctx = PruneContext(model, compressions[0], inputs, targets, seed=spec.seed, step=0, steps=m.steps)
    who = f"method {spec.method!r}"

    masks = prune_step(m, ctx, model, architecture, who, result)
    when = f" (step 1 of {m.steps})" if m.steps > 1 else ""
    check_compression(model, compressions[0], when, result=result)
    check_inputs = subject.check_inputs()
    check_pruned(model, ctx.prunable, masks, check_inputs, subject.fresh_model, f"after pruning{when}")
    result["top1_pre"], result["top5_pre"] = evaluate(model, subject.data.test, device=subject.device)

    if m.steps == 1:
        result["finetune_seconds"] = finetune(model, subject, spec.seed, MaskEnforcer(ctx.prunable, masks))
    else:
        masks = finetune_gradually(m, ctx, model, subject, spec, masks, compressions, prune_after, total,
                                    architecture, who, check_inputs, result)
        # A regrown weight starts at zero and may stay there (a dead input): with regrowth the size is
        # checked on the masks, and the row still records the model's true non-zero count.
        check_compression(model, spec.ratio, " (after the last step and fine-tuning)",
                           masks if m.regrowth else None, ctx.prunable, result=result)
    check_pruned(model, ctx.prunable, masks, check_inputs, subject.fresh_model, "after fine-tuning")
    check_no_hooks(model, "after fine-tuning")
    result["top1"], result["top5"] = evaluate(model, subject.data.test, device=subject.device)

    result.update(pruned_flops(model, subject.dense_flops, subject.channel_links))
    return model
