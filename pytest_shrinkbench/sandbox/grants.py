"""Which paths a walled child may read, as Landlock rules: everything but the hidden paths.

Landlock only allows, so hiding a path means granting every sibling along the way from ``/`` down to
it (and listing, not reading, its ancestors). Planned once, in the fork server, by :mod:`.walls`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


def _reveals(link: Path, hidden: Sequence[Path]) -> bool:
    """A rule follows a symlink to its target: a link to, into or above a hidden path would grant it."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop: nothing sensible to grant
        return True
    return any(target == h or target in h.parents or h in target.parents for h in hidden)


def _read_grants_under(directory: Path, hidden: Sequence[Path], every_hidden: Sequence[Path]) -> Iterator[str]:
    """Every entry of ``directory`` that neither is nor leads to a hidden path; recurse into those that lead
    to one. Landlock only allows, so hiding means granting each sibling along the way."""
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            inner = [h for h in hidden if path == h or path in h.parents]
            if inner:
                if path not in inner and entry.is_dir(follow_symlinks=False):
                    yield from _read_grants_under(path, inner, every_hidden)
            elif not (entry.is_symlink() and _reveals(path, every_hidden)):
                yield entry.path


def planned_grants(hidden: Sequence[Path], read: int, read_dir: int, device: int) -> list[tuple[str, int]]:
    """Paths and rights to grant, before descriptors are opened. A hidden path that does not exist yet
    stops the walk at its nearest existing ancestor, so whatever is created there later stays unreadable."""
    resolved = [Path(h).resolve() for h in hidden]
    if Path("/") in resolved:
        raise ValueError("walls: hiding / would leave nothing to read")
    if not resolved:
        reads = [("/", read)]
    else:  # READ_DIR from / down: the ancestors of hidden paths can be listed (names only, not contents)
        reads = [("/", read_dir)] + [(p, read) for p in _read_grants_under(Path("/"), resolved, resolved)]
    devices = [*DEVICES, *sorted(glob.glob("/dev/nvidia*"))]  # CUDA opens /dev/nvidia* read-write
    return reads + [(d, device) for d in devices if os.path.exists(d)]
