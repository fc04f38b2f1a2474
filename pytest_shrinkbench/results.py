"""Results: one plain row per case, streamed to a JSON Lines file as each case finishes."""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any

# Keys every row has (more may follow: timings, environment, hashes).
ROW_KEYS = (
    "method", "suite", "ratio", "seed", "top1", "top5", "top1_pre", "params_total", "params_nonzero",
    "compression", "flops_dense", "flops_sparse", "speedup", "base_sha256", "status",
)


def plain(value: Any) -> Any:
    """``value`` as JSON-safe builtins: execnet (xdist) refuses numpy and torch scalars, and tuples become lists."""
    # Exact builtin types only: execnet also refuses subclasses such as torch's TorchVersion (a str).
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None  # JSON has no NaN or infinity
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # 0-d tensors
        return plain(value.item())
    return str(value)


def sort_key(row: dict[str, Any]) -> tuple:
    return (row["suite"], row.get("weights") or "", row["method"], row["ratio"], row["seed"])


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
