"""Leaderboard reports: results of one or more stores / JSON Lines files, merged, as Markdown, CSV,
JSON and a self-contained HTML page with plots.

The numbers come from :func:`pytest_shrinkbench.results.leaderboard.aggregate` and
:func:`~pytest_shrinkbench.results.leaderboard.summarize`, the same code the end-of-session leaderboard
uses; this module only reads inputs and formats.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..shards import MANIFEST_GLOB, Manifest
from . import leaderboard
from .files import read_jsonl
from .leaderboard import Entry, Summary
from .merge import planned_rows, refuse_mixed_bases
from .store import ResultsStore, is_store, latest_setups, merge_rows

# -- inputs ---------------------------------------------------------------------------------------


def _holdings(folder: Path) -> tuple[list[Path], list[Path]]:
    """A folder's results stores and its ``*.jsonl`` files."""
    inside = sorted(p for p in folder.iterdir() if p.is_file())
    return [p for p in inside if is_store(p)], [p for p in inside if p.suffix == ".jsonl"]


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named, and what folders named hold: their stores when they have one, else their ``*.jsonl`` files.

    A session writes every case it records to the store and to its run file, so a folder's run files
    beside a store repeat the store's rows (and older recordings it has since replaced): reading both
    would count each case again (see :func:`unread`).
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            stores, runs = _holdings(path)
            if not stores and not runs and not any(path.glob(MANIFEST_GLOB)):  # a shard that recorded nothing counts
                raise ValueError(f"{path}: no results store or *.jsonl file in this folder")
            files.extend(stores or runs)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return files


def unread(paths: Iterable[Path]) -> list[str]:
    """A note per folder named whose run files :func:`expand` passed over for its store."""
    notes = []
    for path in (Path(p) for p in paths if Path(p).is_dir()):
        stores, runs = _holdings(path)
        if stores and runs:
            notes.append(f"{path}: {len(runs)} run file(s) beside the store not read (the store holds their cases; "
                         "name a run file to read it)")
    return notes


def read_rows(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of the given stores, JSON Lines files and folders, and a line per source."""
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    for path in expand(paths):
        if is_store(path):
            store = ResultsStore(path, readonly=True)
            try:
                found = store.rows()
            finally:
                store.close()
            kind = "store"
        else:
            found = read_jsonl(path)
            kind = "JSON Lines"
        rows.extend(found)
        sources.append(f"{path} ({kind}, {len(found)} rows)")
    return rows, sources


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Report:
    """Merged rows and their leaderboard: entries per suite × ratio × method, summaries per method."""

    rows: list[dict[str, Any]]
    entries: list[Entry]
    summaries: list[Summary]
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    title: str = "pytest-shrinkbench leaderboard"
    problems: list[str] = field(default_factory=list)  # why a merge is not what one machine would have produced

    @property
    def complete(self) -> bool:
        """Whether every planned shard and case is present and no suite was refused."""
        return not self.problems

    @property
    def suites(self) -> list[str]:
        return sorted({e.suite for e in self.entries})

    def entries_of(self, suite: str) -> list[Entry]:
        return [e for e in self.entries if e.suite == suite]

    def summaries_of(self, suite: str) -> list[Summary]:
        return [s for s in self.summaries if s.suite == suite]

    def rows_of(self, suite: str) -> list[dict[str, Any]]:
        """The rows of one leaderboard: its suite, checkpoint tag and protocol."""
        return [r for r in self.rows if leaderboard.board_of(r) == suite]

    def failed_rows(self, suite: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.rows_of(suite) if r.get("status") == "failed"), key=_row_order)

    def setup(self, suite: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for row in self.rows_of(suite):
            for name in ("base_sha256", "recipe_hash", "torch", "python", "threads", "device", "sandbox"):
                value = row.get(name)
                if value is not None and str(value) not in found[name]:
                    found[name].append(str(value))
        return dict(found)


def _row_order(row: dict[str, Any]) -> tuple:
    return (row["suite"], row["method"], float(row["ratio"]), int(row["seed"]))


def build(rows: Iterable[dict[str, Any]], *, merge: bool = True, sources: list[str] | None = None, title: str | None = None,
          manifests: list[Manifest] | None = None) -> Report:
    """The report of ``rows``: with ``merge``, deduplicated by case key, then reduced to the shards' plan when
    ``manifests`` are given (one row per planned case, missing shards and cases named: see
    :mod:`.merge`), else, per method, to its latest setup (see :func:`pytest_shrinkbench.results.store.latest_setups`),
    with a note of what was dropped. A suite whose rows come from different base models is refused."""
    rows = list(rows)
    notes: list[str] = []
    problems: list[str] = []
    if merge:
        merged = merge_rows(rows)
        if len(merged) < len(rows):
            notes.append(f"{len(rows) - len(merged)} duplicate rows (same case key) merged")
        if manifests:
            rows, planned_notes, problems = planned_rows(merged, manifests)
            notes += planned_notes
        else:
            rows, superseded = latest_setups(merged)
            if superseded:
                groups = Counter(f"{r['suite']}/{r['method']}" for r in superseded)
                notes.append(
                    f"{len(superseded)} rows of older setups (method source, base weights, recipe or versions) ignored: "
                    + ", ".join(f"{g} ({n})" for g, n in sorted(groups.items()))
                )
    rows, refusals = refuse_mixed_bases(rows)
    problems += refusals
    rows.sort(key=_row_order)
    entries = leaderboard.aggregate(rows)
    return Report(rows, entries, leaderboard.summarize(entries), notes + problems, sources or [], title or Report.title, problems)


# -- writing --------------------------------------------------------------------------------------
