"""The durable results store: one SQLite database (standard library, WAL mode) keyed by case.

Why SQLite rather than more JSON Lines: a case must be looked up by its key before it runs (to
reuse a stored result) while other processes append, and a re-run of the same case must replace
its row, not add a second one. SQLite gives both — a primary key on the case key, and WAL mode
in which readers (the xdist workers checking for stored cases) never block the single writer (the
controller, which records every case) — and each row is committed in its own transaction as the
case finishes, so a run killed at any point keeps every finished case. Several sessions writing
the same store (e.g. shards on one machine) serialize on SQLite's lock (``busy_timeout``).
WAL needs a local file system (it uses shared memory): on a cluster, give each shard its own
store and merge them with the report command.

The per-run JSON Lines files (:mod:`.files`) stay the plain interchange format; the report
command reads both, and :func:`merge_rows` dedupes by case key.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ..identity import case_key, coordinates, normal, setup_of

SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 120_000
# Rows found by measurement key (an index on an expression: no new column, so no new store schema).
_MEASUREMENT = "json_extract(row, '$.measurement_key')"


def is_store(path: Path) -> bool:
    """Whether ``path`` is an SQLite database (a results store), by its header."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


class ResultsStore:
    """One SQLite file of result rows, one per case key; the latest recording of a case wins.

    Every call commits on its own (autocommit), so a row is on disk when :meth:`put` returns.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not is_store(self.path):
                raise ValueError(f"{self.path} is not a shrinkbench results store (SQLite)")
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            self._db.execute("PRAGMA synchronous = FULL")  # a committed row survives even a power cut
            self._create()

    def _create(self) -> None:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results ("
            " key TEXT PRIMARY KEY, method TEXT, suite TEXT, ratio REAL, seed INTEGER, status TEXT,"
            " finished TEXT, row TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS results_case ON results (suite, method, ratio, seed)")
        self._db.execute(f"CREATE INDEX IF NOT EXISTS results_measurement ON results ({_MEASUREMENT})")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise ValueError(f"{self.path}: results store schema {version}, this plugin reads {SCHEMA_VERSION}")

    def put(self, row: dict[str, Any]) -> str:
        """Store ``row`` under its case key (replacing an earlier result of the same case); return the key."""
        key = case_key(row)
        self._db.execute(
            "INSERT OR REPLACE INTO results (key, method, suite, ratio, seed, status, finished, row)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, row.get("method"), row.get("suite"), normal("ratio", row.get("ratio")), normal("seed", row.get("seed")),
             row.get("status"), row.get("finished"), json.dumps(row, sort_keys=True)),
        )
        return key

    def get(self, key: str, status: str | None = "passed") -> dict[str, Any] | None:
        """The stored row of case ``key`` (only if its status is ``status``; ``None``: any status)."""
        found = self._db.execute("SELECT row, status FROM results WHERE key = ?", (key,)).fetchone()
        if found is None or (status is not None and found[1] != status):
            return None
        return json.loads(found[0])

    def measured(self, measurement_key: str) -> list[dict[str, Any]]:
        """Passed rows whose measurements have the given measurement key (any case: run/reuse.py), newest first."""
        found = self._db.execute(f"SELECT row FROM results WHERE {_MEASUREMENT} = ? AND status = 'passed' ORDER BY finished DESC",
                                 (measurement_key,))
        return [json.loads(r) for (r,) in found]

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(r) for (r,) in self._db.execute("SELECT row FROM results ORDER BY suite, method, ratio, seed, key")]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def merge_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several stores/files as one set: one row per case key, the most recently finished.

    Rows without a ``finished`` time count as oldest; among equals, the later input wins.
    """
    best: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for order, row in enumerate(rows):
        key = case_key(row)
        rank = (row.get("finished") or "", order)
        if key not in best or rank >= best[key][:2]:
            best[key] = (*rank, row)
    return [row for _, _, row in best.values()]


def latest_setups(rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keep, per suite × protocol × method, only the rows of the setup (method source, base weights, recipe,
    versions) of its most recently finished row; return ``(kept, superseded)``.

    A store accumulates history — every version of a method one has edited — and averaging
    seeds of different versions, or mixing them across ratios, would describe no method at all.
    A row that failed before its setup was known (e.g. the suite did not load) is kept only
    where no row of the chosen setup covers its case. Rows measured by two protocols (a language model's context
    lengths) are two groups: both are kept, to be reported apart.
    """
    rows = list(rows)
    complete = [r for r in rows if r.get("method_hash") and r.get("base_sha256")]
    newest: dict[tuple[str, str | None, str], tuple[str, tuple]] = {}
    for row in complete:
        group = (row.get("suite"), row.get("protocol_hash"), row.get("method"))
        stamp = row.get("finished") or ""
        if group not in newest or stamp >= newest[group][0]:
            newest[group] = (stamp, setup_of(row))
    kept, superseded, partial = [], [], []
    for row in rows:
        group = (row.get("suite"), row.get("protocol_hash"), row.get("method"))
        if group not in newest or not (row.get("method_hash") and row.get("base_sha256")):
            partial.append(row)
        else:
            (kept if setup_of(row) == newest[group][1] else superseded).append(row)
    covered = {coordinates(r) for r in kept}
    for row in partial:
        (superseded if coordinates(row) in covered else kept).append(row)
    return kept, superseded
