"""What crosses from the process that ran a case (an xdist worker) to the controller that records it.

Both travel in ``report.user_properties``, through execnet's serializer: plain builtins only
(:func:`pytest_shrinkbench.results.schema.plain`). The case is attached before anything can fail,
so even a setup error is recorded as that case; the row follows when the case ends.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..results.schema import JUNIT, make_row

CASE_PROPERTY = "shrinkbench_case"
ROW_PROPERTY = "shrinkbench_result"


def attach_case(item: pytest.Item, case: dict[str, Any]) -> None:
    item.user_properties.append((CASE_PROPERTY, make_row(case)))


def attach_row(item: pytest.Item, row: dict[str, Any]) -> None:
    """The case's row, and its JUnit metrics as flat ``shrinkbench.<field>`` properties (JUnit XML shows each)."""
    row = make_row(row)
    item.user_properties.append((ROW_PROPERTY, row))
    item.user_properties.extend((f"shrinkbench.{name}", row[name]) for name in JUNIT if row.get(name) is not None)


def case_of(report: pytest.TestReport) -> dict[str, Any] | None:
    return dict(report.user_properties).get(CASE_PROPERTY)


def row_of(report: pytest.TestReport) -> dict[str, Any]:
    return dict(report.user_properties).get(ROW_PROPERTY, {})
