"""Shards: one run's cases split over machines (``--shrink-shard=K/N``), and the manifest each shard leaves.

A shard is chosen where the case list is built, from the whole list, so every process of every
machine (an xdist controller and its workers, a Slurm array task, a CI matrix job) computes the same
slice from the same options, whatever order they were given or tests were collected in. The slice is
round-robin over the canonical order (suite, checkpoint, method, ratio, seed). Shard sizes differ by
at most one, and so do their shares of every suite and of every method within a suite: those are
what a case's cost depends on (a suite's model and data, a method's own work), so shards take about
equally long and none collects one slow suite or method. Ratios and seeds cost the same (the
fine-tuning budget is fixed), so their shares are not balanced.

Each shard's recorder writes a manifest into its results folder when the session starts (so a shard
that crashes still leaves one): which shard of how many, the whole run's plan (a hash of every case
id, and their count) and this shard's case ids. The report reads the manifests to tell a merge that
is what one machine would have produced from one that misses a shard or cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .identity import CaseSpec

MANIFEST_FORMAT = "pytest-shrinkbench shard"
MANIFEST_VERSION = 1
MANIFEST_GLOB = "shard-*-of-*.json"
_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based, as Slurm's ``--array=1-N`` and a CI matrix count) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` → the shard; ``ValueError`` unless ``1 <= K <= N``."""
        found = _FORM.match(str(text))
        if not found or not 1 <= int(found[1]) <= int(found[2]):
            raise ValueError(f"must be K/N with 1 <= K <= N (shard K of N), got {text!r}")
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, cases: Sequence[CaseSpec]) -> list[CaseSpec]:
        """This shard's cases, in the order given: every N-th of the canonical order, from the K-th."""
        mine = set(sorted(cases, key=canonical)[self.index - 1 :: self.count])
        return [case for case in cases if case in mine]

    def size(self, total: int) -> int:
        """How many of ``total`` cases this shard holds (the first ``total mod N`` shards hold one more)."""
        return len(range(self.index - 1, total, self.count))


def canonical(case: CaseSpec) -> tuple:
    """The order shards are cut from, independent of option and collection order (as rows are sorted)."""
    return (case.suite, case.weights or "", case.method, case.ratio, case.seed)


def plan_digest(cases: Iterable[CaseSpec]) -> str:
    """The whole run's plan: a hash of every case id, in canonical order (shards of one run share it)."""
    ids = [case.id for case in sorted(cases, key=canonical)]
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What a shard was asked to run; ``where`` is the file it was read from."""

    shard: Shard
    plan: str
    total: int
    cases: tuple[str, ...]
    where: Path | None = None


def manifest_path(folder: Path, shard: Shard) -> Path:
    return Path(folder) / f"shard-{shard.index}-of-{shard.count}.json"


def write_manifest(folder: Path, shard: Shard, every: Sequence[CaseSpec]) -> Path:
    """Record ``shard``'s slice of the run ``every`` in ``folder`` (atomically: a reader never sees half)."""
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "shard": str(shard), "plan": plan_digest(every),
        "total": len(every), "cases": [case.id for case in shard.select(every)],
    }
    path = manifest_path(folder, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def read_manifest(path: Path) -> Manifest:
    """A manifest file; ``ValueError`` naming the file when it is not one."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
        return Manifest(Shard.parse(document["shard"]), str(document["plan"]), int(document["total"]),
                        tuple(document["cases"]), Path(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: unreadable shard manifest ({exc})") from None
