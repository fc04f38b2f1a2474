"""Pruning old run files from a results folder, safely.

Every session writes a JSON Lines run file beside the store, and they pile up; the store already holds
the latest recording of every case they hold. A run file is removed only when every one of its rows
has its case key in the folder's store, so nothing is lost but a copy. The store itself, and any
file that is not a ``run-*.jsonl`` run file, is never touched.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..identity import case_key
from .files import read_jsonl
from .store import ResultsStore, is_store

RUN_FILE = re.compile(r"^run-(\d{8}T\d{6})-\d+\.jsonl$")  # as results.files.ResultsFile names them
DAY = 86400.0


@dataclass
class Plan:
    """What pruning a folder removes, and the run files it keeps though they were selected, with why."""

    store: Path | None
    remove: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)
    runs: int = 0  # run files in the folder


def run_files(folder: Path) -> list[Path]:
    """The folder's run files, newest first (by the UTC time in their names)."""
    found = [p for p in folder.iterdir() if p.is_file() and RUN_FILE.match(p.name)]
    return sorted(found, key=lambda p: (RUN_FILE.match(p.name).group(1), p.name), reverse=True)


def started(path: Path) -> float:
    """When the session that wrote a run file started (seconds since the epoch, from its name)."""
    stamp = RUN_FILE.match(path.name).group(1)
    return float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S")))


def plan(folder: Path, keep: int | None = None, older_than_days: float | None = None, now: float | None = None) -> Plan:
    """Select the run files beyond the newest ``keep`` and older than ``older_than_days`` (both, when both are
    given), then keep back any whose rows are not all in the folder's store (all of them without a store)."""
    if keep is None and older_than_days is None:
        raise ValueError("say what to prune: --keep N and/or --older-than DAYS")
    runs = run_files(folder)
    cutoff = (time.time() if now is None else now) - (older_than_days or 0) * DAY
    selected = [p for i, p in enumerate(runs) if (keep is None or i >= keep) and (older_than_days is None or started(p) < cutoff)]
    stores = sorted(p for p in folder.iterdir() if p.is_file() and is_store(p))
    result = Plan(stores[0] if len(stores) == 1 else None, runs=len(runs))
    if result.store is None:
        why = "no results store in this folder" if not stores else f"{len(stores)} stores in this folder"
        result.kept = [(p, f"{why}: its rows may exist nowhere else") for p in selected]
        return result
    store = ResultsStore(result.store, readonly=True)
    try:
        stored = {case_key(row) for row in store.rows()}
    finally:
        store.close()
    for path in selected:
        try:
            missing = sum(case_key(row) not in stored for row in read_jsonl(path))
        except ValueError as exc:
            result.kept.append((path, f"unreadable ({exc})"))
            continue
        if missing:
            result.kept.append((path, f"{missing} of its rows are not in the store"))
        else:
            result.remove.append(path)
    return result


def apply(result: Plan) -> int:
    """Remove the planned files; return the bytes freed."""
    freed = 0
    for path in result.remove:
        freed += path.stat().st_size
        path.unlink()
    return freed
