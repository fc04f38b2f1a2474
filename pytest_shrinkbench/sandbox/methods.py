"""Methods under test: the ``@method`` decorator, discovery, selection, and calling one safely."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from torch import Tensor

from ..errors import CaseFailure, MaskError
from ..registry import Registry, load_entry_points, load_files, origin_of
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

    def source_hash(self) -> str:
        """Hash of the method's module source: a changed method never reuses an old method's numbers."""
        try:
            source = inspect.getsource(inspect.getmodule(self.fn) or self.fn)
        except (OSError, TypeError):
            source = repr(self.fn)
        return hashlib.sha256(source.encode()).hexdigest()[:12]


METHODS: Registry[Method] = Registry("method")


def method(name: str, *, baseline: bool = False, steps: int = 1, regrowth: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn(ctx) -> masks`` (or ``(masks, new_weights)``) as the method ``name``.

    Masks are ``{parameter name: bool tensor}`` with ``True`` = keep, one per ``ctx.prunable``.
    ``steps > 1`` makes the method gradual: the harness calls it ``steps`` times within the suite's
    one fine-tuning budget, before fine-tuning and then after optimizer steps spread over the first
    half of it (so the final masks are fine-tuned for the second half), each time with
    ``ctx.compression`` raised along Zhu & Gupta's cubic schedule up to the requested ratio
    (``ctx.step``/``ctx.steps`` say which call it is; ``pytest_shrinkbench.run.gradual.gradual_schedule`` has the timing).
    Unless ``regrowth=True``, a weight pruned once must stay pruned.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"method {name!r}: steps must be an int >= 1, got {steps!r}")

    def register(fn: MethodFn) -> MethodFn:
        METHODS.add(name, Method(name, fn, baseline, steps, regrowth), origin=origin_of(fn))
        return fn

    return register


def discover(folders: Iterable[Path]) -> dict[Path, str]:
    """Register methods of installed packages (entry points), then of ``*.py`` files in ``folders``.

    Returns the files that failed to import (path → error): one broken file must not take the
    other methods down with it.
    """
    _installed_modules.update(load_entry_points(ENTRY_POINT_GROUP))
    return load_files([f for f in folders if f.is_dir()], namespace="shrinkbench_methods")


_installed_modules: set[str] = set()


def forget_session_methods() -> None:
    """Drop methods registered by a session's files and conftests, keep those of installed packages.

    Installed modules are imported once per process and never re-register, so they must stay;
    a project's own methods must not leak into the next session run in the same process.
    """
    METHODS.retain(lambda m: any(m.fn.__module__ == mod or m.fn.__module__.startswith(mod + ".") for mod in _installed_modules))


def select(spec: str) -> list[str]:
    """Names chosen by ``--shrink-method``: a comma list, ``all`` or ``baselines`` (mixable), sorted."""
    chosen: set[str] = set()
    for word in (w.strip() for w in spec.split(",")):
        if word == "all":
            chosen.update(METHODS.names())
        elif word == "baselines":
            chosen.update(n for n in METHODS.names() if METHODS.get(n).baseline)
        elif word:
            METHODS.get(word)  # raises with the known names
            chosen.add(word)
    if not chosen:
        raise KeyError(f"no method selected by {spec!r}; known: {', '.join(METHODS.names()) or 'none'}")
    return sorted(chosen)


def call(m: Method, ctx: PruneContext) -> tuple[Masks, dict[str, Tensor]]:
    """Run a method and split what it returned into masks and new weights.

    Any exception inside the method becomes a :class:`CaseFailure` naming the method, with the
    original exception chained so its traceback is still shown.
    """
    try:
        out = m.fn(ctx)
    except CaseFailure:
        raise  # the harness's own verdict (e.g. a time limit) reached inside the method
    except Exception as exc:
        raise CaseFailure(f"method {m.name!r} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        masks, weights = out
        return masks, dict(weights)
    if isinstance(out, Mapping):
        return dict(out), {}
    raise MaskError(f"method {m.name!r} returned {type(out).__name__}; expected a dict of masks or (masks, new_weights)")
