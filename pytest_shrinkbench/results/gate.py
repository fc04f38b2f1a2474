"""Regression gates: save a leaderboard's expected metric per method × suite × ratio, compare a run to it.

One-sided, like an accuracy gate must be, in the direction of the suite's ranking metric
(:mod:`pytest_shrinkbench.metrics`): a mean top-1 that falls, or a mean perplexity that rises, by more
than the tolerance is a regression (the session or the report command fails); a change the other way
is reported as an improvement and never fails. The allowed change is ``max(tolerance / 100, stds × std)``
in the metric's tolerance unit: for top-1, ``tolerance`` is in percentage points and std is absolute;
for perplexity, ``tolerance`` is in percent of the baseline's value and std is relative to it. std is
the larger of the baseline's and the run's standard deviation over seeds (so noisy cases need a
bigger change to count). Entries in only one of the two are listed (missing / new) and do not fail,
but an entry whose baseline was measured by another protocol (a language model's context length,
calibration, corpus, ...) is refused, naming the fields that differ, and fails: its numbers are not
comparable, and a gate that compared nothing must not pass.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .. import metrics
from ..identity import protocol_differences
from .leaderboard import Entry, board_label, board_of, mean, std
from .schema import LEVEL_IN_PROCESS, REQUIRABLE, confined_at_least, walls_cover

BASELINE_FORMAT = "pytest-shrinkbench baseline"
BASELINE_VERSION = 1
DEFAULT_TOLERANCE_POINTS = 1.0
DEFAULT_TOLERANCE_STDS = 2.0


@dataclass(frozen=True)
class Expected:
    """A baseline value: the mean of the suite's ranking metric (top-1 after fine-tuning unless the suite declares
    another) over ``n`` seeds, its std, and the protocol it was measured by, if any."""

    suite: str  # the leaderboard's name (leaderboard.board_label)
    method: str
    ratio: float
    value: float
    std: float
    n: int
    metric: str = metrics.DEFAULT
    protocol_hash: str | None = None
    protocol: dict[str, Any] | None = None

    @property
    def setting(self) -> str:
        """The suite and checkpoint tag, without the protocol."""
        return self.suite.removesuffix(board_label("", self.protocol_hash))


def baseline_document(entries: list[Entry], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The baseline file's content: every ranked entry (failed or skipped ones are not expected values)."""
    setups: dict[str, dict[str, list[str]]] = {}
    for row in rows or []:
        suite = setups.setdefault(row["suite"], {"base_sha256": [], "recipe_hash": [], "torch": [], "walls": []})
        for name in suite:
            if row.get(name) is not None and row[name] not in suite[name]:
                suite[name].append(row[name])
    document = {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": setups,
        "entries": [_expectation(e) for e in sorted(entries, key=lambda e: (e.suite, e.method, e.ratio)) if e.rankable],
    }
    protocols = {e.protocol_hash: e.protocol for e in entries if e.rankable and e.protocol_hash}
    return {**document, "protocols": protocols} if protocols else document


def _expectation(e: Entry) -> dict[str, Any]:
    """A baseline entry: the metric's mean under its own name (``top1`` entries read as they always did)."""
    record = {"suite": e.suite, "method": e.method, "ratio": e.ratio, e.metric: mean(e.score), "std": std(e.score), "n": e.n}
    if e.metric != metrics.DEFAULT:
        record["metric"] = e.metric
    return {**record, "protocol_hash": e.protocol_hash} if e.protocol_hash else record


def save_baseline(path: Path, entries: list[Entry], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the baseline atomically (a reader never sees half a file); return what was written."""
    document = baseline_document(entries, rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return document


def load_baseline(path: Path) -> tuple[list[Expected], dict[str, Any]]:
    """The expected values of a baseline file, and its setup record. Raises ``ValueError`` on a bad file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read baseline {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path} is not a {BASELINE_FORMAT} file (write one with --shrink-save-baseline)")
    protocols = document.get("protocols") or {}
    try:
        expected = []
        for e in document["entries"]:
            metric = metrics.metric(e.get("metric")).name
            expected.append(Expected(str(e["suite"]), str(e["method"]), float(e["ratio"]), float(e[metric]), float(e.get("std") or 0.0),
                                     int(e["n"]), metric, e.get("protocol_hash"), protocols.get(e.get("protocol_hash"))))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed baseline entry ({type(exc).__name__}: {exc})") from exc
    return expected, document.get("setup", {})


@dataclass
class Comparison:
    """One method × suite × ratio, in the baseline, in the run, or both."""

    suite: str
    method: str
    ratio: float
    expected: Expected | None
    entry: Entry | None
    verdict: str  # regression | failed | unverified | refused | improved | unchanged | missing | new
    change: float | None = None  # run mean against the baseline's, as a fraction in the metric's unit (metrics.change)
    allowed: float | None = None  # the worsening that still passes (fraction, same unit)
    reason: str | None = None  # why a comparison was refused

    @property
    def fails(self) -> bool:
        return self.verdict in ("regression", "failed", "unverified", "refused")

    @property
    def metric(self) -> metrics.Metric:
        return metrics.metric(self.expected.metric if self.expected else self.entry.metric if self.entry else None)


@dataclass
class GateResult:
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS
    tolerance_stds: float = DEFAULT_TOLERANCE_STDS

    def having(self, *verdicts: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in verdicts]

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.fails]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


