"""Measured inference latency: the dense base model against the physically shrunk pruned model.

Timing is pytest-benchmark's (calibrated rounds, its options, storage and comparison apply);
this module only decides *what* is timed: one no-grad forward pass of a fixed batch of test
inputs, in eval mode, synchronised on CUDA so the timer sees the kernels and not their launch.
The measured speedup is the dense model's median ÷ the shrunk model's median, both timed in the
same session on the same batch.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from ..prunable import trace_model
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
