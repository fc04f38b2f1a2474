"""The leaderboard: results aggregated over seeds per suite × ratio × method, ranked, and rendered."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tabulate import tabulate

from .schema import LEVEL_IN_PROCESS


@dataclass
class Entry:
    """One method at one ratio on one suite, over its seeds."""

    suite: str
    method: str
    ratio: float
    top1: list[float] = field(default_factory=list)
    top1_pre: list[float] = field(default_factory=list)
    top5: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # aligned with the metric lists
    compression: list[float] = field(default_factory=list)
    speedup: list[float] = field(default_factory=list)
    speedup_measured: list[float | None] = field(default_factory=list)  # --shrink-latency: dense ÷ shrunk model's latency
    failed: int = 0
    skipped: int = 0
    rank: int | None = None  # None: not ranked (some seed failed, or nothing passed)
    tied: bool = False  # every ranked method here has the same mean (x1: all are the unpruned model)
    gradual: bool = False  # pruned in several calls: top-1 (pruned) is after the first, mild one
    new_weights: bool = False  # the method returned new values for kept weights (allowed, and shown)
    unverified: bool = False  # a case ran in the in-process debugging mode

    @property
    def label(self) -> str:
        """The method's name as tables show it, with what a reader must know about how it was measured."""
        marks = [m for m, on in (("new weights", self.new_weights), ("unverified", self.unverified)) if on]
        return f"{self.method} ({', '.join(marks)})" if marks else self.method

    @property
    def n(self) -> int:
        return len(self.top1)

    @property
    def status(self) -> str:
        """``*1`` (best), a rank, ``tied``, ``FAILED k/n`` or ``skipped``, as the tables show it."""
        if self.rank is not None:
            return TIED if self.tied else rank_label(self.rank)
        if self.failed:
            return f"FAILED {self.failed}/{self.failed + self.n + self.skipped}"
        return "skipped"

    @property
    def rankable(self) -> bool:
        """Only a method whose every case passed is ranked: an invalid case is never hidden by an average."""
        return self.failed == 0 and self.n > 0


TIED = "tied"
# Shown beside a gradual method's top-1 (pruned), with GRADUAL_NOTE under the table.
GRADUAL_MARK = "†"
GRADUAL_NOTE = (f"{GRADUAL_MARK} gradual method (pruned in several calls during fine-tuning): its top-1 (pruned) is "
                "measured after the first, mild call, not at the final sparsity")


def rank_label(rank: int) -> str:
    """How tables show a rank: the best is starred."""
    return "*1" if rank == 1 else str(rank)


def _rank(group: list, scores: Callable[[Any], list[float]]) -> None:
    """Rank the rankable items of ``group`` by mean score, best first (ties broken by name for order only).

    Equal means share a rank (1, 1, 3, ...). When every ranked item ties (at x1 every method is the
    unpruned model), none is the best: each is marked ``tied`` rather than starred.
    """
    ranked = sorted((item for item in group if item.rankable), key=lambda item: (-statistics.fmean(scores(item)), item.method))
    for position, item in enumerate(ranked, start=1):
        tied = position > 1 and statistics.fmean(scores(item)) == statistics.fmean(scores(ranked[position - 2]))
        item.rank = ranked[position - 2].rank if tied else position
    if len(ranked) > 1 and all(item.rank == 1 for item in ranked):
        for item in ranked:
            item.tied = True


def suite_label(suite: str, weights: str | None) -> str:
    """How tables name a suite: with its checkpoint tag when a suite has several (--shrink-weights)."""
    return f"{suite} [{weights}]" if weights else suite


