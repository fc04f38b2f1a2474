"""What a suite's numbers are: its metrics, each with a direction, and the basis its compression is counted on.

Shared by the suites (which declare their metrics), the runner (which fills the rows) and everything built
from rows (ranking, the area summary, plots, the report and the gate), so that "better" has one meaning
everywhere: a top-1 that rises is better, a perplexity that falls is. It imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Metric:
    """One metric a suite may declare.

    ``higher_is_better``: its direction. ``log_axis``: plots draw it on a log scale. ``percent``: a fraction
    that tables and plots show as a percentage (top-1 0.912 reads 91.2). ``tolerance``: what the gate's
    tolerance means for it: ``points`` (an absolute change, in percentage points of the fraction) or
    ``percent`` (a change relative to the baseline's value, in %).
    """

    name: str
    label: str  # how tables, axes and the gate name it
    higher_is_better: bool
    log_axis: bool
    percent: bool
    tolerance: str
    doc: str

    @property
    def direction(self) -> str:
        """``higher`` or ``lower``: which way is better."""
        return "higher" if self.higher_is_better else "lower"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("top1", "top-1", True, False, True, "points",
           "fraction of held-out examples whose top prediction is right (a language model: of next tokens)"),
    Metric("top5", "top-5", True, False, True, "points", "fraction of held-out examples whose label is among the 5 top predictions"),
    Metric("perplexity", "perplexity", False, True, False, "percent",
           "exp of the mean next-token negative log-likelihood over the held-out windows"),
)}
DEFAULT = "top1"  # the ranking metric of every suite that declares none, and of rows recorded before metrics had a name

# What a suite's compression ratio is counted on (the ``compression_basis`` row field). ``model``: all parameters ÷
# non-zero parameters (ShrinkBench's convention, every vision suite). ``prunable``: the prunable weights ÷ their
# non-zero count (language-model papers: x2 = 50% of the pruned linears, embeddings and lm_head untouched).
BASIS_MODEL = "model"
BASIS_PRUNABLE = "prunable"
BASES = (BASIS_MODEL, BASIS_PRUNABLE)


def metric(name: str | None) -> Metric:
    """The metric called ``name`` (``None``: :data:`DEFAULT`, as on rows recorded before metrics had a name)."""
    try:
        return METRICS[name or DEFAULT]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def direction(name: str | None) -> str:
    """``higher`` or ``lower``: which way metric ``name`` is better."""
    return metric(name).direction


def better(a: float, b: float, name: str | None) -> bool:
    """Whether ``a`` is strictly better than ``b`` on metric ``name``."""
    return a > b if metric(name).higher_is_better else a < b


def order_key(value: float, name: str | None) -> float:
    """A sort key putting the best value of metric ``name`` first."""
    return -value if metric(name).higher_is_better else value


def ranking_metric(declared: Sequence[str]) -> str:
    """The metric a suite is ranked by: the first it declares (checked to be known); none declared: :data:`DEFAULT`."""
    for name in declared:
        metric(name)
    return declared[0] if declared else DEFAULT


def change(base: float, now: float, name: str | None) -> float:
    """``now`` against ``base`` in the unit of metric ``name``'s tolerance, as a fraction: the absolute difference
    (``points``: 0.01 is 1 percentage point) or the difference relative to ``base`` (``percent``: 0.01 is 1%)."""
    return now - base if metric(name).tolerance == "points" else (now - base) / base


def spread(std: float, base: float, name: str | None) -> float:
    """A standard deviation over seeds in the same unit as :func:`change`."""
    return std if metric(name).tolerance == "points" else std / base


def markdown_table() -> str:
    """The metrics as a Markdown table (docs/results.md holds it; a test keeps the two equal)."""
    lines = ["| metric | better | plot axis | gate tolerance | meaning |", "| --- | --- | --- | --- | --- |"]
    units = {"points": "percentage points", "percent": "percent of the baseline's value"}
    lines += [f"| `{m.name}` | {m.direction} | {'log' if m.log_axis else 'linear'} | {units[m.tolerance]} | {m.doc} |"
              for m in METRICS.values()]
    return "\n".join(lines)
