"""The benchmark test module: one test, parametrized by the plugin into every selected case.

Collected only when ``--shrink-method`` is given. A project may collect it from its own
``benchmarks/`` folder by importing ``test_case`` there (this repository does).
"""

from __future__ import annotations

from pytest_shrinkbench.plugin import ShrinkCase


def test_case(shrink_case: ShrinkCase) -> None:
    """Prune, validate, check invariants, fine-tune under the masks, check again, measure, record."""
    shrink_case.run()
