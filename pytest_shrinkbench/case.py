"""One case — method × suite × ratio × seed — from pruning to measurements, checking invariants throughout."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from . import methods
from .context import PruneContext
from .errors import CaseFailure, InvariantViolation
from .invariants import check_architecture, check_no_hooks, check_pruned, check_untouched, shapes
from .guards import isolated_globals, time_limit
from .masks import MaskEnforcer, apply_masks, prunable_modules, validate_masks
from .metrics import count_parameters, sparse_flops
from .structured import count_removed_channels, structured_flops
from .subject import Subject
from .training import evaluate, fit, optimizer_steps

# Achieved compression may differ from the requested one by rounding to whole parameters only.
COMPRESSION_TOLERANCE = 0.005
# The version of what a case measures and how (invariants, FLOPs accounting, row keys). It is part of
# every result's identity in the store: bump it whenever a change would alter a stored number, so
# old rows are never reused as if measured by the new rules. 2: structured FLOPs accounting.
# 3: gradual methods prune after scheduled optimizer steps, no longer at epoch ends.
# 4: depthwise convs pass removed channels through in the structured FLOPs (and l1-filter's masks).
MEASURE_VERSION = 4


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
        "measure_version": MEASURE_VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


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


def gradual_schedule(ratio: float, steps: int, total: int) -> tuple[list[float], list[int]]:
    """Targets and timing of a gradual method (Zhu & Gupta 2017's cubic schedule, within the fine-tuning budget).

    Sparsity after call k (1..steps) is ``s_f * (1 - (1 - k/steps)**3)`` with ``s_f = 1 - 1/ratio``:
    most weights go early, the last few gently. Call 1 is before fine-tuning; calls 2..steps follow
    optimizer steps evenly spread (every Δt steps, as Zhu & Gupta prune) over the first half of the
    ``total`` optimizer steps of fine-tuning, so the final masks are fine-tuned for the second half.
    Returns (compressions, 0-based indices of the optimizer steps after which calls 2..steps happen):
    strictly increasing, and each call is followed by at least one optimizer step. Raises CaseFailure
    when there are fewer optimizer steps than calls.
    """
    final = 1 - 1 / ratio
    compressions = [1 / (1 - final * (1 - (1 - k / steps) ** 3)) for k in range(1, steps + 1)]
    compressions[-1] = ratio
    if steps > total:
        raise CaseFailure(f"a method of {steps} steps needs at least {steps} fine-tuning optimizer steps "
                          f"(one per call, the last one after the last call); the suite's recipe has {total}")
    span = max(steps - 1, total // 2)  # the calls happen within the first ``span`` optimizer steps
    return compressions, [-(-k * span // (steps - 1)) - 1 for k in range(1, steps)]


def _check_compression(model: nn.Module, target: float, when: str = "", masks: dict[str, torch.Tensor] | None = None,
                       prunable: dict[str, nn.Parameter] | None = None, result: dict[str, Any] | None = None) -> tuple[int, int]:
    """Total and non-zero parameters, failing the case unless they reach ``target``. With ``masks`` (a gradual
    method's intermediate step) the prunable weights count by their masks: a regrown weight is kept though still zero.
    ``result`` gets the model's counts before any failure, so a failed row still says what was achieved."""
    total, nonzero = count_parameters(model)
    if result is not None:
        result.update(params_total=total, params_nonzero=nonzero, compression=total / nonzero if nonzero else None)
    if masks is not None and prunable is not None:
        nonzero += sum(int(masks[n].sum()) - int(torch.count_nonzero(p)) for n, p in prunable.items())
    if nonzero == 0 or abs(total / nonzero / target - 1) > COMPRESSION_TOLERANCE:
        achieved = f"x{total / nonzero:.4g}" if nonzero else "everything pruned"
        raise CaseFailure(
            f"requested compression x{target:g}{when} but the masks achieve {achieved} "
            f"({nonzero} of {total} parameters non-zero; {round(total / target)} expected)"
        )
    return total, nonzero


def _prune(m: methods.Method, ctx: PruneContext, model: nn.Module, architecture: dict, who: str,
           result: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Call the method (its time added to ``prune_seconds``), check its masks and that it edited nothing
    in place, apply them; return the masks.

    Every call sees the model in training mode (a fresh model is, and fine-tuning is when a gradual
    method is called again), and the mode is restored after it: a method that switches to eval
    mode must not leave the rest of fine-tuning running without dropout or batch statistics.
    """
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    start = time.perf_counter()
    try:
        masks, weights = methods.call(m, ctx)
    finally:
        model.train()
    result["prune_seconds"] = result.get("prune_seconds", 0.0) + time.perf_counter() - start
    check_architecture(architecture, model, who)
    masks = validate_masks(masks, ctx.prunable)
    check_untouched(before, model, masks, who)
    apply_masks(ctx.prunable, masks, weights)
    return masks


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

    masks = _prune(m, ctx, model, architecture, who, result)
    when = f" (step 1 of {m.steps})" if m.steps > 1 else ""
    _check_compression(model, compressions[0], when, result=result)
    check_inputs = subject.check_inputs()
    check_pruned(model, ctx.prunable, masks, check_inputs, subject.fresh_model, f"after pruning{when}")
    result["top1_pre"], result["top5_pre"] = evaluate(model, subject.data.test, device=subject.device)

    if m.steps == 1:
        result["finetune_seconds"] = finetune(model, subject, spec.seed, MaskEnforcer(ctx.prunable, masks))
    else:
        masks = _finetune_gradually(m, ctx, model, subject, spec, masks, compressions, prune_after, total,
                                    architecture, who, check_inputs, result)
        # A regrown weight starts at zero and may stay there (a dead input): with regrowth the size is
        # checked on the masks, and the row still records the model's true non-zero count.
        _check_compression(model, spec.ratio, " (after the last step and fine-tuning)",
                           masks if m.regrowth else None, ctx.prunable, result=result)
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
    return model


def _finetune_gradually(
    m: methods.Method, ctx: PruneContext, model: nn.Module, subject: Subject, spec: CaseSpec, masks: dict[str, torch.Tensor],
    compressions: list[float], prune_after: list[int], total: int, architecture: dict, who: str,
    check_inputs: torch.Tensor, result: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Fine-tune with the suite's recipe, calling the method again after each optimizer step of ``prune_after``.

    Between mask changes everything a one-shot case guarantees holds (invariant 3 checked every
    epoch). At each change: the previous enforcer's record is checked, the new masks are validated,
    must not revive a pruned weight (unless the method declares ``regrowth``), must hit the step's
    compression, and pass invariants 2, 4 and 5; the optimizer's per-weight state (momentum, Adam
    moments) of newly pruned entries is zeroed, so it cannot move them off zero.
    """
    state = {"masks": masks, "enforcer": MaskEnforcer(ctx.prunable, masks), "optimizer": None}
    step_after = {index: step for step, index in enumerate(prune_after, start=1)}  # optimizer step -> ctx.step of the call

    def on_optimizer(optimizer: torch.optim.Optimizer) -> None:
        state["optimizer"] = optimizer
        state["enforcer"].attach(optimizer)

    def on_epoch_end(epoch: int) -> None:
        state["enforcer"].check(f"fine-tuning epoch {epoch + 1}")

    def on_step(index: int) -> None:
        step = step_after.get(index)
        if step is None:
            return
        when = f" (step {step + 1} of {m.steps}, after optimizer step {index + 1} of {total})"
        state["enforcer"].check(f"fine-tuning up to optimizer step {index + 1}, before step {step + 1} of {m.steps}")
        state["enforcer"].remove()
        ctx.advance(compressions[step])
        new = _prune(m, ctx, model, architecture, who, result)
        if not m.regrowth:
            for name, mask in new.items():
                revived = int((mask & ~state["masks"][name]).sum())
                if revived:
                    raise InvariantViolation(
                        f"{who} revived {revived} pruned entries of {name!r}{when}; declare @method(..., regrowth=True) to allow it"
                    )
        _check_compression(model, compressions[step], when, new, ctx.prunable)
        check_pruned(model, ctx.prunable, new, check_inputs, subject.fresh_model, f"after pruning{when}")  # restores the mode
        with torch.no_grad():
            for name, param in ctx.prunable.items():
                for value in state["optimizer"].state.get(param, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        value.mul_(new[name].to(value.dtype))
        state["masks"] = new
        state["enforcer"] = MaskEnforcer(ctx.prunable, new)
        state["enforcer"].attach(state["optimizer"])

    start = time.perf_counter()
    try:
        fit(model, subject.data.train, subject.suite.finetune_recipe, seed=spec.seed, device=subject.device,
            on_optimizer=on_optimizer, on_step=on_step, on_epoch_end=on_epoch_end)
    finally:
        state["enforcer"].remove()
    result["finetune_seconds"] = time.perf_counter() - start
    return state["masks"]
