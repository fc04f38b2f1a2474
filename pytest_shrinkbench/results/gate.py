"""Regression gates: save a leaderboard's expected top-1 per method × suite × ratio, compare a run to it.

One-sided, like an accuracy gate must be: a mean top-1 that falls by more than the tolerance
is a regression (the session or the report command fails); a rise is reported as an
improvement and never fails. The allowed drop is ``max(points / 100, stds × std)``, where std is
the larger of the baseline's and the run's standard deviation over seeds (so noisy cases need a
bigger drop to count). Entries in only one of the two are listed (missing / new) and do not fail.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .leaderboard import Entry, mean, std, suite_label
from .schema import LEVEL_IN_PROCESS, REQUIRABLE, confined_at_least, walls_cover

BASELINE_FORMAT = "pytest-shrinkbench baseline"
BASELINE_VERSION = 1
DEFAULT_TOLERANCE_POINTS = 1.0
DEFAULT_TOLERANCE_STDS = 2.0


@dataclass(frozen=True)
class Expected:
    """A baseline value: mean top-1 after fine-tuning over ``n`` seeds, and its std."""

    suite: str
    method: str
    ratio: float
    top1: float
    std: float
    n: int


def baseline_document(entries: list[Entry], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The baseline file's content: every ranked entry (failed or skipped ones are not expected values)."""
    setups: dict[str, dict[str, list[str]]] = {}
    for row in rows or []:
        suite = setups.setdefault(row["suite"], {"base_sha256": [], "recipe_hash": [], "torch": [], "walls": []})
        for name in suite:
            if row.get(name) is not None and row[name] not in suite[name]:
                suite[name].append(row[name])
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": setups,
        "entries": [
            {"suite": e.suite, "method": e.method, "ratio": e.ratio, "top1": mean(e.top1), "std": std(e.top1), "n": e.n}
            for e in sorted(entries, key=lambda e: (e.suite, e.method, e.ratio))
            if e.rankable
        ],
    }


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
    try:
        expected = [
            Expected(str(e["suite"]), str(e["method"]), float(e["ratio"]), float(e["top1"]), float(e.get("std") or 0.0), int(e["n"]))
            for e in document["entries"]
        ]
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
    verdict: str  # regression | failed | unverified | improved | unchanged | missing | new | not comparable
    change: float | None = None  # run mean - baseline mean (fraction)
    allowed: float | None = None  # the drop that still passes (fraction)

    @property
    def fails(self) -> bool:
        return self.verdict in ("regression", "failed", "unverified")


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
    unverified = {(suite_label(r["suite"], r.get("weights")), r["method"], float(r["ratio"])) for r in rows or []
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
        else:
            comparison.change = mean(entry.top1) - base.top1
            comparison.allowed = max(points / 100, stds * max(base.std, std(entry.top1)))
            if comparison.change < -comparison.allowed:
                comparison.verdict = "regression"
            elif comparison.change > comparison.allowed:
                comparison.verdict = "improved"
            else:
                comparison.verdict = "unchanged"
        result.comparisons.append(comparison)
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


def _points(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _cell(values: list[float] | None, n: int) -> str:
    return "-" if not values else f"{100 * mean(values):.2f} ± {100 * std(values):.2f} (n={n})"


def table(comparisons: list[Comparison]) -> list[list[str]]:
    """Rows of the gate table (top-1 in percent; change and allowed drop in percentage points)."""
    rows = []
    for c in comparisons:
        base = "-" if c.expected is None else f"{100 * c.expected.top1:.2f} ± {100 * c.expected.std:.2f} (n={c.expected.n})"
        if c.entry is None:
            now = "-"
        elif c.entry.failed:
            now = f"FAILED {c.entry.failed}/{c.entry.failed + c.entry.n + c.entry.skipped}"
        else:
            now = _cell(c.entry.top1, c.entry.n)
        allowed = "-" if c.allowed is None else f"-{100 * c.allowed:.2f}"
        rows.append([c.suite, c.method, f"x{c.ratio:g}", base, now, _points(c.change, sign=True), allowed, c.verdict.upper() if c.fails else c.verdict])
    return rows


HEADERS = ["suite", "method", "ratio", "baseline top-1 %", "this run top-1 %", "change (pp)", "allowed (pp)", "verdict"]


def render(result: GateResult, tablefmt: str = "simple") -> str:
    """The gate's report: every regression, every improvement, missing and new entries, a verdict line."""
    parts: list[str] = []
    tolerance = f"tolerance: max({result.tolerance_points:g} pp, {result.tolerance_stds:g} std)"
    sections = [
        ("regressions (mean top-1 fell by more than the tolerance, cases failed, or methods ran unverified)", result.regressions),
        ("improvements (reported, never failing)", result.having("improved")),
        ("missing from this run (in the baseline; not compared)", result.having("missing")),
        ("new in this run (not in the baseline; not compared)", result.having("new")),
    ]
    for title, comparisons in sections:
        if comparisons:
            parts.append(f"{title}:\n" + tabulate(table(comparisons), headers=HEADERS, tablefmt=tablefmt, disable_numparse=True))
    parts.extend(f"note: {note}" for note in result.notes)
    counts = {v: len(result.having(v)) for v in ("unchanged", "improved", "missing", "new")}
    verdict = "FAILED" if result.failed else "passed"
    parts.append(
        f"shrinkbench gate {verdict}: {len(result.regressions)} regression(s), "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f" ({tolerance})"
    )
    return "\n\n".join(parts)
