"""What the fork server process does (see :mod:`.server`): keep a walled spare child ready, hand it over,
reap finished children and whatever they left behind, until the harness closes the control socket."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .cleanup import remove_tree
from .hugepages import COLLAPSE_EVERY, collapse_private_memory
from .walls import Walls

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_REQUEST = 1 << 16

# A child's entry point: (its two pipe ends, its output file (no name: see _output_file), its private folder, the walls,
# the memory cap) -> never returns.
ChildMain = Callable[[int, int, int, Path, Walls, "int | None"], None]
# Builds what every later child inherits from a prepared file (the base model of a subject); returns an error or None.
Prepare = Callable[[str, str, Path], "str | None"]


def prctl(option: int, value: int) -> None:
    """Linux prctl; nothing elsewhere (the walls then say what is missing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def kill_group(pid: int) -> None:
    """SIGKILL a child's process group (its subprocesses too), or the child alone if it has no group yet."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


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
           max_memory: int | None, warm: Callable[[], None] | None) -> None:
    """The server's loop, until the harness closes the socket."""
    _close_other_fds({sock.fileno()})
    _quiet_stdio()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle; the server ends with it
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() == 1:
        return  # the harness is already gone
    walls = Walls.prepare(hidden, landlock=landlock)  # once: each child only applies the prepared rules
    torch.set_num_threads(1)  # no OpenMP pool in the server: a child forked from one can deadlock
    if warm is not None:
        warm()  # first-call costs (torch's lazy imports, allocator) paid once here, not in every child
    folders: dict[int, Path] = {}
    taken = 0
    spare = _fork(main, walls, max_memory, sock)
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
            spare = _fork(main, walls, max_memory, sock)
        elif request["op"] == "prepare":
            error = prepare(request["key"], request["suite"], Path(request["path"]))
            kill_group(spare.pid)  # the spare was forked without it: replace it
            spare.close()
            folders[spare.pid] = spare.folder
            _reap(spare.pid, folders, None)
            spare = _fork(main, walls, max_memory, sock)
            sock.sendall(json.dumps({"error": error}).encode())
        elif request["op"] == "release":
            _reap(request["pid"], folders, spare.pid)
        elif request["op"] == "status":
            sock.sendall(json.dumps({"status": _reap(request["pid"], folders, spare.pid)}).encode())
    folders[spare.pid] = spare.folder
    for pid in list(folders):
        kill_group(pid)
        _reap(pid, folders, None)


def _fork(main: ChildMain, walls: Walls, max_memory: int | None, sock: socket.socket) -> _Spare:
    """Fork the next spare child: its folder, pipes and log made here, so that taking it costs nothing."""
    folder = Path(tempfile.mkdtemp(prefix="shrinkbench-child-"))
    to_read, to_child = os.pipe()
    from_child, to_write = os.pipe()
    log = _output_file()
    walls.arm(folder)  # the child's whole ruleset, built here while no case waits for it
    pid = os.fork()
    if pid == 0:
        sock.close()
        os.close(to_child)
        os.close(from_child)
        main(to_read, to_write, log, folder, walls, max_memory)  # never returns
        os._exit(70)
    walls.disarm()
    for fd in (to_read, to_write):
        os.close(fd)
    try:
        os.setpgid(pid, pid)  # the child's own group, set from both sides (whichever runs first)
    except OSError:
        pass
    return _Spare(pid, to_child, from_child, log, folder)


def _reap(pid: int, folders: dict[int, Path], spare: int | None) -> int:
    """Wait for a (killed) child, kill whatever it left behind, remove its folder; its wait status."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    _kill_strays({p for p in (spare, *folders) if p is not None and p != pid})
    folder = folders.pop(pid, None)
    if folder is not None:
        remove_tree(folder)
    return status


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
    """Kill every process that ended up a child of this server (orphans re-parented to the subreaper)
    other than those in ``keep``, until none is left."""
    me = os.getpid()
    for _ in range(100):
        strays = [pid for pid in _children_of(me) if pid not in keep]
        if not strays:
            return
        for pid in strays:
            kill_group(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        time.sleep(0.001)


def _children_of(parent: int) -> list[int]:
    """This process's children, from the kernel's own list when it keeps one, else by scanning /proc."""
    try:
        return [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    except OSError:
        pass
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
