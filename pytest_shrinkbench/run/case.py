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
from ..identity import CaseSpec, environment, protocol_hash, prunable_scope
from ..measure.structured import pruned_flops
from ..prunable import parse_pattern, prunable_parameters
from ..sandbox.protocol import Setup
from ..sandbox.runner import Sandbox, default_sandbox
from ..suites.subject import Subject
from ..suites.training import fit, measure, optimizer_steps
from .gradual import finetune_gradually, gradual_schedule
from .guards import time_limit
from .invariants import check_no_hooks, check_pruned
from .masks import MaskEnforcer
from .pruning import check_compression, prune_step, record_prunable_size, record_size
from .reuse import SharedMeasurements, measuring


def run_case(spec: CaseSpec, subject: Subject, result: dict[str, Any] | None = None, *, timeout: float = 0,
             then: Callable[[nn.Module, dict[str, Any]], None] | None = None, sandbox: Sandbox | None = None,
             shared: SharedMeasurements | None = None) -> dict[str, Any]:
    """Run one case on ``subject`` and return its measurements.

    The method is called through ``sandbox`` (default: this process's, which finds installed
    methods and those a ``conftest.py`` registered). Measurements are written into ``result`` as
    soon as they exist, so a case that fails late still reports what it measured before failing.
    Raises :class:`CaseFailure` (message prefixed with the case's label) when the method crashes or
    its process dies, its masks are malformed, it misses the requested compression, an invariant
    breaks, or the case runs past ``timeout`` seconds (0: no limit; its child is killed).
    ``then(model, result)`` measures more on the final pruned model (latency), outside the time limit.
    With ``shared`` (:mod:`.reuse`), a one-shot case whose pruned model ``shared`` has measured already takes
    those measurements instead of fine-tuning it again (never with ``then``: that needs its own final model).
    """
    result = {} if result is None else result
    sandbox = sandbox or default_sandbox()
    try:
        with time_limit(timeout):
            model = _run(spec, subject, result, sandbox, None if then is not None else shared)
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
            loss=subject.suite.objective.loss,
        )
    finally:
        if enforcer:
            enforcer.remove()
    return time.perf_counter() - start


def provenance(spec: CaseSpec, subject: Subject, sandbox: Sandbox) -> dict[str, Any]:
    """What a case's numbers depend on besides its spec, known before it runs: the method's source
    hash, the base weights' identity, the recipe hash and the environment, and how its method is
    confined. With the spec, this is the case's identity in the results store
    (:func:`pytest_shrinkbench.identity.case_key`). A suite with a protocol (a language model's corpus, windows
    and calibration) records it too, and its dense metrics (``perplexity_base`` beside ``top1_base``)."""
    protocol = subject.protocol
    scope = prunable_scope(subject.suite.exclude, subject.suite.prune_embeddings)
    scope = {"prunable_scope": scope} if scope else {}  # rows of suites that exclude nothing keep their keys and fields
    return dict(
        base_sha256=subject.sha256,
        recipe_hash=subject.finetune_hash,
        method_hash=sandbox.method(spec.method).source_hash,
        **{f"{name}_base": value for name, value in subject.base_metrics.items()},
        metric=subject.suite.objective.metric,
        compression_basis=subject.suite.compression_basis,
        **({"protocol": protocol, "protocol_hash": protocol_hash(protocol)} if protocol is not None else {}),
        sandbox=sandbox.level,
        walls=sandbox.walls,
        **environment(subject.device),
    ) | scope


