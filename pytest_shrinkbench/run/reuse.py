"""Content-addressed measurement: a one-shot case whose pruned model was already measured is not measured again.

Why: every method's x1 case is the unpruned model fine-tuned with the same recipe and seed, and two methods
that agree on a case hand the harness the same model. Threads are pinned and seeds fixed, so fine-tuning and
evaluating the same tensors again gives the same numbers bit for bit: on the main job 30 of 252 cases are such
repeats (per suite × seed, the x1 cases of five of the six one-shot baselines). What a case's measurements are a function of is its *measurement key*
(:func:`pytest_shrinkbench.identity.measurement_key`), computed after the method's answer was validated,
applied and checked (invariants 1 and 2, the compression, invariants 4 and 5 after pruning: each case checks
its own answer) and before anything is measured.

What is shared: everything measured from that point on (:data:`SHARED_FIELDS`): top-1/top-5 before and after
fine-tuning and the FLOPs fields. ``top1_pre`` is an evaluation of the pruned model, whose every tensor the key
holds, so it is shared too. What stays the case's own: its method, ratio and case key, its answer (params
counts, ``weights_changed``, ``prune_seconds``), its ``finetune_seconds`` (0: it fine-tuned nothing) and
``shared_from``, the case key of the row it took the numbers from.

What is not shared: gradual methods (the method runs during fine-tuning: its answer is not a one-shot mask),
cases timed with ``--shrink-latency`` (their latency is of a model they must build), and anything when reuse
is off (``--shrink-rerun``). On CUDA, kernels may not be bit-reproducible: a shared row then holds the numbers
of one valid computation, as a row reused from the store does.

This module keeps measurements in memory (one process: ``run_case`` in a notebook or a benchmark);
:class:`pytest_shrinkbench.plugin.reuse.SessionMeasurements` adds the session's other workers and the
results store.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

from torch import Tensor, nn

from ..identity import CaseSpec, answer_digest, case_key, measurement_key

# What a one-shot case measures after its key is known. A test checks that it is exactly what measuring writes.
SHARED_FIELDS = ("top1_pre", "top5_pre", "top1", "top5", "perplexity_pre", "perplexity", "flops_dense", "flops_sparse",
                 "speedup", "flops_accounting", "channels_removed")


class SharedMeasurements:
    """Measurements by measurement key, each with the case key of the row that computed it (in this process)."""

    def __init__(self) -> None:
        self.found: dict[str, dict[str, Any]] = {}

    def lock(self, key: str) -> AbstractContextManager[object]:
        """Held while a key is looked up, computed and published: one process here, so nothing to wait for."""
        return nullcontext()

    def find(self, key: str) -> dict[str, Any] | None:
        """The measurements of ``key`` (:data:`SHARED_FIELDS` and ``case_key``), or None."""
        return self.found.get(key)

    def publish(self, key: str, record: dict[str, Any]) -> None:
        self.found[key] = record


@contextmanager
def measuring(shared: SharedMeasurements | None, spec: CaseSpec, model: nn.Module, masks: dict[str, Tensor],
              result: dict[str, Any]) -> Iterator[bool]:
    """Record the case's measurement key in ``result``; yield whether its measurements were taken from another
    case (then ``result`` holds them and the body measures nothing). Otherwise the body measures, and once it
    has (no exception) its measurements are published under the key. The key's lock is held throughout, so
    two workers meeting one key compute it once: the second waits and takes the first's numbers."""
    row = {**spec.as_dict(), **result, "answer_sha256": answer_digest(masks, model.state_dict())}
    key = result["measurement_key"] = measurement_key(row)
    if shared is None:
        yield False
        return
    with shared.lock(key):
        found = shared.find(key)
        if found is not None:
            result.update({f: found[f] for f in SHARED_FIELDS if f in found},
                          finetune_seconds=0.0, shared_from=found["case_key"])
            yield True
            return
        yield False
        shared.publish(key, {**{f: result[f] for f in SHARED_FIELDS if f in result}, "case_key": case_key(row)})
