"""The case a test runs, on the process that runs it: measured (or answered from the store) and attached to its item."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ..identity import CaseSpec
from ..measure.latency import latency_inputs, measure_shrunk, semi_structured_timing
from ..results.leaderboard import suite_label
from ..run.case import run_case
from ..run.reuse import SharedMeasurements
from ..sandbox.runner import Sandbox
from ..suites.subject import Subject
from .wire import attach_row


class ShrinkCase:
    """A case bound to its subject and its test item, so its result travels in ``user_properties``.

    ``stored`` is the stored row of the same case key, when reuse is on: :meth:`run` then reports
    that row (flagged ``reused``) instead of running the case again; ``shared``, the session's measurements by
    measurement key (:mod:`pytest_shrinkbench.run.reuse`), when reuse is on. With ``benchmark`` (pytest-benchmark's
    fixture, --shrink-latency) the final pruned model is physically shrunk and timed against
    ``dense_seconds``, the dense reference's median (None when it was not run).
    """

    def __init__(self, spec: CaseSpec, subject: Subject, item: pytest.Item, sandbox: Sandbox, provenance: dict[str, Any],
                 timeout: float, stored: dict[str, Any] | None = None, shared: SharedMeasurements | None = None) -> None:
        self.spec, self.subject, self.item, self.sandbox = spec, subject, item, sandbox
        self.provenance, self.timeout, self.stored, self.shared = provenance, timeout, stored, shared
        self.benchmark: Any = None
        self.latency_batch, self.dense_seconds = 0, None

    def time_with(self, benchmark: Any, latency_batch: int, dense_seconds: float | None) -> None:
        """--shrink-latency: also shrink the final pruned model and time it with pytest-benchmark."""
        self.benchmark, self.latency_batch, self.dense_seconds = benchmark, latency_batch, dense_seconds

    def run(self) -> dict[str, Any]:
        if self.stored is not None:
            row = {**self.stored, "reused": True}
            attach_row(self.item, row)
            return row
        result: dict[str, Any] = {**self.provenance, "reused": False}
        try:
            return run_case(self.spec, self.subject, result, timeout=self.timeout, sandbox=self.sandbox, shared=self.shared,
                            then=self._time_shrunk if self.benchmark is not None else None)
        except Exception as exc:
            result["message"] = str(exc)
            raise
        finally:
            attach_row(self.item, result)

    def _time_shrunk(self, model: torch.nn.Module, result: dict[str, Any]) -> None:
        self.benchmark.group = suite_label(self.spec.suite, self.spec.weights)
        self.benchmark.extra_info.update(self.spec.as_dict(), speedup=result.get("speedup"))
        result.update(measure_shrunk(self.benchmark, model, self.subject, self.latency_batch, self.dense_seconds))
        if result.get("sparsity_pattern") == "2:4":
            result.update(semi_structured_timing(model, latency_inputs(self.subject, self.latency_batch)))
        self.benchmark.extra_info.update(speedup_measured=result["speedup_measured"])
