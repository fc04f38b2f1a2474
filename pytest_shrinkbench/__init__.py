"""pytest-shrinkbench: pruning methods as test subjects, evaluated the same way every time.

Write a method::

    from pytest_shrinkbench import method

    @method("mine")
    def mine(ctx):
        return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})

and run ``pytest --shrink-method=mine``. Outside pytest, :func:`prune` gives validated masks
for any model, and :func:`load_subject` + :func:`run_case` run one case of a suite. In a project's own
tests, the fixtures ``shrink_subject`` and ``shrink_method`` give a suite's subject and a method as
:class:`ShrinkSubject` and :class:`ShrinkMethod` (docs/testing.md).
"""

from .errors import CaseFailure, InvariantViolation, MaskError
from .identity import CaseSpec
from .measure.shrink import Shrunk, shrink
from .run.case import run_case
from .run.testkit import Pruned, ShrinkMethod, ShrinkSubject
from .sandbox.context import PruneContext
from .sandbox.inprocess import prune
from .sandbox.methods import method
from .suites.recipe import Recipe, ScheduledRecipe
from .suites.registry import SUITES, Suite
from .suites.subject import Subject, load_subject
from .suites.user import suite

__all__ = [
    "CaseFailure",
    "CaseSpec",
    "InvariantViolation",
    "MaskError",
    "PruneContext",
    "Pruned",
    "Recipe",
    "SUITES",
    "ScheduledRecipe",
    "ShrinkMethod",
    "ShrinkSubject",
    "Shrunk",
    "Subject",
    "Suite",
    "load_subject",
    "method",
    "prune",
    "suite",
    "run_case",
    "shrink",
]
