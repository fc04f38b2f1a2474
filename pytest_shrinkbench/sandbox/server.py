"""The fork server: a process that has imported torch and the project's suites, and forks one child per case.

Why a fork server: a fresh interpreter per case would pay torch's import (seconds) every time,
while a plain ``fork`` of the measuring process would hand the child everything the harness holds
(held-out data, the results store's key, the running session). The server is forked from the
pytest process in ``pytest_configure`` — after pytest imported the project's ``conftest.py`` (so a
child can build any suite's model exactly as the harness does) and before any subject, data or key
is loaded and before any parallel torch op ran (forking after OpenMP started can deadlock a child).
It keeps no descriptor of the harness but its control socket. A server that dies mid-session is
replaced by a fresh interpreter (:mod:`.fresh`), never forked again from the harness.

Forking a process that imported torch costs about 10 ms, and its exit as much again (the CUDA build
maps ~300 MB of private memory), so neither is on a case's critical path: the server keeps one
*spare* child forked ahead — already walled, in its private folder, waiting for its first message —
and hands it over on request, then forks the next spare while the case runs; a finished child is
killed and reaped in the background. The server is also the children's reaper for anything they
leave behind: ``PR_SET_CHILD_SUBREAPER`` makes orphans of a child its children, and it kills them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from . import fresh
from .contain import Caps
from .serve import MAX_REQUEST, ChildMain, Prepare, kill_group, serve


def describe(status: int) -> str:
    """How a child ended, in words, from its wait status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        hint = " (out of memory, a kill from outside, or the time limit)" if number == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {os.WEXITSTATUS(status)}"


@dataclass
class Child:
    """A child handed to the harness: its pid, the harness's ends of its pipes, its output (a descriptor on a
    file with no name, never a path: see :func:`.serve._output_file`)."""

    pid: int
    to_child: int
    from_child: int
    log: int

    def close_pipes(self) -> None:
        for fd in (self.to_child, self.from_child, self.log):
            try:
                os.close(fd)
            except OSError:
                pass


class ServerGone(RuntimeError):
    """The fork server ended (killed from outside, or by a method where signals are not walled)."""


class ForkServer:
    """The harness's handle on its fork server (one per pytest process that runs cases).

    :meth:`start` forks the first server from this process (before it holds data or keys); :meth:`restart`
    replaces a dead one with a fresh interpreter (:mod:`.fresh`), never with a fork of this process as it
    is by then."""

    def __init__(self, main: ChildMain, prepare: Prepare, hidden: list[Path], landlock: bool, caps: Caps, cuda: bool = False,
                 warm: Callable[[], None] | None = None) -> None:
        self._spec = (main, prepare, hidden, landlock, caps, cuda, warm)
        self.caps = caps
        self._fresh: dict[str, Any] = {}  # what a fresh server loads: set when the first one is forked
        self._sock: socket.socket | None = None
        self.pid: int | None = None
        self.restarts = 0

    def start(self) -> None:
        """Fork the first server from this process."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._fresh = {"hidden": [str(h) for h in self._spec[2]], "landlock": self._spec[3], "caps": asdict(self.caps),
                       "cuda": self._spec[5], "path": list(sys.path), "conftests": fresh.conftests()}
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the server
            try:
                ours.close()
                serve(theirs, *self._spec)
            finally:
                os._exit(0)
        theirs.close()
        self._sock, self.pid = ours, pid

    def restart(self) -> None:
        """Replace a server that ended with a fresh interpreter loading what the first server had loaded."""
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.pid = fresh.spawn(theirs, self._fresh)
        finally:
            theirs.close()
        self._sock = ours
        self.restarts += 1

    @property
    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def _ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        try:
            self._sock.sendall(json.dumps(request).encode())
            data, fds, _flags, _addr = socket.recv_fds(self._sock, MAX_REQUEST, 3)
        except OSError as exc:
            raise ServerGone(f"the sandbox's fork server ended ({exc})") from None
        if not data:
            raise ServerGone("the sandbox's fork server ended")
        return json.loads(data), fds

    def take(self) -> Child:
        """A fresh, walled child, waiting for its first message."""
        reply, (to_child, from_child, log) = self._ask({"op": "take"})
        return Child(reply["pid"], to_child, from_child, log)

    def prepare(self, key: str, suite: str, path: Path) -> None:
        """Have the server build ``suite``'s model from the state in ``path`` once, under ``key``: every child
        forked afterwards inherits it instead of building and loading its own."""
        reply, _ = self._ask({"op": "prepare", "key": key, "suite": suite, "path": str(path)})
        if reply.get("error"):
            raise RuntimeError(f"the fork server could not prepare suite {suite!r}: {reply['error']}")

    def release(self, child: Child) -> None:
        """Kill ``child`` and whatever it started; the server reaps it and removes its folder in the background."""
        child.close_pipes()
        kill_group(child.pid)
        try:
            self._sock.sendall(json.dumps({"op": "release", "pid": child.pid}).encode())
        except OSError:
            pass  # the server is gone, and its children with it (their parent-death signal)

    def status(self, child: Child) -> str:
        """Kill ``child`` (if it is still running), wait for it, and say how it ended (a cap it ran into first)."""
        kill_group(child.pid)
        try:
            reply, _ = self._ask({"op": "status", "pid": child.pid})
        except ServerGone:
            return "ended with its fork server (which was killed or crashed)"
        return "; ".join([f"ran into {self.caps.describe(cap)}" for cap in reply["caps"]] + [describe(reply["status"])])

    def breached(self, child: Child) -> list[str]:
        """The caps ``child``'s processes ran into so far, in words (empty: none)."""
        reply, _ = self._ask({"op": "caps", "pid": child.pid})
        return [self.caps.describe(cap) for cap in reply["caps"]]

    def walls(self) -> list[str]:
        """The walls the server's children run behind, as rows record them (see :mod:`.contain`)."""
        reply, _ = self._ask({"op": "walls"})
        return list(reply["walls"])

    def close(self) -> None:
        """End the server (it kills what is left of its children), and wait for it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
