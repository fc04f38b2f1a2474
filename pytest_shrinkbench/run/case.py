"""One case on the harness's side — method × suite × ratio × seed — from masks to measurements, checking invariants throughout.

The method runs on the other side of the trust boundary (:mod:`pytest_shrinkbench.sandbox`); this
module builds its own model from the suite and the verified base weights, applies what came back,
fine-tunes with the suite's pinned recipe, checks the invariants and measures. No method code runs
in this process (except in the explicit in-process debugging mode, whose rows say so).
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CaseFailure
from ..identity import CaseSpec, environment
from ..measure.structured import pruned_flops
from ..prunable import prunable_parameters
from ..sandbox.protocol import Setup
from ..sandbox.runner import Sandbox, default_sandbox
from ..suites.subject import Subject
from ..suites.training import evaluate, fit, optimizer_steps
from .gradual import finetune_gradually, gradual_schedule
from .guards import time_limit
from .invariants import check_no_hooks, check_pruned
from .masks import MaskEnforcer
from .pruning import check_compression, prune_step


def run_case(spec: CaseSpec, subject: Subject, result: dict[str, Any] | None = None, *, timeout: float = 0,
             then: Callable[[nn.Module, dict[str, Any]], None] | None = None, sandbox: Sandbox | None = None) -> dict[str, Any]:
    """Run one case on ``subject`` and return its measurements.

    The method is called through ``sandbox`` (default: this process's, which finds installed
    methods and those a ``conftest.py`` registered). Measurements are written into ``result`` as
    soon as they exist, so a case that fails late still reports what it measured before failing.
    Raises :class:`CaseFailure` (message prefixed with the case's label) when the method crashes or
    its process dies, its masks are malformed, it misses the requested compression, an invariant
    breaks, or the case runs past ``timeout`` seconds (0: no limit; its child is killed).
    ``then(model, result)`` measures more on the final pruned model (latency), outside the time limit.
    """
    result = {} if result is None else result
    sandbox = sandbox or default_sandbox()
    try:
        with time_limit(timeout):
            model = _run(spec, subject, result, sandbox)
        if then is not None:
            then(model, result)
    except CaseFailure as failure:
        failure.args = (f"[{spec.label}] {failure}",)
        raise
    except Exception as exc:  # the harness itself broke (or, in-process, the method did): still this case's failure
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


def provenance(spec: CaseSpec, subject: Subject, sandbox: Sandbox) -> dict[str, Any]:
    """What a case's numbers depend on besides its spec, known before it runs: the method's source
    hash, the base weights' identity, the recipe hash and the environment, and how its method is
    confined. With the spec, this is the case's identity in the results store
    (:func:`pytest_shrinkbench.identity.case_key`)."""
    return dict(
        base_sha256=subject.sha256,
        recipe_hash=subject.suite.finetune_recipe.digest(),
        method_hash=sandbox.method(spec.method).source_hash,
        top1_base=subject.base_top1,
        top5_base=subject.base_top5,
        sandbox=sandbox.level,
        walls=sandbox.walls,
        **environment(subject.device),
    )


def _run(spec: CaseSpec, subject: Subject, result: dict[str, Any], sandbox: Sandbox) -> nn.Module:
    info = sandbox.method(spec.method)
    if "method_hash" not in result:
        result.update(provenance(spec, subject, sandbox))
    result.setdefault("weights_changed", 0)
    result["prune_steps"] = info.steps
    inputs, targets = subject.batch(spec.seed)
    torch.manual_seed(spec.seed)
    model = subject.fresh_model()
    prunable = prunable_parameters(model)
    total = optimizer_steps(subject.data.train, subject.suite.finetune_recipe)
    compressions, prune_after = gradual_schedule(spec.ratio, info.steps, total) if info.steps > 1 else ([spec.ratio], [])
    setup = Setup(info, spec.suite, subject.sha256, spec.seed, str(subject.device), torch.get_num_threads(), inputs, targets,
                  subject.state)
    check_inputs = subject.check_inputs()
    with closing(sandbox.open(setup)) as calls:
        masks = prune_step(calls, prunable, compressions[0], 0, None, result)
        when = f" (step 1 of {info.steps})" if info.steps > 1 else ""
        check_compression(model, compressions[0], when, result=result)
        check_pruned(model, prunable, masks, check_inputs, subject.fresh_model, f"after pruning{when}")
        result["top1_pre"], result["top5_pre"] = evaluate(model, subject.data.test, device=subject.device)
        torch.manual_seed(spec.seed)  # fine-tuning's randomness (dropout) depends on the seed alone
        if info.steps == 1:
            calls.close()  # a one-shot method's child is done: it is not kept through fine-tuning
            result["finetune_seconds"] = finetune(model, subject, spec.seed, MaskEnforcer(prunable, masks))
        else:
            masks = finetune_gradually(info, calls, model, prunable, subject, spec, masks, compressions, prune_after,
                                       total, check_inputs, result)
            # A regrown weight starts at zero and may stay there (a dead input): with regrowth the size is
            # checked on the masks, and the row still records the model's true non-zero count.
            check_compression(model, spec.ratio, " (after the last step and fine-tuning)",
                              masks if info.regrowth else None, prunable, result=result)
    check_pruned(model, prunable, masks, check_inputs, subject.fresh_model, "after fine-tuning")
    check_no_hooks(model, "after fine-tuning")
    result["top1"], result["top5"] = evaluate(model, subject.data.test, device=subject.device)

    result.update(pruned_flops(model, subject.dense_flops, subject.channel_links))
    return model
