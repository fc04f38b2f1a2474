"""Methods under test: the ``@method`` decorator and the registry it fills (in whichever process imports the method)."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

from torch import Tensor

from ..prunable import parse_pattern
from ..registry import Registry, load_entry_points, origin_of
from .context import PruneContext

ENTRY_POINT_GROUP = "pytest_shrinkbench.methods"

Masks = dict[str, Tensor]
MethodFn = Callable[[PruneContext], "Masks | tuple[Masks, Mapping[str, Tensor]]"]


@dataclass(frozen=True)
class Method:
    """A registered pruning method. ``baseline`` methods are selected by ``--shrink-method=baselines``."""

    name: str
    fn: MethodFn
    baseline: bool = False
    steps: int = 1  # > 1: gradual, called again during fine-tuning (run.gradual.gradual_schedule)
    regrowth: bool = False  # may a later step keep a weight an earlier step pruned?
    pattern: str | None = None  # "N:M": N kept of every M consecutive weights along each weight's input dimension
    calibrated: bool = False  # needs ctx.calibration: its cases skip on suites that declare no calibration


METHODS: Registry[Method] = Registry("method")


def source_hash(fn: Callable) -> str:
    """Hash of a method's module source: a changed method never reuses an old method's numbers."""
    try:
        source = inspect.getsource(inspect.getmodule(fn) or fn)
    except (OSError, TypeError):
        source = repr(fn)
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def method(name: str, *, baseline: bool = False, steps: int = 1, regrowth: bool = False,
           pattern: str | None = None, calibrated: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(ctx) -> masks`` (or ``(masks, new_weights)``) as the method ``name``.

    Masks are ``{parameter name: bool tensor}`` with ``True`` = keep, one per ``ctx.prunable``.
    ``steps > 1`` makes the method gradual: the harness calls it ``steps`` times within the suite's
    one fine-tuning budget, before fine-tuning and then after optimizer steps spread over the first
    half of it (so the final masks are fine-tuned for the second half), each time with
    ``ctx.compression`` raised along Zhu & Gupta's cubic schedule up to the requested ratio
    (``ctx.step``/``ctx.steps`` say which call it is; ``pytest_shrinkbench.run.gradual.gradual_schedule`` has the timing).
    Unless ``regrowth=True``, a weight pruned once must stay pruned.
    ``pattern="2:4"`` declares N:M semi-structured sparsity: the harness checks every mask against it, and
    runs the method only at the ratio the pattern implies (M / N on the layers it covers: x2 for 2:4).
    ``calibrated=True`` says the method needs ``ctx.calibration`` (Wanda, SparseGPT): on a suite that declares
    no calibration its cases are skipped with that reason instead of failing.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"method {name!r}: steps must be an int >= 1, got {steps!r}")
    try:
        parse_pattern(pattern)
    except ValueError as exc:
        raise ValueError(f"method {name!r}: {exc}") from None
    if pattern is not None and steps > 1:
        raise ValueError(f"method {name!r}: a pattern method is one-shot (steps=1): its pattern fixes its one ratio")

    def register(fn: MethodFn) -> MethodFn:
        METHODS.add(name, Method(name, fn, baseline, steps, regrowth, pattern, calibrated), origin=origin_of(fn))
        return fn

    return register


def load_installed() -> None:
    """Import the method modules installed packages list under ``pytest_shrinkbench.methods``, in this process
    (the in-process debugging mode and the notebook API do; a benchmark session does it in a child)."""
    _installed_modules.update(load_entry_points(ENTRY_POINT_GROUP))


_installed_modules: set[str] = set()


def forget_session_methods() -> None:
    """Drop methods registered by a session's files and conftests, keep those of installed packages.

    Installed modules are imported once per process and never re-register, so they must stay;
    a project's own methods must not leak into the next session run in the same process.
    """
    METHODS.retain(lambda m: any(m.fn.__module__ == mod or m.fn.__module__.startswith(mod + ".") for mod in _installed_modules))
