"""The results store: case keys, durable rows, concurrent writers, merging, and resuming a killed run."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from pytest_shrinkbench.identity import case_key
from pytest_shrinkbench.results.store import (
    ResultsStore,
    is_store,
    latest_setups,
    merge_rows,
)
from tests.helpers import row


def test_case_key_covers_what_changes_numbers() -> None:
    base = row("m", 4, 0, 0.9)
    assert case_key(base) == case_key({**base, "top1": 0.1, "platform": "other", "finished": "later"}), "metrics are not identity"
    assert case_key(base) == case_key({**base, "ratio": 4, "seed": 0.0 + 0}), "4 and 4.0 are the same ratio"
    assert case_key({**base, "device": "cuda:0"}) == case_key({**base, "device": "cuda:1"})
    for field, other in [("method", "n"), ("method_hash", "v2"), ("suite", "digits-cnn"), ("base_sha256", "c" * 64),
                         ("recipe_hash", "x"), ("ratio", 8.0), ("seed", 1), ("torch", "2.15"), ("python", "3.12.0"),
                         ("threads", 2), ("device", "cuda"), ("measure_version", 1)]:
        assert case_key({**base, field: other}) != case_key(base), field


def test_store_keeps_one_row_per_case_latest_wins(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.sqlite")
    first = row("m", 4, 0, 0.9, finished="2024-01-01T00:00:00Z")
    key = store.put(first)
    store.put(row("m", 4, 1, 0.8))
    assert len(store) == 2 and store.get(key)["top1"] == 0.9
    store.put({**first, "top1": 0.95, "finished": "2024-01-02T00:00:00Z"})  # a re-run of the same case
    assert len(store) == 2 and store.get(key)["top1"] == 0.95
    store.put({**first, "status": "failed"})
    assert store.get(key) is None, "only passed cases are reused"
    assert store.get(key, status=None)["status"] == "failed"
    store.close()
    assert is_store(tmp_path / "s.sqlite") and not is_store(tmp_path)
    mode = sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


WRITER = """
import sys
sys.path.insert(0, {root!r})
from pytest_shrinkbench.results.store import ResultsStore
from tests.helpers import row
store = ResultsStore({path!r})
worker = int(sys.argv[1])
for i in range(200):
    # seeds 0-99 are written by every process (the same cases), 100-199 by this one only
    seed = i if i < 100 else 1000 * (worker + 1) + i
    store.put(row("m", 2, seed, 0.5, writer=worker))
store.close()
"""


def test_concurrent_writer_processes_neither_lose_nor_duplicate(tmp_path: Path) -> None:
    """Several processes (e.g. shards on one machine) writing one store at once: every case exactly once."""
    path = tmp_path / "shared.sqlite"
    ResultsStore(path).close()
    script = WRITER.format(root=str(Path(__file__).parents[2]), path=str(path))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = ResultsStore(path, readonly=True)
    rows = store.rows()
    seeds = [r["seed"] for r in rows]
    assert len(rows) == len(store) == 100 + 3 * 100
    assert len(set(seeds)) == len(seeds)
    assert sorted(s for s in seeds if s < 100) == list(range(100))
    assert {r["writer"] for r in rows} == {0, 1, 2}


def test_merge_dedupes_by_key_and_latest_setup_wins() -> None:
    old = [row("m", r, s, 0.5, finished="2024-01-01T00:00:00Z") for r in (2, 4) for s in (0, 1)]
    again = [{**r, "top1": 0.6, "finished": "2024-01-02T00:00:00Z"} for r in old[:2]]  # same keys, re-run later
    merged = merge_rows(old + again)
    assert len(merged) == 4
    assert sorted(r["top1"] for r in merged) == [0.5, 0.5, 0.6, 0.6]
    # A later version of the method (new source hash) at one ratio only: the old version is dropped entirely.
    newer = [row("m", 2, s, 0.7, method_hash="m-v2", finished="2024-02-01T00:00:00Z") for s in (0, 1)]
    other = [row("o", 2, 0, 0.4, finished="2023-01-01T00:00:00Z")]
    kept, superseded = latest_setups(merge_rows(old + again + newer + other))
    assert sorted((r["method"], r["method_hash"]) for r in kept) == [("m", "m-v2")] * 2 + [("o", "o-v1")]
    assert len(superseded) == 4
    # A failure before the setup was known (no hashes) is kept where no row of the chosen setup covers it.
    early = row("m", 8, 0, status="failed", method_hash=None, base_sha256=None)
    covered = row("m", 2, 0, status="failed", method_hash=None, base_sha256=None)
    kept, superseded = latest_setups(newer + [early, covered])
    assert early in kept and covered in superseded


