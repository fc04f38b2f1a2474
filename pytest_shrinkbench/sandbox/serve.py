"""What the fork server process does (see :mod:`.server`): keep a walled spare child ready, hand it over,
reap finished children and whatever they left behind, until the harness closes the control socket."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..results.schema import LEVEL_LANDLOCK
from .contain import HIDDEN_DATA, Caps, Containment, kill_tree
from .hugepages import COLLAPSE_EVERY, collapse_private_memory
from .walls import Walls

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_REQUEST = 1 << 16
STRAY_SWEEP_SECONDS = 10  # without a PID namespace: how long the server hunts what a child left behind

# A child's entry point: (its two pipe ends, its output file (no name: see _output_file), its private folder, the walls,
# its containment) -> never returns.
ChildMain = Callable[[int, int, int, Path, Walls, Containment], None]
# Builds what every later child inherits from a prepared file (the base model of a subject); returns an error or None.
Prepare = Callable[[str, str, Path], "str | None"]


def prctl(option: int, value: int) -> None:
    """Linux prctl; nothing elsewhere (the walls then say what is missing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def kill_group(pid: int) -> None:
    """SIGKILL a child and its process group (its subprocesses too): the child dies even if it left its group."""
    kill_tree(pid)


@dataclass
class _Spare:
    pid: int
    to_child: int
    from_child: int
    log: int
    folder: Path

    def close(self) -> None:
        for fd in (self.to_child, self.from_child, self.log):
            os.close(fd)


def serve(sock: socket.socket, main: ChildMain, prepare: Prepare, hidden: list[Path], landlock: bool,
          caps: Caps, cuda: bool, warm: Callable[[], None] | None) -> None:
    """The server's loop, until the harness closes the socket."""
    _close_other_fds({sock.fileno()})
    _quiet_stdio()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle; the server ends with it
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() == 1:
        return  # the harness is already gone
    contain = Containment.enter(caps, cuda)  # namespaces, cgroups, the scrubbed environment: before any fork
    walls = Walls.prepare(hidden, landlock=landlock)  # once: each child only applies the prepared rules
    in_force = contain.walls + ([f"landlock:{walls.abi}"] + ([HIDDEN_DATA] if hidden else []) if walls.level == LEVEL_LANDLOCK else [])
    torch.set_num_threads(1)  # no OpenMP pool in the server: a child forked from one can deadlock
    if warm is not None:
        warm()  # first-call costs (torch's lazy imports, allocator) paid once here, not in every child
    folders: dict[int, Path] = {}
    taken = 0
    spare = _fork(main, walls, contain, sock)
    while True:
        try:
            data = sock.recv(MAX_REQUEST)
        except OSError:
            break
        if not data:
            break
        request = json.loads(data)
        if request["op"] == "take":
            socket.send_fds(sock, [json.dumps({"pid": spare.pid}).encode()], [spare.to_child, spare.from_child, spare.log])
            spare.close()
            folders[spare.pid] = spare.folder
            taken += 1
            if taken % COLLAPSE_EVERY == 0:
                collapse_private_memory()  # a server that forks many children: make each fork and exit cheaper
            spare = _fork(main, walls, contain, sock)
        elif request["op"] == "prepare":
            error = prepare(request["key"], request["suite"], Path(request["path"]))
            kill_group(spare.pid)  # the spare was forked without it: replace it
            spare.close()
            folders[spare.pid] = spare.folder
            _reap(spare.pid, folders, None, contain)
            spare = _fork(main, walls, contain, sock)
            sock.sendall(json.dumps({"error": error}).encode())
        elif request["op"] == "release":
            _reap(request["pid"], folders, spare.pid, contain)
        elif request["op"] == "status":
            status, breached = _reap(request["pid"], folders, spare.pid, contain)
            sock.sendall(json.dumps({"status": status, "caps": breached}).encode())
        elif request["op"] == "caps":
            sock.sendall(json.dumps({"caps": contain.breached(request["pid"], folders.get(request["pid"]))}).encode())
        elif request["op"] == "walls":
            sock.sendall(json.dumps({"walls": in_force}).encode())
    folders[spare.pid] = spare.folder
    for pid in list(folders):
        contain.kill(pid)
        _reap(pid, folders, None, contain)
    contain.close()


def _fork(main: ChildMain, walls: Walls, contain: Containment, sock: socket.socket) -> _Spare:
    """Fork the next spare child: its folder, pipes and log made here, so that taking it costs nothing."""
    folder = contain.folder()
    to_read, to_child = os.pipe()
    from_child, to_write = os.pipe()
    log = _output_file()
    walls.arm(folder)  # the child's whole ruleset, built here while no case waits for it
    pid = contain.fork()
    if pid == 0:
        sock.close()
        os.close(to_child)
        os.close(from_child)
        main(to_read, to_write, log, folder, walls, contain)  # never returns
        os._exit(70)
    walls.disarm()
    for fd in (to_read, to_write):
        os.close(fd)
    try:
        os.setpgid(pid, pid)  # the child's own group, set from both sides (whichever runs first)
    except OSError:
        pass
    return _Spare(pid, to_child, from_child, log, folder)


def _reap(pid: int, folders: dict[int, Path], spare: int | None, contain: Containment) -> tuple[int, list[str]]:
    """Kill a child and everything it started, wait for it, remove its folder and cgroup; its wait status and
    the caps it ran into. The kill comes first, so the wait cannot block on a child that left its group."""
    contain.kill(pid)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    _kill_strays({p for p in (spare, *folders) if p is not None and p != pid})
    folder = folders.pop(pid, None)
    breached = contain.breached(pid, folder)
    contain.clean(pid, folder)
    return status, breached


def _output_file() -> int:
    """Where a child's stdout and stderr go: a file with no name (a memfd; an unlinked temporary file where
    there is none), which the harness reads through the descriptor it is handed with the child's pipes. A
    method can write into it, truncate it or close its own copy, but it cannot swap it for a link, a FIFO or
    a device: the harness never opens a path the child could have touched."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("shrinkbench-output", os.MFD_CLOEXEC)
    handle = tempfile.TemporaryFile()
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


def _kill_strays(keep: set[int]) -> None:
    """Kill every process descended from this server (orphans re-parented to the subreaper, and theirs) other
    than those in ``keep`` and their descendants, until none is left: all levels at once, so that a chain of
    processes each in a session of its own dies in one pass, not one level per pass."""
    me, deadline = os.getpid(), time.monotonic() + STRAY_SWEEP_SECONDS
    while time.monotonic() < deadline:
        strays = _descendants(me, keep)
        if not strays:
            return
        for pid in strays:
            kill_tree(pid)
        for pid in _children_of(me):  # reap what has come back to us; the rest on the next pass
            if pid not in keep:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.001)


def _descendants(root: int, keep: set[int]) -> list[int]:
    """Every process below ``root`` but the subtrees of ``keep``."""
    found, todo = [], [root]
    while todo:
        for pid in _children_of(todo.pop()):
            if pid not in keep:
                found.append(pid)
                todo.append(pid)
    return found


def _children_of(parent: int) -> list[int]:
    """This process's children, from the kernel's own list when it keeps one, else by scanning /proc."""
    try:  # every thread's list: a process forked from a thread is that thread's child
        return [int(pid) for task in os.scandir(f"/proc/{parent}/task")
                for pid in Path(task.path, "children").read_text().split()]
    except OSError:
        if not os.path.exists(f"/proc/{parent}") or os.path.exists(f"/proc/{parent}/task/{parent}/children"):
            return []  # gone meanwhile; only a kernel without the children lists needs the scan below
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def _close_other_fds(keep: set[int]) -> None:
    """Close every inherited descriptor but ``keep`` (xdist's channel to the controller, pytest's capture
    files, the results store's connection: none of it may reach a method)."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _quiet_stdio() -> None:
    """Point stdin/stdout/stderr at /dev/null and give Python fresh stream objects (the inherited ones may
    hold a lock another thread of the harness held at the fork)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
