"""A case's cgroup: memory and process caps over all of its processes, and a kill that reaches every one.

A cgroup is the kernel's own account of a group of processes: ``memory.max`` (v2) or
``memory.limit_in_bytes`` (v1) caps the memory of all of them together (its files on a tmpfs
included), ``pids.max`` caps how many tasks they may be, and ``cgroup.kill`` (v2) kills them all at
once whatever sessions or groups they made. Rlimits cannot do any of that: they count per process
(``RLIMIT_AS``) or per user (``RLIMIT_NPROC``, which root ignores).

Which hierarchy holds a controller depends on the machine: pure v2 (modern systemd), v1 per
controller, or a hybrid of both. :func:`find_bases` looks where this process sits in each mounted
hierarchy and keeps those it may create cgroups under (root, or a folder delegated to the user).
Creating one costs a ``mkdir`` and a few small writes, made by the fork server before it forks the
spare child, off the case's path.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

MEMORY, PIDS = "memory", "pids"


@dataclass(frozen=True)
class Base:
    """A folder of one hierarchy this process may create cgroups under, and the controllers a cgroup there gets."""

    path: Path
    version: int  # 1 or 2
    controllers: frozenset[str]


def _own_paths() -> dict[str, str]:
    """Where this process sits: ``{"": path}`` for v2, ``{controller: path}`` for each v1 hierarchy."""
    found: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root inside the hierarchy, mount point, type, super options) of each mounted cgroup hierarchy."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (kind, _source, options) = left.split(), right.split()[:3]
        if kind in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4].replace("\\040", " "), kind, set(options.split(","))))
    return found


def _usable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def find_bases(wanted: frozenset[str] = frozenset({MEMORY, PIDS})) -> list[Base]:
    """The hierarchies where this process may make a case's cgroup, with the wanted controllers each gives.

    A v2 base is kept even without controllers (its ``cgroup.kill`` still reaches every process); in
    v2 a cgroup's children get only the controllers in its ``cgroup.subtree_control``."""
    try:
        own, mounts = _own_paths(), _mounts()
    except OSError:
        return []
    bases: list[Base] = []
    for root, point, kind, options in mounts:
        names = {""} if kind == "cgroup2" else (options & wanted)
        for name in sorted(names):
            path = own.get(name)
            if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
                continue
            folder = Path(point, path[len(root.rstrip("/")):].lstrip("/"))
            if not _usable(folder):
                continue
            if kind == "cgroup2":
                try:
                    given = set((folder / "cgroup.subtree_control").read_text().split()) & wanted
                except OSError:
                    continue
                bases.append(Base(folder, 2, frozenset(given)))
            else:
                bases.append(Base(folder, 1, frozenset({name})))
    return _one_per_controller(bases)


def _one_per_controller(bases: list[Base]) -> list[Base]:
    """Each controller from one hierarchy only (v2 first); a v2 base stays even without controllers (cgroup.kill)."""
    taken: set[str] = set()
    kept = []
    for base in sorted(bases, key=lambda b: -b.version):
        given = base.controllers - taken
        if given or base.version == 2:
            kept.append(Base(base.path, base.version, frozenset(given)))
            taken |= given
    return kept


# The files that set a cap, per controller and version.
_LIMIT_FILES = {(MEMORY, 2): "memory.max", (MEMORY, 1): "memory.limit_in_bytes", (PIDS, 2): "pids.max", (PIDS, 1): "pids.max"}


class CaseCgroup:
    """One case's cgroup in each usable hierarchy: made (with its caps) before the child exists, the child
    put in right after the fork, killed and removed when the case ends."""

    def __init__(self, bases: list[Base], name: str, memory: int | None, processes: int | None) -> None:
        self.folders: list[tuple[Base, Path]] = []
        limits = {MEMORY: memory, PIDS: processes}
        try:
            for base in bases:
                folder = base.path / name
                folder.mkdir()
                self.folders.append((base, folder))
                for controller in base.controllers:
                    if limits[controller] is not None:
                        (folder / _LIMIT_FILES[controller, base.version]).write_text(str(limits[controller]))
        except OSError:
            self.remove()
            raise

    def adopt(self, pid: int) -> None:
        """Move ``pid`` (the freshly forked child, still running only harness code) into every folder."""
        for _, folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def kill(self) -> None:
        """SIGKILL every process in the cgroup at once (v2's cgroup.kill); v1 has no such file."""
        for base, folder in self.folders:
            if base.version == 2:
                try:
                    (folder / "cgroup.kill").write_text("1")
                except OSError:
                    pass

    def breached(self) -> list[str]:
        """The controllers whose cap the case's processes ran into: a kill by the memory cap's OOM killer, a
        fork refused by the process cap."""
        hit = []
        for base, folder in self.folders:
            for controller in sorted(base.controllers):
                if _count(folder, controller, base.version) > 0:
                    hit.append(controller)
        return hit

    def remove(self) -> None:
        """Remove the folders once their processes are gone (a dying task leaves its cgroup a moment later)."""
        for _, folder in reversed(self.folders):
            for _ in range(200):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.001)
        self.folders = []


def _count(folder: Path, controller: str, version: int) -> int:
    """How often the cap was hit: ``oom_kill`` in memory.events (v2) or memory.oom_control (v1); ``max`` in pids.events."""
    name = {(MEMORY, 2): "memory.events", (MEMORY, 1): "memory.oom_control", (PIDS, 2): "pids.events", (PIDS, 1): "pids.events"}
    key = "oom_kill" if controller == MEMORY else "max"
    try:
        for line in (folder / name[controller, version]).read_text().splitlines():
            word, _, number = line.partition(" ")
            if word == key:
                return int(number)
    except (OSError, ValueError):
        pass
    return 0
