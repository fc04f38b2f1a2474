"""JSON Lines result files: one row per case, appended as each case finishes; the plain interchange format."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .schema import sort_key


class ResultsFile:
    """A run's JSON Lines file: each row appended and flushed when its case ends, sorted when the run ends.

    Appending as we go means an interrupted run keeps every finished case; sorting at the end
    makes the file identical whatever the order xdist finished the cases in.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = folder / f"run-{stamp}-{os.getpid()}.jsonl"
        self.rows: list[dict[str, Any]] = []
        self._handle = open(self.path, "a", encoding="utf-8")

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._handle.write(json.dumps(row, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
        self.rows.sort(key=sort_key)
        partial = self.path.with_suffix(".tmp")
        partial.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows), encoding="utf-8")
        os.replace(partial, self.path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                continue
            raise ValueError(f"{path}:{number}: not a JSON row") from None
    return rows