def compare(
    entries: list[Entry],
    expected: list[Expected],
    *,
    points: float = DEFAULT_TOLERANCE_POINTS,
    stds: float = DEFAULT_TOLERANCE_STDS,
    setup: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> GateResult:
    """Compare a run's leaderboard entries to a baseline's expected values (see the module docstring)."""
    result = GateResult(tolerance_points=points, tolerance_stds=stds)
    current = {(e.suite, e.method, e.ratio): e for e in entries}
    # A method run in the debugging mode measured itself in the harness's process: it is never compared.
    unverified = {(board_of(r), r["method"], float(r["ratio"])) for r in rows or []
                  if r.get("sandbox") == LEVEL_IN_PROCESS}
    wanted = {(x.suite, x.method, x.ratio): x for x in expected}
    for key in sorted(current.keys() | wanted.keys()):
        entry, base = current.get(key), wanted.get(key)
        comparison = Comparison(*key, expected=base, entry=entry, verdict="")
        if base is None:
            comparison.verdict = "new"
        elif entry is None or (entry.n == 0 and not entry.failed):
            comparison.verdict = "missing"
        elif entry.failed:
            comparison.verdict = "failed"
        elif key in unverified:
            comparison.verdict = "unverified"
        elif entry.metric != base.metric:
            comparison.verdict = "refused"
            comparison.reason = f"the baseline is ranked by {base.metric}, this run by {entry.metric}"
        else:
            comparison.change = metrics.change(base.value, mean(entry.score), base.metric)
            comparison.allowed = max(points / 100, stds * metrics.spread(max(base.std, std(entry.score)), base.value, base.metric))
            worse = -comparison.change if metrics.metric(base.metric).higher_is_better else comparison.change
            comparison.verdict = "regression" if worse > comparison.allowed else "improved" if worse < -comparison.allowed else "unchanged"
        result.comparisons.append(comparison)
    _refuse_other_protocols(result)
    if setup and rows:
        seen: dict[str, dict[str, set]] = {}
        for row in rows:
            for name in ("base_sha256", "recipe_hash", "torch", "walls"):
                if row.get(name) is not None:
                    seen.setdefault(row["suite"], {}).setdefault(name, set()).add(row[name])
        for suite, names in sorted(seen.items()):
            for name, values in sorted(names.items()):
                recorded = set(setup.get(suite, {}).get(name, []))
                if recorded and values != recorded:
                    result.notes.append(
                        f"{suite}: the baseline was recorded with {name} {', '.join(sorted(recorded))}, this run has "
                        f"{', '.join(sorted(values))}: differences may come from the setup, not the methods"
                    )
    return result


def _refuse_other_protocols(result: GateResult) -> None:
    """Join each entry new in the run to the baseline's entry of the same suite, method and ratio measured by another
    protocol: one refused comparison naming the protocol fields that differ, instead of a 'new' and a 'missing'."""
    missing = {(c.expected.setting, c.method, c.ratio): c for c in result.having("missing") if c.entry is None}
    for comparison in result.having("new"):
        other = missing.pop((comparison.entry.setting, comparison.method, comparison.ratio), None)
        if other is None:
            continue
        base, entry = other.expected, comparison.entry
        differ = protocol_differences(base.protocol, entry.protocol) if base.protocol is not None else []
        fields = ", ".join(f"{name} (baseline {_shown(base.protocol, name)}, this run {_shown(entry.protocol, name)})"
                           for name in differ) or f"protocol_hash (baseline {base.protocol_hash}, this run {entry.protocol_hash})"
        comparison.expected, comparison.verdict = base, "refused"
        comparison.reason = f"measured by another protocol than the baseline's: {fields}"
        result.comparisons.remove(other)


def _shown(protocol: dict[str, Any] | None, name: str) -> str:
    return "-" if protocol is None or name not in protocol else str(protocol[name])


def confinement(rows: list[dict[str, Any]], required: str | None, walls: str = "") -> list[str]:
    """``--shrink-require-sandbox``: one line per kind of shortfall when some row's method ran less confined
    than ``required`` (``landlock`` or ``process``), or behind weaker walls than ``walls`` (the session's own);
    empty when all is well or nothing is required."""
    if required is None:
        return []
    level = REQUIRABLE[required]
    ran = [r for r in rows if r.get("status") != "skipped"]
    short = [r for r in ran if not confined_at_least(r.get("sandbox"), level)]
    lines = []
    if short:
        kinds = sorted({str(r.get("sandbox")) for r in short})
        lines.append(f"shrinkbench: --shrink-require-sandbox={required}: {len(short)} of {len(rows)} cases ran at "
                     f"{', '.join(kinds)}, below {level}; the session fails")
    weaker = [r for r in ran if r not in short and not walls_cover(r.get("walls"), walls)]
    if weaker:
        lines.append(f"shrinkbench: --shrink-require-sandbox={required}: {len(weaker)} of {len(rows)} cases ran behind "
                     f"weaker walls than this session's ({walls}); the session fails")
    return lines


def _value(value: float, metric: metrics.Metric) -> str:
    """A metric's value as the gate shows it: a fraction in percent, anything else as it is."""
    return f"{100 * value:.2f}" if metric.percent else f"{value:.3f}"


def _cell(mean_value: float, std_value: float, n: int, metric: metrics.Metric) -> str:
    return f"{_value(mean_value, metric)} ± {_value(std_value, metric)} (n={n})"


def table(comparisons: list[Comparison]) -> list[list[str]]:
    """Rows of the gate table of comparisons of one metric (top-1 in percent, change and allowed drop in percentage
    points; perplexity as it is, change and allowed rise in percent of the baseline's)."""
    rows = []
    for c in comparisons:
        metric = c.metric
        base = "-" if c.expected is None else _cell(c.expected.value, c.expected.std, c.expected.n, metric)
        if c.entry is None:
            now = "-"
        elif c.entry.failed:
            now = f"FAILED {c.entry.failed}/{c.entry.failed + c.entry.n + c.entry.skipped}"
        else:
            now = "-" if not c.entry.score else _cell(mean(c.entry.score), std(c.entry.score), c.entry.n, metrics.metric(c.entry.metric))
        change = "-" if c.change is None else f"{100 * c.change:+.2f}"
        allowed = "-" if c.allowed is None else f"{'-' if metric.higher_is_better else '+'}{100 * c.allowed:.2f}"
        rows.append([c.suite, c.method, f"x{c.ratio:g}", base, now, change, allowed, c.verdict.upper() if c.fails else c.verdict])
    return rows


def headers(metric: metrics.Metric) -> list[str]:
    """The gate table's headers for comparisons of ``metric``, each naming its unit."""
    unit = " %" if metric.percent else ""
    change = "pp" if metric.tolerance == "points" else "%"
    return ["suite", "method", "ratio", f"baseline {metric.label}{unit}", f"this run {metric.label}{unit}", f"change ({change})",
            f"allowed ({change})", "verdict"]


HEADERS = headers(metrics.metric(None))


def _tables(comparisons: list[Comparison], tablefmt: str) -> str:
    """One table per metric (a run may gate a classification suite and a language model together)."""
    by_metric: dict[str, list[Comparison]] = {}
    for c in comparisons:
        by_metric.setdefault(c.metric.name, []).append(c)
    return "\n\n".join(tabulate(table(group), headers=headers(metrics.metric(name)), tablefmt=tablefmt, disable_numparse=True)
                        for name, group in by_metric.items())


def render(result: GateResult, tablefmt: str = "simple") -> str:
    """The gate's report: every regression, every improvement, refused, missing and new entries, a verdict line."""
    parts: list[str] = []
    used = list({c.metric.name: c.metric for c in result.comparisons}.values()) or [metrics.metric(None)]
    worsened = " or ".join(f"mean {m.label} {'fell' if m.higher_is_better else 'rose'}" for m in used)
    sections = [
        (f"regressions ({worsened} by more than the tolerance, cases failed, methods ran unverified, or not comparable with "
         "the baseline: another protocol or metric)" if result.having("refused") else
         f"regressions ({worsened} by more than the tolerance, cases failed, or methods ran unverified)", result.regressions),
        ("improvements (reported, never failing)", result.having("improved")),
        ("missing from this run (in the baseline; not compared)", result.having("missing")),
        ("new in this run (not in the baseline; not compared)", result.having("new")),
    ]
    for title, comparisons in sections:
        if comparisons:
            parts.append(f"{title}:\n" + _tables(comparisons, tablefmt))
    reasons = sorted({f"{c.suite}: {c.reason}" for c in result.having("refused")})
    parts.extend(f"refused: {reason}" for reason in reasons)
    parts.extend(f"note: {note}" for note in result.notes)
    counts = {v: len(result.having(v)) for v in ("unchanged", "improved", "missing", "new")}
    counts.update({"refused (not comparable with the baseline)": len(result.having("refused"))} if result.having("refused") else {})
    verdict = "FAILED" if result.failed else "passed"
    parts.append(
        f"shrinkbench gate {verdict}: {len(result.regressions)} regression(s), "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f" ({tolerance_text(result, used)})"
    )
    return "\n\n".join(parts)


def tolerance_text(result: GateResult, used: list[metrics.Metric]) -> str:
    """The tolerance in each unit the gate used: ``max(1 pp, 2 std)`` of top-1, ``max(1%, 2 std)`` of perplexity."""
    units = {"points": f"max({result.tolerance_points:g} pp, {result.tolerance_stds:g} std)",
             "percent": f"max({result.tolerance_points:g}%, {result.tolerance_stds:g} std)"}
    if all(m.name == metrics.DEFAULT for m in used):
        return f"tolerance: {units['points']}"
    return "tolerance: " + "; ".join(f"{units[m.tolerance]} of {m.label}" for m in used)
