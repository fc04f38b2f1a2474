"""The leaderboard: results aggregated over seeds per suite × ratio × method, ranked, and rendered."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from tabulate import tabulate


@dataclass
class Entry:
    """One method at one ratio on one suite, over its seeds."""

    suite: str
    method: str
    ratio: float
    top1: list[float] = field(default_factory=list)
    top1_pre: list[float] = field(default_factory=list)
    compression: list[float] = field(default_factory=list)
    speedup: list[float] = field(default_factory=list)
    failed: int = 0
    skipped: int = 0
    rank: int | None = None  # None: not ranked (some seed failed, or nothing passed)

    @property
    def n(self) -> int:
        return len(self.top1)

    @property
    def rankable(self) -> bool:
        """Only a method whose every case passed is ranked: an invalid case is never hidden by an average."""
        return self.failed == 0 and self.n > 0


def aggregate(rows: Iterable[dict[str, Any]]) -> list[Entry]:
    """Group rows by suite × ratio × method and rank methods per suite and ratio by mean top-1."""
    entries: dict[tuple[str, float, str], Entry] = {}
    for row in rows:
        # Cases from different base checkpoints of a suite (--shrink-weights) are never averaged together.
        suite = f"{row['suite']} [{row['weights']}]" if row.get("weights") else row["suite"]
        key = (suite, float(row["ratio"]), row["method"])
        entry = entries.setdefault(key, Entry(suite, row["method"], float(row["ratio"])))
        if row["status"] == "passed":
            entry.top1.append(row["top1"])
            entry.top1_pre.append(row["top1_pre"])
            entry.compression.append(row["compression"])
            entry.speedup.append(row["speedup"])
        elif row["status"] == "skipped":
            entry.skipped += 1
        else:
            entry.failed += 1
    by_setting: dict[tuple[str, float], list[Entry]] = defaultdict(list)
    for entry in entries.values():
        by_setting[(entry.suite, entry.ratio)].append(entry)
    for group in by_setting.values():
        ranked = sorted((e for e in group if e.rankable), key=lambda e: (-statistics.fmean(e.top1), e.method))
        for position, entry in enumerate(ranked, start=1):
            # Equal means share a rank (1, 1, 3, ...): at x1 every method is the unpruned model.
            tied = position > 1 and statistics.fmean(entry.top1) == statistics.fmean(ranked[position - 2].top1)
            entry.rank = ranked[position - 2].rank if tied else position
    return sorted(entries.values(), key=lambda e: (e.suite, e.ratio, e.rank or 10**9, e.method))


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` (sample std over seeds; 0 for a single seed)."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def render(entries: list[Entry]) -> dict[str, str]:
    """One plain-text table per suite; the best method at each ratio is marked with ``*``."""
    tables: dict[str, list[list[str]]] = defaultdict(list)
    for e in entries:
        if e.rank is not None:
            status = "*1" if e.rank == 1 else str(e.rank)
        elif e.failed:
            status = f"FAILED {e.failed}/{e.failed + e.n + e.skipped}"
        else:
            status = "skipped"
        tables[e.suite].append([
            f"x{e.ratio:g}", e.method, status, mean_std(e.top1), mean_std(e.top1_pre),
            mean_std(e.compression, 2), mean_std(e.speedup, 2), str(e.n),
        ])
    headers = ["ratio", "method", "rank", "top-1 (fine-tuned)", "top-1 (pruned)", "compression", "speedup", "seeds"]
    return {suite: tabulate(rows, headers=headers, tablefmt="simple") for suite, rows in tables.items()}