def _run(spec: CaseSpec, subject: Subject, result: dict[str, Any], sandbox: Sandbox,
         shared: SharedMeasurements | None) -> nn.Module:
    info = sandbox.method(spec.method)
    if "method_hash" not in result:
        result.update(provenance(spec, subject, sandbox))
    result.setdefault("weights_changed", 0)
    result["prune_steps"] = info.steps
    task, basis = subject.suite.objective, subject.suite.compression_basis
    inputs, targets = subject.batch(spec.seed)
    torch.manual_seed(spec.seed)
    model = subject.fresh_model()
    prunable = prunable_parameters(model, subject.trace.prunable)
    pattern = parse_pattern(info.pattern)
    if pattern is not None:
        result["sparsity_pattern"] = info.pattern
    total = optimizer_steps(subject.data.train, subject.suite.finetune_recipe, model)
    compressions, prune_after = gradual_schedule(spec.ratio, info.steps, total) if info.steps > 1 else ([spec.ratio], [])
    setup = Setup(info, spec.suite, subject.sha256, spec.seed, str(subject.device), torch.get_num_threads(), inputs, targets,
                  subject.state, list(subject.trace.prunable), dict(subject.trace.input_dim), subject.calibration(spec.seed),
                  basis)
    check_inputs = subject.check_inputs()
    with closing(sandbox.open(setup)) as calls:
        masks = prune_step(calls, prunable, compressions[0], 0, None, result, pattern, subject.trace.input_dim)
        when = f" (step 1 of {info.steps})" if info.steps > 1 else ""
        if pattern is None:
            check_compression(model, compressions[0], when, None, prunable, result=result, basis=basis)
        else:  # the pattern, checked on every mask, fixes the covered layers' density: it is the compression check
            record_size(model, result)
            record_prunable_size(prunable, result, basis)
        check_pruned(model, prunable, masks, check_inputs, subject.fresh_model, f"after pruning{when}")
        if info.steps == 1 or total == 0:
            calls.close()  # a one-shot method's child is done: it is not kept through fine-tuning
            with measuring(shared, spec, model, masks, result) as taken:  # the same pruned model measured before?
                if not taken:
                    _measure_one_shot(model, prunable, masks, subject, spec, check_inputs, result, total)
            return model
        result.update({f"{name}_pre": value for name, value in measure(model, subject.data.test, task, device=subject.device).items()})
        torch.manual_seed(spec.seed)  # fine-tuning's randomness (dropout) depends on the seed alone
        masks = finetune_gradually(info, calls, model, prunable, subject, spec, masks, compressions, prune_after,
                                   total, check_inputs, result)
        # A regrown weight starts at zero and may stay there (a dead input): with regrowth the size is
        # checked on the masks, and the row still records the model's true non-zero count.
        check_compression(model, spec.ratio, " (after the last step and fine-tuning)",
                          masks if info.regrowth else None, prunable, result=result, basis=basis)
    _measure_fine_tuned(model, prunable, masks, subject, check_inputs, result)
    return model


def _measure_one_shot(model: nn.Module, prunable: dict[str, nn.Parameter], masks: dict[str, torch.Tensor],
                      subject: Subject, spec: CaseSpec, check_inputs: torch.Tensor, result: dict[str, Any], steps: int) -> None:
    """Everything a one-shot case measures after pruning (what :mod:`.reuse` shares between equal cases). A suite of
    0 fine-tuning ``steps`` measures once: its pruned model is its final model."""
    pruned = measure(model, subject.data.test, subject.suite.objective, device=subject.device)
    result.update({f"{name}_pre": value for name, value in pruned.items()})
    if steps == 0:
        result.update(pruned, finetune_seconds=0.0)
        check_no_hooks(model, "after pruning")
        result.update(pruned_flops(model, subject.trace, subject.channel_links))
        return
    torch.manual_seed(spec.seed)  # fine-tuning's randomness (dropout) depends on the seed alone
    result["finetune_seconds"] = finetune(model, subject, spec.seed, MaskEnforcer(prunable, masks))
    _measure_fine_tuned(model, prunable, masks, subject, check_inputs, result)


def _measure_fine_tuned(model: nn.Module, prunable: dict[str, nn.Parameter], masks: dict[str, torch.Tensor],
                        subject: Subject, check_inputs: torch.Tensor, result: dict[str, Any]) -> None:
    check_pruned(model, prunable, masks, check_inputs, subject.fresh_model, "after fine-tuning")
    check_no_hooks(model, "after fine-tuning")
    result.update(measure(model, subject.data.test, subject.suite.objective, device=subject.device))
    result.update(pruned_flops(model, subject.trace, subject.channel_links))
