"""What a case may take instead of computing, on the process that runs it: the stored row of its case key, or the
measurements of its measurement key (:mod:`pytest_shrinkbench.run.reuse`) from this session or the store.

Only what the harness can tell it wrote is believed: a stored row must carry a valid signature and come from a
method at least as confined as this session's; measurements a worker leaves for the others are signed with the
same key. Under xdist, workers exchange measurements through a folder the controller creates for the session
(files named by measurement key, each written whole by one rename), and each key has a file lock there: a
worker meeting a key another worker is computing waits for it and takes its numbers rather than computing
them twice. Waiting costs no more wall time than computing (the other worker started first) and saves the
CPU, and "fine-tuned once" holds under any ``-n``. A worker holds one key's lock at a time, so none can
deadlock; a worker that dies releases its lock with its process, and a case that fails publishes nothing (the
waiting worker then computes, and fails or passes on its own).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from ..identity import case_key
from ..results.schema import LEVEL_LANDLOCK, confined_at_least, walls_cover
from ..results.signing import key_path, load_key, sign, verify
from ..results.store import ResultsStore, is_store
from ..run.reuse import SHARED_FIELDS, SharedMeasurements
from ..sandbox.runner import Sandbox
from ..suites.subject import default_cache_dir

EXCHANGE_KEY = "shrinkbench_measurements"  # workerinput: the session's folder of shared measurements


class StoredRows:
    """Passed rows of the results store that the harness signed, from methods at least as confined as ``sandbox``'s
    and behind walls that cover its walls (a row made where TCP or signals were open is not this session's equal).
    Without a sandbox (no benchmark session): the strongest level and no walls asked for.

    Each process (worker) reads the store itself: in WAL mode its reads never block the controller's writes.
    The signing key is read at first use, after the fork server was started, so no method process holds it.
    """

    def __init__(self, path: Path | None, cache_dir: Path | None, sandbox: Sandbox | None) -> None:
        self.path, self.cache_dir, self.sandbox = path, cache_dir, sandbox
        self._store: ResultsStore | None = None
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = load_key(key_path(self.cache_dir or default_cache_dir()))
        return self._key

    def _open(self) -> ResultsStore | None:
        if self._store is None and self.path is not None and is_store(self.path):
            self._store = ResultsStore(self.path, readonly=True)
        return self._store

    def trusted(self, row: dict[str, Any]) -> bool:
        level, walls = (self.sandbox.level, self.sandbox.walls) if self.sandbox is not None else (LEVEL_LANDLOCK, "")
        return verify(row, self.key) and confined_at_least(row.get("sandbox"), level) and walls_cover(row.get("walls"), walls)

    def __call__(self, key: str) -> dict[str, Any] | None:
        """The stored row of case ``key``, or None."""
        store = self._open()
        row = store.get(key) if store is not None else None
        return row if row is not None and self.trusted(row) else None

    def measured(self, measurement_key: str) -> dict[str, Any] | None:
        """The newest trusted stored row whose measurements have ``measurement_key``, or None."""
        store = self._open()
        return next((r for r in store.measured(measurement_key) if self.trusted(r)), None) if store is not None else None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class SessionMeasurements(SharedMeasurements):
    """Measurements of this process, of the session's other workers (``folder``) and of the store (``stored``)."""

    def __init__(self, stored: StoredRows, folder: Path | None) -> None:
        super().__init__()
        self.stored, self.folder = stored, folder

    def lock(self, key: str) -> AbstractContextManager[object]:
        return FileLock(str(self.folder / f"{key}.lock")) if self.folder is not None else nullcontext()

    def find(self, key: str) -> dict[str, Any] | None:
        found = super().find(key) or self._from_workers(key) or self._from_store(key)
        if found is not None:
            self.found[key] = found
        return found

    def _from_workers(self, key: str) -> dict[str, Any] | None:
        if self.folder is None:
            return None
        try:
            record = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("measurement_key") != key or not verify(record, self.stored.key):
            return None
        return {k: v for k, v in record.items() if k not in ("mac", "measurement_key")}

    def _from_store(self, key: str) -> dict[str, Any] | None:
        row = self.stored.measured(key)
        if row is None:
            return None
        return {**{f: row[f] for f in SHARED_FIELDS if f in row}, "case_key": row.get("shared_from") or case_key(row)}

    def publish(self, key: str, record: dict[str, Any]) -> None:
        super().publish(key, record)
        if self.folder is not None:
            partial = self.folder / f".{key}.{os.getpid()}.tmp"
            partial.write_text(json.dumps(sign({**record, "measurement_key": key}, self.stored.key)))
            os.replace(partial, self.folder / f"{key}.json")


def exchange_folder(config: pytest.Config) -> Path | None:
    """The session's folder of shared measurements, on a worker (None without xdist: one process shares in memory)."""
    folder = getattr(config, "workerinput", {}).get(EXCHANGE_KEY)
    return Path(folder) if folder else None


class Exchange:
    """The controller's side: the folder workers share measurements through, created for the session, removed after."""

    def __init__(self) -> None:
        self.folder: Path | None = None

    def for_worker(self, workerinput: dict[str, Any]) -> None:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="shrinkbench-measurements-"))
        workerinput[EXCHANGE_KEY] = str(self.folder)

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
