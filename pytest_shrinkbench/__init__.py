"""pytest-shrinkbench: pruning methods as test subjects, evaluated the same way every time.

Write a method::

    from pytest_shrinkbench import method

    @method("mine")
    def mine(ctx):
        return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})

and run ``pytest --shrink-method=mine``. Outside pytest, :func:`prune` gives validated masks
for any model, and :func:`load_subject` + :func:`run_case` run one case of a suite.
"""

from .api import prune
from .case import CaseSpec, run_case
from .context import PruneContext
from .custom_suites import suite
from .errors import CaseFailure, InvariantViolation, MaskError
from .methods import method
from .recipe import Recipe, ScheduledRecipe
from .shrink import Shrunk, shrink
from .subject import Subject, load_subject
from .suites import SUITES, Suite

__all__ = [
    "CaseFailure",
    "CaseSpec",
    "InvariantViolation",
    "MaskError",
    "PruneContext",
    "Recipe",
    "SUITES",
    "ScheduledRecipe",
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
