"""The leaderboard: results aggregated over seeds per suite × ratio × method, ranked, and rendered."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tabulate import tabulate

from .. import metrics
from .schema import LEVEL_IN_PROCESS


@dataclass
class Entry:
    """One method at one ratio on one suite (and protocol), over its seeds."""

    suite: str  # the board: suite, checkpoint tag and protocol (see board_label)
    method: str
    ratio: float
    top1: list[float] = field(default_factory=list)
    top1_pre: list[float] = field(default_factory=list)
    top5: list[float] = field(default_factory=list)
    top5_pre: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # aligned with the metric lists
    compression: list[float] = field(default_factory=list)
    perplexity: list[float | None] = field(default_factory=list)  # language-model suites (None elsewhere)
    perplexity_pre: list[float | None] = field(default_factory=list)
    compression_prunable: list[float | None] = field(default_factory=list)
    speedup: list[float] = field(default_factory=list)
    speedup_measured: list[float | None] = field(default_factory=list)  # --shrink-latency: dense ÷ shrunk model's latency
    failed: int = 0
    skipped: int = 0
    rank: int | None = None  # None: not ranked (some seed failed, or nothing passed)
    tied: bool = False  # every ranked method here has the same mean (x1: all are the unpruned model)
    gradual: bool = False  # pruned in several calls: top-1 (pruned) is after the first, mild one
    new_weights: bool = False  # the method returned new values for kept weights (allowed, and shown)
    unverified: bool = False  # a case ran in the in-process debugging mode
    metric: str = metrics.DEFAULT  # the suite's ranking metric (pytest_shrinkbench.metrics)
    basis: str = metrics.BASIS_MODEL  # what the suite's ratio counts: the whole model or its prunable weights
    setting: str = ""  # the suite and checkpoint tag alone (suite_label), without the protocol
    protocol: dict[str, Any] | None = None  # what the numbers depend on beyond the case (language models)
    protocol_hash: str | None = None

    @property
    def score(self) -> list[float]:
        """The ranking metric's values over seeds."""
        return getattr(self, self.metric)

    @property
    def score_pre(self) -> list[float]:
        """The ranking metric after pruning, before fine-tuning."""
        return getattr(self, f"{self.metric}_pre")

    @property
    def compressions(self) -> list[float | None]:
        """The achieved compression on the suite's basis."""
        return self.compression_prunable if self.basis == metrics.BASIS_PRUNABLE else self.compression

    @property
    def label(self) -> str:
        """The method's name as tables show it, with what a reader must know about how it was measured."""
        marks = [m for m, on in (("new weights", self.new_weights), ("unverified", self.unverified)) if on]
        return f"{self.method} ({', '.join(marks)})" if marks else self.method

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def status(self) -> str:
        """``*1`` (best), a rank, ``tied``, ``FAILED k/n`` or ``skipped``, as the tables show it."""
        if self.rank is not None:
            return TIED if self.tied else rank_label(self.rank)
        if self.failed:
            return f"FAILED {self.failed}/{self.failed + self.n + self.skipped}"
        return f"no {metrics.metric(self.metric).label}" if self.n else "skipped"

    @property
    def rankable(self) -> bool:
        """Only a method whose every case passed, each with a value of the ranking metric, is ranked: an invalid case
        is never hidden by an average."""
        return self.failed == 0 and self.n > 0 and None not in self.score


TIED = "tied"
# Shown beside a gradual method's top-1 (pruned), with GRADUAL_NOTE under the table.
GRADUAL_MARK = "†"
GRADUAL_NOTE = (f"{GRADUAL_MARK} gradual method (pruned in several calls during fine-tuning): its top-1 (pruned) is "
                "measured after the first, mild call, not at the final sparsity")


def rank_label(rank: int) -> str:
    """How tables show a rank: the best is starred."""
    return "*1" if rank == 1 else str(rank)


def _rank(group: list, scores: Callable[[Any], list[float]], metric: str) -> None:
    """Rank the rankable items of ``group`` by mean score, best first in ``metric``'s direction (ties broken by name
    for order only).

    Equal means share a rank (1, 1, 3, ...). When every ranked item ties (at x1 every method is the
    unpruned model), none is the best: each is marked ``tied`` rather than starred.
    """
    ranked = sorted((item for item in group if item.rankable),
                    key=lambda item: (metrics.order_key(statistics.fmean(scores(item)), metric), item.method))
    for position, item in enumerate(ranked, start=1):
        tied = position > 1 and statistics.fmean(scores(item)) == statistics.fmean(scores(ranked[position - 2]))
        item.rank = ranked[position - 2].rank if tied else position
    if len(ranked) > 1 and all(item.rank == 1 for item in ranked):
        for item in ranked:
            item.tied = True


def suite_label(suite: str, weights: str | None) -> str:
    """How tables name a suite: with its checkpoint tag when a suite has several (--shrink-weights)."""
    return f"{suite} [{weights}]" if weights else suite


