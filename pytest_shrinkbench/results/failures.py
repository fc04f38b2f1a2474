"""Why cases failed or were skipped, grouped for reading: one line per distinct reason, not one per case.

A broken method usually fails all its cases for the same reason, and 36 copies of one message hide
the one that differs. Each row keeps its full message (prefixed ``[method=… suite=… ratio=… seed=…]``);
here that label is taken off and the cases sharing a reason are listed together. The terminal
leaderboard, the end-of-session lines and the report all group failures with this module.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from .leaderboard import board_of
from .schema import sort_key

LABEL = re.compile(r"^\[method=[^\]]*\]\s*")


def reason(message: str | None) -> str:
    """A case's message on one line, without the case label (the group names the cases)."""
    text = " ".join((message or "no reason recorded").split())
    return LABEL.sub("", text, count=1)


@dataclass
class Group:
    """Cases of one suite (and one method, for failures) that ended for the same reason."""

    suite: str
    method: str | None
    reason: str
    cases: list[tuple[float, int]] = field(default_factory=list)  # (ratio, seed), in row order

    @property
    def where(self) -> str:
        return cases_text(self.cases)


def group(rows: Iterable[dict[str, Any]], status: str = "failed", by_method: bool = True) -> list[Group]:
    """The rows of ``status`` grouped by suite, method (unless ``by_method`` is off) and reason, in row order."""
    groups: dict[tuple[str, str | None, str], Group] = {}
    for row in sorted((r for r in rows if r.get("status") == status), key=sort_key):
        key = (board_of(row), row["method"] if by_method else None, reason(row.get("message")))
        groups.setdefault(key, Group(*key)).cases.append((float(row["ratio"]), int(row["seed"])))
    return list(groups.values())


def cases_text(cases: list[tuple[float, int]]) -> str:
    """``x2 x4 · seed 0`` when every ratio has the same seeds, else ``x2 · seed 0; x4 · seeds 0 1``."""
    seeds: dict[float, list[int]] = defaultdict(list)
    for ratio, seed in cases:
        seeds[ratio].append(seed)

    def seed_text(found: list[int]) -> str:
        return ("seed " if len(found) == 1 else "seeds ") + " ".join(map(str, sorted(found)))

    if len({tuple(sorted(s)) for s in seeds.values()}) == 1:
        return " ".join(f"x{r:g}" for r in sorted(seeds)) + " · " + seed_text(next(iter(seeds.values())))
    return "; ".join(f"x{r:g} · {seed_text(s)}" for r, s in sorted(seeds.items()))


def failure_lines(rows: Iterable[dict[str, Any]], suite: str) -> list[str]:
    """The terminal leaderboard's "failed cases" lines for one suite (label as the leaderboard names it)."""
    return [f"  {g.method} ({g.where}): {g.reason}" for g in group(rows) if g.suite == suite]


def skip_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per skipped suite and reason: what is missing and how to provide it (the suites' own messages)."""
    return [f"shrinkbench: {len(g.cases)} case{'s' if len(g.cases) > 1 else ''} skipped: {g.reason}"
            for g in group(rows, "skipped", by_method=False)]
