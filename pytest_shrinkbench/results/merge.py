"""Merging shards into what one machine would have produced, and refusing what no machine would have.

With the shards' manifests (:mod:`pytest_shrinkbench.shards`), a merge knows its plan: the report holds
exactly the planned cases, one row each (the newest recording of the case: a re-run shard's replaces a
crashed one's), rows outside the plan are left out, and every shard that is missing, incomplete or
has failed cases is named. Independently of shards, a suite whose rows come from different base
models is refused: its methods would not be compared on the same weights, which is the one thing a
leaderboard must guarantee.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..identity import CaseSpec
from ..shards import MANIFEST_GLOB, Manifest, Shard, read_manifest
from .leaderboard import board_of

SHOWN = 5  # case ids or run names a note lists before "and N more"


def read_manifests(paths: Iterable[Path]) -> list[Manifest]:
    """The shard manifests in the folders given (a run without ``--shrink-shard`` has none)."""
    return [read_manifest(found) for path in map(Path, paths) if path.is_dir() for found in sorted(path.glob(MANIFEST_GLOB))]


def planned_rows(rows: list[dict[str, Any]], manifests: list[Manifest]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The newest row of every planned case, notes on what was left out, and problems: why the merge is not
    what one machine would have produced (shards missing, incomplete or of different runs)."""
    planned = {case: manifest for manifest in manifests for case in manifest.cases}
    newest: dict[str, dict[str, Any]] = {}
    outside = 0
    for row in rows:
        case = CaseSpec.of(row).id
        if case not in planned:
            outside += 1
        elif case not in newest or (row.get("finished") or "") >= (newest[case].get("finished") or ""):
            newest[case] = row
    notes = [f"{outside} rows of cases outside the shards' plan left out"] if outside else []
    superseded = len(rows) - outside - len(newest)
    if superseded:
        notes.append(f"{superseded} earlier recordings of planned cases replaced by their newest")
    plans: dict[tuple[str, int, int], dict[int, Manifest]] = defaultdict(dict)
    for manifest in manifests:
        plans[(manifest.plan, manifest.shard.count, manifest.total)][manifest.shard.index] = manifest
    problems = []
    if len(plans) > 1:
        described = "; ".join(f"plan {plan} ({total} cases in {count} shards): shards {', '.join(f'{k}/{count}' for k in sorted(got))}"
                              for (plan, count, total), got in sorted(plans.items()))
        problems.append(f"the shards come from {len(plans)} different runs (other suites, methods, ratios, seeds or shard "
                     f"counts): {described}; re-run the odd shards with the same options")
    for (_, count, total), got in sorted(plans.items()):
        for index in range(1, count + 1):
            note, ok = _shard_note(Shard(index, count), got.get(index), newest, total)
            (notes if ok else problems).extend([note] if note else [])
    return list(newest.values()), notes, problems


def _shard_note(shard: Shard, manifest: Manifest | None, newest: dict[str, dict[str, Any]], total: int) -> tuple[str | None, bool]:
    """One line naming a shard that is missing, incomplete or has failed or skipped cases; and whether it is complete."""
    if manifest is None:
        return f"shard {shard} is missing: no results folder of it was given ({shard.size(total)} planned cases absent)", False
    absent = [case for case in manifest.cases if case not in newest]
    statuses = Counter(newest[case].get("status") for case in manifest.cases if case in newest)
    where = f" ({manifest.where.parent})" if manifest.where is not None else ""
    if absent:
        return (f"shard {shard}{where} is incomplete: {len(absent)} of its {len(manifest.cases)} cases have no result "
                f"(crashed, killed or still running: run it again to resume from its store): {_few(absent)}"), False
    bad = ", ".join(f"{statuses[s]} {s}" for s in ("failed", "skipped") if statuses[s])
    return (f"shard {shard}{where}: {bad} of its {len(manifest.cases)} cases" if bad else None), True


def refuse_mixed_bases(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Leave out every suite (per checkpoint tag) whose rows come from more than one base model, with a note each."""
    bases: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("base_sha256"):
            bases[board_of(row)][row["base_sha256"]].append(row)
    refused = {label for label, found in bases.items() if len(found) > 1}
    notes = [
        f"REFUSED {label}: its rows come from {len(bases[label])} different base models ("
        + "; ".join(f"{sha[:12]}: {len(group)} rows of runs {_few(sorted({r.get('run') or '?' for r in group}))}"
                    for sha, group in sorted(bases[label].items()))
        + "): its methods would not be compared on the same weights, so it is left out. Prepare the base model once "
        "(pytest-shrinkbench prepare) and re-run the cases of the other base model(s) from that cache"
        for label in sorted(refused)
    ]
    return [r for r in rows if board_of(r) not in refused], notes


def _few(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
