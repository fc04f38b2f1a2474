"""``--shrink-weights SUITE=PATH``: user checkpoints of base weights, an axis of the parametrization.

One checkpoint for a suite replaces its base weights. Several make the checkpoint an axis: every
case runs once per checkpoint, tagged in its test id with ``w`` and the first 8 hex digits of the
checkpoint's identity (``...-x8-seed0-w3f2a9c1d``), which reproduces the ShrinkBench paper's "weights A
vs weights B" experiment. The identity is the hash of the file's tensors
(:func:`~pytest_shrinkbench.identity.state_digest`), not of its bytes: tags do not depend on the order
the options were given in, nor on where or under what name a checkpoint was saved, and every xdist
worker and every machine computes the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Iterable

from ..identity import file_sha256, state_digest
from .subject import read_state

TAG_DIGITS = 8


@dataclass(frozen=True)
class Checkpoint:
    """A base checkpoint given for a suite; ``tag`` is set when the suite has several (it goes in test ids)."""

    suite: str
    path: Path
    sha256: str
    tag: str | None = None


def parse_weights(
    entries: Iterable[str], resolve: Callable[[str], Path], known_suites: Container[str]
) -> dict[str, tuple[Checkpoint, ...]]:
    """``SUITE=PATH`` entries → checkpoints per suite, in the order given. Raises ValueError on a
    malformed entry, an unknown suite, a missing or unreadable file, or the same weights twice.

    A file that ``torch.load(weights_only=True)`` refuses (a pickle that would run code, not a torch
    file) is not a usage error: it is tagged by its bytes, and its suite's cases fail with the reason
    when they load it, so the session's other suites still run."""
    found: dict[str, list[Checkpoint]] = {}
    for entry in entries:
        suite, sep, raw = (part.strip() for part in entry.partition("="))
        if not sep or not suite or not raw:
            raise ValueError(f"--shrink-weights takes SUITE=PATH, got {entry!r}")
        if suite not in known_suites:
            raise ValueError(f"--shrink-weights {entry!r}: unknown suite {suite!r}")
        path = resolve(raw)
        if not path.is_file():
            raise ValueError(f"--shrink-weights {entry!r}: no file {path}")
        sha = _identity(path, entry)
        same = [c for c in found.get(suite, []) if c.sha256 == sha]
        if same:
            raise ValueError(f"--shrink-weights: {path} and {same[0].path} are the same checkpoint (tensors hash {sha[:16]}...) for {suite}")
        found.setdefault(suite, []).append(Checkpoint(suite, path, sha))
    return {
        suite: tuple(Checkpoint(c.suite, c.path, c.sha256, f"w{c.sha256[:TAG_DIGITS]}" if len(given) > 1 else None) for c in given)
        for suite, given in found.items()
    }


def _identity(path: Path, entry: str) -> str:
    """The checkpoint's identity: the hash of its tensors (the same as its subject's), else of its bytes."""
    try:
        return state_digest(read_state(path, f"--shrink-weights {entry!r}"))
    except RuntimeError:
        pass  # its cases fail with the reason when the suite loads it
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ValueError(f"--shrink-weights {entry!r}: cannot read {path}: {exc}") from None
