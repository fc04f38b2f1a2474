"""Measured inference latency: the dense base model against the physically shrunk pruned model.

Timing is pytest-benchmark's (calibrated rounds, its options, storage and comparison apply);
this module only decides *what* is timed: one no-grad forward pass of a fixed batch of test
inputs, in eval mode, synchronised on CUDA so the timer sees the kernels and not their launch.
The measured speedup is the dense model's median ÷ the shrunk model's median, both timed in the
same session on the same batch.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from ..prunable import pattern_violation, trace_model
from ..suites.subject import Subject
from .shrink import Shrunk, shrink

WARMUP_CALLS = 3  # first calls pay for allocation and kernel selection; pytest-benchmark does not warm up by default


def latency_inputs(subject: Subject, batch: int) -> Tensor:
    """The first ``batch`` test inputs (fewer if the test set is smaller), on the subject's device."""
    test = subject.data.test
    inputs, _ = default_collate([test[i] for i in range(min(batch, len(test)))])
    return inputs.to(subject.device)


def forward_pass(model: nn.Module, inputs: Tensor) -> Callable[[], None]:
    """One timed unit: a forward pass without autograd, finished on the device before it returns."""
    model.eval()
    synchronize = torch.cuda.synchronize if inputs.is_cuda else (lambda device=None: None)

    def run() -> None:
        with torch.inference_mode():
            model(inputs)
        synchronize(inputs.device)

    return run


def median_seconds(benchmark: Any, model: nn.Module, inputs: Tensor) -> float:
    """Time ``model`` on ``inputs`` with the ``benchmark`` fixture; its median seconds per forward pass."""
    run = forward_pass(model, inputs)
    for _ in range(WARMUP_CALLS):
        run()
    benchmark(run)
    if benchmark.stats is None:
        raise RuntimeError("pytest-benchmark did not time the forward pass (disabled by --benchmark-disable or xdist?)")
    return float(benchmark.stats.stats.median)


def measure_shrunk(benchmark: Any, model: nn.Module, subject: Subject, batch: int, dense_seconds: float | None) -> dict[str, Any]:
    """Shrink the pruned ``model``, check the shrunk one computes the same logits, time it.

    Returns the row's fields: the shrunk model's size, FLOPs (dense kernels, so unstructured
    zeros still cost) and latency, and the measured speedup when the dense reference was timed.
    Shrinking is the harness's own extra measurement, not a property of the method: when it fails
    (or its logits differ where folding is exact: a shrinking bug), nothing is timed, the row says
    why in ``shrink_error`` and a warning is shown, and the case keeps its verdict.
    """
    inputs = latency_inputs(subject, batch)
    try:
        shrunk = shrink(model, inputs)
        _check_same_logits(model, shrunk, inputs)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"shrinkbench: could not shrink the pruned model; its latency is not measured: {message}", stacklevel=2)
        return dict(latency_batch=len(inputs), shrink_error=message, latency_ms=None, speedup_measured=None,
                    latency_dense_ms=dense_seconds * 1e3 if dense_seconds is not None else None)
    seconds = median_seconds(benchmark, shrunk.model, inputs)
    benchmark.extra_info.update(channels_shrunk=shrunk.channels, shrink_exact=shrunk.exact)
    return dict(
        latency_batch=len(inputs),
        channels_shrunk=shrunk.channels,
        shrink_exact=shrunk.exact,
        params_shrunk=sum(p.numel() for p in shrunk.model.parameters()),
        flops_shrunk=trace_model(shrunk.model, subject.example).total,
        latency_ms=seconds * 1e3,
        latency_dense_ms=dense_seconds * 1e3 if dense_seconds is not None else None,
        speedup_measured=dense_seconds / seconds if dense_seconds is not None else None,
    )


def _check_same_logits(model: nn.Module, shrunk: Shrunk, inputs: Tensor) -> None:
    """The shrunk model must run, and where folding is exact compute the pruned model's logits (up to float reassociation)."""
    with torch.no_grad():
        got = shrunk.model(inputs)  # run even when not exact: a shrunk model that cannot run is a shrink error
        if not shrunk.exact:
            return
        expected = model.eval()(inputs)
        error = float((got - expected).abs().max())
    if error > 1e-4 * (float(expected.abs().max()) or 1.0):
        raise RuntimeError(f"the shrunk model's logits differ from the pruned model's by {error:.3g} (a shrinking bug)")


def semi_structured_timing(model: nn.Module, inputs: Tensor) -> dict[str, Any]:
    """A 2:4 model timed through PyTorch's semi-structured sparse kernels against the same model on dense kernels.

    Every linear layer whose weight is 2:4 gets ``torch.sparse.to_sparse_semi_structured`` (a copy of the model;
    convs have no such kernel). Needs CUDA, a GPU of compute capability 8.0 or more, and weight shapes and dtypes
    the kernels accept; whatever is missing is said in ``sparse_kernel``, never a failure: the theoretical speedup
    credits the pattern whatever a GPU makes of it, and measured 2:4 speedups range from 0.4x to 1.7x of dense.
    """
    if inputs.device.type != "cuda":
        return {"sparse_kernel": f"not timed: 2:4 kernels need a CUDA device (this case ran on {inputs.device.type})"}
    from torch.sparse import to_sparse_semi_structured
    from torch.utils.benchmark import Timer

    sparse, swapped, refused = copy.deepcopy(model).eval(), 0, ""
    for module in sparse.modules():
        if not isinstance(module, nn.Linear) or pattern_violation(module.weight.detach() != 0, 1, (2, 4)) is not None:
            continue
        try:
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            swapped += 1
        except Exception as exc:  # noqa: BLE001  (a shape, dtype or GPU the kernels refuse: that layer stays dense)
            refused = refused or f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if not swapped:
        return {"sparse_kernel": f"unsupported here: {refused or 'no 2:4 linear layer'}"}

    def median(m: nn.Module) -> float:
        return Timer("run()", globals={"run": forward_pass(m, inputs)}).blocked_autorange(min_run_time=0.5).median

    try:
        dense_seconds, sparse_seconds = median(model), median(sparse)
    except Exception as exc:  # noqa: BLE001
        return {"sparse_kernel": f"unsupported here: {type(exc).__name__}: {exc}"}
    verdict = "slower than dense kernels" if sparse_seconds > dense_seconds else "faster than dense kernels"
    return {"latency_2of4_ms": sparse_seconds * 1e3, "speedup_2of4_measured": dense_seconds / sparse_seconds,
            "sparse_kernel": f"to_sparse_semi_structured on {swapped} linear layers: {verdict}"}
