"""Errors a case can fail with. Each message says what was wrong and where, for the person who wrote the method."""


class CaseFailure(Exception):
    """A case did not produce a valid, honest result (bad masks, broken invariant, crashed method)."""


class MaskError(CaseFailure):
    """The masks a method returned are malformed (invariant 1)."""


class InvariantViolation(CaseFailure):
    """A pruned model used or changed a weight its mask removed (invariants 2–5)."""


class SuiteUnavailable(Exception):
    """A suite cannot run here: its data or base weights are not on this machine. Its cases are
    skipped with this one-line message (what is missing and how to provide it), never failed."""