def board_label(setting: str, protocol_hash: str | None) -> str:
    """A leaderboard's name: the suite (with its checkpoint tag), and its protocol when it has one. Rows of two
    protocols are two leaderboards, never one."""
    return f"{setting} [protocol {protocol_hash}]" if protocol_hash else setting


def board_of(row: dict[str, Any]) -> str:
    """The leaderboard a row belongs to (:func:`board_label` of its suite, checkpoint tag and protocol)."""
    return board_label(suite_label(row["suite"], row.get("weights")), row.get("protocol_hash"))


DESCRIBING = {"metric": "metric", "basis": "compression_basis", "protocol": "protocol"}  # Entry attribute: row field


def aggregate(rows: Iterable[dict[str, Any]]) -> list[Entry]:
    """Group rows by suite × protocol × ratio × method and rank methods per suite, protocol and ratio by the mean
    of the suite's ranking metric, best first in its direction."""
    entries: dict[tuple[str, float, str], Entry] = {}
    described: dict[str, dict[str, Any]] = defaultdict(dict)  # per board: its metric, basis and protocol, as rows name them
    for row in rows:
        # Cases from different base checkpoints of a suite (--shrink-weights), or measured by different protocols,
        # are never averaged together.
        suite = board_of(row)
        key = (suite, float(row["ratio"]), row["method"])
        entry = entries.setdefault(key, Entry(suite, row["method"], float(row["ratio"]), setting=suite_label(row["suite"], row.get("weights")),
                                              protocol_hash=row.get("protocol_hash")))
        described[suite].update({name: row[field] for name, field in DESCRIBING.items() if row.get(field) is not None})
        entry.gradual |= (row.get("prune_steps") or 1) > 1
        entry.new_weights |= bool(row.get("weights_changed"))
        entry.unverified |= row.get("sandbox") == LEVEL_IN_PROCESS
        if row["status"] == "passed":
            entry.top1.append(row["top1"])
            entry.top1_pre.append(row["top1_pre"])
            entry.top5.append(row.get("top5"))
            entry.top5_pre.append(row.get("top5_pre"))
            entry.seeds.append(int(row["seed"]))
            entry.compression.append(row["compression"])
            entry.speedup.append(row["speedup"])
            entry.speedup_measured.append(row.get("speedup_measured"))
            entry.perplexity.append(row.get("perplexity"))
            entry.perplexity_pre.append(row.get("perplexity_pre"))
            entry.compression_prunable.append(row.get("compression_prunable"))
        elif row["status"] == "skipped":
            entry.skipped += 1
        else:
            entry.failed += 1
    by_setting: dict[tuple[str, float], list[Entry]] = defaultdict(list)
    for entry in entries.values():
        # A row that failed before it was measured may not say how its suite is measured: its board's other rows do.
        for name, value in described[entry.suite].items():
            setattr(entry, name, value)
        entry.metric = metrics.metric(entry.metric).name
        by_setting[(entry.suite, entry.ratio)].append(entry)
    for group in by_setting.values():
        _rank(group, lambda e: e.score, group[0].metric)
    return sorted(entries.values(), key=lambda e: (e.suite, e.ratio, e.rank or 10**9, e.method))


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` (sample std over seeds; 0 for a single seed). ``None`` values (a speedup whose sparse
    FLOPs are 0: every layer's work removed, the output a constant) are left out."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def compression_text(values: list[float | None]) -> str:
    """Achieved compression as a ratio to one decimal (31.99 reads ``x32.0``: it is checked to 0.5% of the
    request); the spread over seeds only when it shows at that precision."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"x{statistics.fmean(values):.1f}" + (f" ± {spread:.1f}" if round(spread, 1) else "")


def board_metric(entries: list[Entry]) -> metrics.Metric:
    """The metric one leaderboard (one suite and protocol) is ranked by."""
    return metrics.metric(entries[0].metric if entries else None)


def table(entries: list[Entry]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of one suite's leaderboard, as every output shows it. The measured speedup
    column (dense ÷ physically shrunk model's latency) appears only when some case was timed. A suite
    ranked by another metric than top-1 shows it first, then top-1; one whose ratio counts its prunable
    weights shows that compression, then the whole model's."""
    measured = any(v is not None for e in entries for v in e.speedup_measured)
    metric = board_metric(entries)
    other = metric.name != metrics.DEFAULT
    prunable = any(e.basis == metrics.BASIS_PRUNABLE for e in entries)
    scores = [f"{metric.label} (final)", f"{metric.label} (pruned)", "top-1 (final)"] if other else ["top-1 (fine-tuned)", "top-1 (pruned)"]
    sizes = ["compression (prunable)", "compression (model)"] if prunable else ["compression"]
    headers = ["ratio", "method", "rank", *scores, *sizes, "speedup"] + (["measured speedup"] if measured else [])
    rows = []
    for e in entries:
        pruned = mean_std(e.score_pre) + (f" {GRADUAL_MARK}" if e.gradual and e.score_pre else "")
        cells = [f"x{e.ratio:g}", e.label, e.status, mean_std(e.score), pruned] + ([mean_std(e.top1)] if other else [])
        cells += [compression_text(e.compressions)] + ([compression_text(e.compression)] if prunable else [])
        rows.append(cells + [mean_std(e.speedup, 2)] + ([mean_std(e.speedup_measured, 2)] if measured else []) + [str(e.n)])
    return headers + ["seeds"], rows


def footnotes(entries: list[Entry]) -> list[str]:
    """What the marks in a leaderboard table mean (only those it uses)."""
    notes = [GRADUAL_NOTE] if any(e.gradual and e.score_pre for e in entries) else []
    if any(e.tied for e in entries):
        notes.append(f"{TIED}: every ranked method has the same mean {board_metric(entries).label} at this ratio "
                     "(at x1, all are the unpruned model): no best")
    return notes


def heading(entries: list[Entry]) -> list[str]:
    """What a reader must know before one leaderboard's table when its suite departs from the defaults (ranked by
    top-1, compression of the whole model, no protocol): the ranking metric and its direction, the compression
    basis, and the protocol its numbers were measured by. A default suite's leaderboard reads as it always did."""
    if not entries:
        return []
    first, metric = entries[0], board_metric(entries)
    lines = [f"ranked by {metric.label}, {metric.direction} is better"] if metric.name != metrics.DEFAULT else []
    if first.basis == metrics.BASIS_PRUNABLE:
        lines.append("compression basis: the prunable weights (ratio = prunable weights ÷ their non-zero count; x2: half "
                     "of them zero); compression (model) counts all parameters")
    elif lines or first.protocol_hash:
        lines.append("compression basis: the whole model (all parameters ÷ non-zero parameters)")
    if first.protocol_hash:
        lines.append(f"protocol {first.protocol_hash}: {protocol_text(first.protocol)}")
    return lines


PROTOCOL_VALUE_CHARS = 12  # a protocol's hashes (the corpus's sha256) are shown by their prefix


def protocol_text(protocol: dict[str, Any] | None) -> str:
    """A protocol on one line, its fields in name order (long values, such as a corpus's sha256, by their prefix)."""
    if not protocol:
        return "-"

    def shown(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ", ".join(map(shown, value)) or "none"
        text = str(value)
        return text[:PROTOCOL_VALUE_CHARS] + "…" if len(text) > 2 * PROTOCOL_VALUE_CHARS and " " not in text else text

    return " · ".join(f"{name} {shown(value)}" for name, value in sorted(protocol.items()))


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
    """One number per method and suite: the area under the suite's ranking metric (top-1 unless it declares
    another) vs log2(compression ratio), per seed.

    The area is divided by the log2 range of the suite's ratios, so it reads as the average metric
    over the compression range (a top-1 of 1 for a method that loses nothing anywhere). Points are the
    requested ratios (the same x for every method), each seed's curve integrated on its own
    (trapezoids), then mean ± std over seeds. With one ratio it is the metric at that ratio. It is
    ranked in the metric's direction: the lowest mean perplexity over the range is best.
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
    metric: str = metrics.DEFAULT

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


def area(ratios: list[float], values: list[float]) -> float:
    """Normalized area under a metric vs log2(ratio) (see :class:`Summary`); ``ratios`` ascending."""
    if len(ratios) == 1:
        return values[0]
    xs = [math.log2(r) for r in ratios]
    total = sum((xs[i + 1] - xs[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(xs) - 1))
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
        summary = Summary(suite, method, ratios, metric=next(iter(at.values())).metric)
        summary.failed = sum(e.failed for e in at.values())
        summary.missing = [r for r in ratios if r not in at or at[r].n == 0 or None in at[r].score]
        if not summary.missing and not summary.failed:  # a failed method gets no number, as it gets no rank
            per_seed = [dict(zip(at[r].seeds, at[r].score)) for r in ratios]
            for seed in sorted(set.intersection(*(set(p) for p in per_seed))):
                summary.seeds.append(seed)
                summary.auc.append(area(ratios, [p[seed] for p in per_seed]))
        summaries.append(summary)
    by_suite: dict[str, list[Summary]] = defaultdict(list)
    for summary in summaries:
        by_suite[summary.suite].append(summary)
    for group in by_suite.values():
        _rank(group, lambda s: s.auc, group[0].metric)
    return sorted(summaries, key=lambda s: (s.suite, s.rank or 10**9, s.method))


def render_summary(summaries: list[Summary]) -> dict[str, str]:
    """One plain-text table per suite of the one-number summaries."""
    tables: dict[str, list[list[str]]] = defaultdict(list)
    labels: dict[str, str] = {}
    for s in summaries:
        tables[s.suite].append([s.method, s.status, mean_std(s.auc), str(s.n)])
        labels[s.suite] = metrics.metric(s.metric).label
    return {suite: tabulate(rows, headers=["method", "rank", f"mean {labels[suite]} over log2 compression (area)", "seeds"],
                            tablefmt="simple") for suite, rows in tables.items()}
