"""The benchmark test module: the cases, parametrized by the plugin, and the dense latency references.

Collected only when ``--shrink-method`` is given. A project may collect it from its own
``benchmarks/`` folder by importing both tests there (this repository does).
"""

from __future__ import annotations

from typing import Callable

from pytest_shrinkbench.plugin.runner import ShrinkCase


def test_dense_latency(shrink_reference: Callable[[], float]) -> None:
    """Time a suite's dense base model (only with --shrink-latency): the reference of its cases' measured speedup."""
    assert shrink_reference() > 0


def test_case(shrink_case: ShrinkCase) -> None:
    """Prune, validate, check invariants, fine-tune under the masks, check again, measure, record."""
    shrink_case.run()
