"""Suites: what every method is measured on — data, model, pinned recipes — and the subject built from them.

Importing this package registers the built-in suites (the embedded digits suites and the vision suites).
"""

from . import digits, pydoc_lm, vision  # noqa: F401  (register the built-in suites)
from .registry import (
    DEFAULT_SUITES,
    SUITES,
    Splits,
    Suite,
    override_suite,
    register_suite,
)

__all__ = ["DEFAULT_SUITES", "SUITES", "Splits", "Suite", "override_suite", "register_suite"]