def aggregate(rows: Iterable[dict[str, Any]]) -> list[Entry]:
    """Group rows by suite × ratio × method and rank methods per suite and ratio by mean top-1."""
    entries: dict[tuple[str, float, str], Entry] = {}
    for row in rows:
        # Cases from different base checkpoints of a suite (--shrink-weights) are never averaged together.
        suite = suite_label(row["suite"], row.get("weights"))
        key = (suite, float(row["ratio"]), row["method"])
        entry = entries.setdefault(key, Entry(suite, row["method"], float(row["ratio"])))
        entry.gradual |= (row.get("prune_steps") or 1) > 1
        entry.new_weights |= bool(row.get("weights_changed"))
        entry.unverified |= row.get("sandbox") == LEVEL_IN_PROCESS
        if row["status"] == "passed":
            entry.top1.append(row["top1"])
            entry.top1_pre.append(row["top1_pre"])
            entry.top5.append(row.get("top5"))
            entry.seeds.append(int(row["seed"]))
            entry.compression.append(row["compression"])
            entry.speedup.append(row["speedup"])
            entry.speedup_measured.append(row.get("speedup_measured"))
        elif row["status"] == "skipped":
            entry.skipped += 1
        else:
            entry.failed += 1
    by_setting: dict[tuple[str, float], list[Entry]] = defaultdict(list)
    for entry in entries.values():
        by_setting[(entry.suite, entry.ratio)].append(entry)
    for group in by_setting.values():
        _rank(group, lambda e: e.top1)
    return sorted(entries.values(), key=lambda e: (e.suite, e.ratio, e.rank or 10**9, e.method))


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` (sample std over seeds; 0 for a single seed). ``None`` values (a speedup whose sparse
    FLOPs are 0: every layer's work removed, the output a constant) are left out."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def compression_text(values: list[float]) -> str:
    """Achieved compression as a ratio to one decimal (31.99 reads ``x32.0``: it is checked to 0.5% of the
    request); the spread over seeds only when it shows at that precision."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"x{statistics.fmean(values):.1f}" + (f" ± {spread:.1f}" if round(spread, 1) else "")


def table(entries: list[Entry]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of one suite's leaderboard, as every output shows it. The measured speedup
    column (dense ÷ physically shrunk model's latency) appears only when some case was timed."""
    measured = any(v is not None for e in entries for v in e.speedup_measured)
    headers = ["ratio", "method", "rank", "top-1 (fine-tuned)", "top-1 (pruned)", "compression", "speedup"]
    headers += ["measured speedup"] if measured else []
    rows = []
    for e in entries:
        pruned = mean_std(e.top1_pre) + (f" {GRADUAL_MARK}" if e.gradual and e.top1_pre else "")
        cells = [f"x{e.ratio:g}", e.label, e.status, mean_std(e.top1), pruned, compression_text(e.compression), mean_std(e.speedup, 2)]
        rows.append(cells + ([mean_std(e.speedup_measured, 2)] if measured else []) + [str(e.n)])
    return headers + ["seeds"], rows


def footnotes(entries: list[Entry]) -> list[str]:
    """What the marks in a leaderboard table mean (only those it uses)."""
    notes = [GRADUAL_NOTE] if any(e.gradual and e.top1_pre for e in entries) else []
    if any(e.tied for e in entries):
        notes.append(f"{TIED}: every ranked method has the same mean top-1 at this ratio (at x1, all are the unpruned model): no best")
    return notes


def render(entries: list[Entry]) -> dict[str, str]:
    """One plain-text table per suite; the best method at each ratio is marked with ``*``."""
    by_suite: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_suite[e.suite].append(e)
    tables = {suite: table(group) for suite, group in by_suite.items()}
    return {suite: tabulate(rows, headers=headers, tablefmt="simple") for suite, (headers, rows) in tables.items()}


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def std(values: list[float]) -> float | None:
    """Sample standard deviation over seeds (0 for one seed, None for none); None values are left out."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Summary:
    """One number per method and suite: the area under top-1 vs log2(compression ratio), per seed.

    The area is divided by the log2 range of the suite's ratios, so it reads as the average top-1
    over the compression range (1 for a method that loses nothing anywhere). Points are the
    requested ratios (the same x for every method), each seed's curve integrated on its own
    (trapezoids), then mean ± std over seeds. With one ratio it is the top-1 at that ratio.
    """

    suite: str
    method: str
    ratios: list[float]
    auc: list[float] = field(default_factory=list)  # one per seed with a passed case at every ratio (none if any failed)
    seeds: list[int] = field(default_factory=list)
    failed: int = 0
    missing: list[float] = field(default_factory=list)  # ratios of the suite with no passed case of this method
    rank: int | None = None
    tied: bool = False  # every ranked method has the same area (e.g. only x1 was run)

    @property
    def n(self) -> int:
        return len(self.auc)

    @property
    def rankable(self) -> bool:
        return self.failed == 0 and not self.missing and self.n > 0

    @property
    def status(self) -> str:
        if self.rank is not None:
            return TIED if self.tied else rank_label(self.rank)
        if self.failed:
            return f"FAILED ({self.failed} case{'s' if self.failed > 1 else ''})"
        if self.missing:
            return "incomplete (no " + ", ".join(f"x{r:g}" for r in self.missing) + ")"
        return "incomplete"


def area(ratios: list[float], top1: list[float]) -> float:
    """Normalized area under top-1 vs log2(ratio) (see :class:`Summary`); ``ratios`` ascending."""
    if len(ratios) == 1:
        return top1[0]
    xs = [math.log2(r) for r in ratios]
    total = sum((xs[i + 1] - xs[i]) * (top1[i] + top1[i + 1]) / 2 for i in range(len(xs) - 1))
    return total / (xs[-1] - xs[0])


def summarize(entries: list[Entry]) -> list[Summary]:
    """Per suite and method, the :class:`Summary`, ranked per suite by mean area (failed or incomplete: unranked)."""
    suite_ratios: dict[str, set[float]] = defaultdict(set)
    by_method: dict[tuple[str, str], dict[float, Entry]] = defaultdict(dict)
    for e in entries:
        suite_ratios[e.suite].add(e.ratio)
        by_method[(e.suite, e.method)][e.ratio] = e
    summaries: list[Summary] = []
    for (suite, method), at in by_method.items():
        ratios = sorted(suite_ratios[suite])
        summary = Summary(suite, method, ratios)
        summary.failed = sum(e.failed for e in at.values())
        summary.missing = [r for r in ratios if r not in at or at[r].n == 0]
        if not summary.missing and not summary.failed:  # a failed method gets no number, as it gets no rank
            per_seed = [dict(zip(at[r].seeds, at[r].top1)) for r in ratios]
            for seed in sorted(set.intersection(*(set(p) for p in per_seed))):
                summary.seeds.append(seed)
                summary.auc.append(area(ratios, [p[seed] for p in per_seed]))
        summaries.append(summary)
    by_suite: dict[str, list[Summary]] = defaultdict(list)
    for summary in summaries:
        by_suite[summary.suite].append(summary)
    for group in by_suite.values():
        _rank(group, lambda s: s.auc)
    return sorted(summaries, key=lambda s: (s.suite, s.rank or 10**9, s.method))


def render_summary(summaries: list[Summary]) -> dict[str, str]:
    """One plain-text table per suite of the one-number summaries."""
    tables: dict[str, list[list[str]]] = defaultdict(list)
    for s in summaries:
        tables[s.suite].append([s.method, s.status, mean_std(s.auc), str(s.n)])
    headers = ["method", "rank", "mean top-1 over log2 compression (area)", "seeds"]
    return {suite: tabulate(rows, headers=headers, tablefmt="simple") for suite, rows in tables.items()}
