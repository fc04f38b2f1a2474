"""The harness's handle on the method's side: discovery, and one conversation with a method per case.

A :class:`Sandbox` belongs to one process that runs cases (a pytest process, an xdist worker, a
notebook). In the ``landlock`` and ``process`` modes it owns a fork server (:mod:`.server`), and each
case talks to a fresh child through :class:`ChildCalls`; in the ``in-process`` mode (for stepping
into a method with a debugger) :class:`~.inprocess.InProcessCalls` calls the method directly, and
its rows are marked unverified. Either way the harness gets back only an :class:`~.protocol.Answer`.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import CaseFailure
from ..results.schema import LEVEL_IN_PROCESS, LEVEL_LANDLOCK, LEVEL_PROCESS
from . import child
from .contain import Caps
from .discovery import file_hash, find_methods, precompile
from .inprocess import InProcessCalls
from .methods import METHODS, load_installed
from .protocol import Answer, Call, Discover, MethodInfo, ProtocolError, Setup, decode, encode, receive, send
from .server import Child, ForkServer
from .walls import landlock_abi

# How much of the method's last output a failure message quotes.
OUTPUT_TAIL_CHARS = 400
ANSWER_SLACK = 64 * 2**20


class MethodCalls(Protocol):
    """One case's conversation with its method."""

    def call(self, compression: float, step: int, state: dict[str, torch.Tensor] | None) -> Answer: ...

    def close(self) -> None: ...


class Sandbox:
    """Where methods run: ``mode`` is ``landlock``, ``process`` or ``in-process``; ``hidden`` are paths no
    method may read (the cache with the store's signing key, suites' data); ``caps`` limit each case's
    processes together; ``cuda``: cases may use CUDA (no address-space cap as a fallback for memory)."""

    def __init__(self, mode: str = "landlock", hidden: list[Path] | None = None, caps: Caps = Caps(),
                 cuda: bool = False) -> None:
        if mode not in ("landlock", "process", "in-process"):
            raise ValueError(f"unknown sandbox mode {mode!r}")
        self.mode = mode
        self.abi = landlock_abi() if mode == "landlock" else 0
        self.level = {"in-process": LEVEL_IN_PROCESS, "process": LEVEL_PROCESS}.get(mode) or (
            LEVEL_LANDLOCK if self.abi > 0 else LEVEL_PROCESS)
        self.methods: dict[str, MethodInfo] = {}
        self.errors: dict[str, str] = {}  # method files or packages that failed to import
        self.stray_suites: list[str] = []  # suites registered by method files (never seen by the harness)
        self._server = None if mode == "in-process" else ForkServer(
            child.main, child.prepare, list(hidden or []), self.level == LEVEL_LANDLOCK, caps, cuda, warm=_warm_up)
        self._prepared: set[str] = set()  # base models the server holds built
        self._walls: str | None = None
        self.single_threaded = False  # set when the server was forked from a process with native threads

    def start(self) -> None:
        """Fork the server now: before this process loads data, keys or runs parallel torch ops.

        A process that already runs native threads of its own (an OpenMP pool torch started) can hand its
        children a pool that does not exist: their first parallel op would hang. Such a server's children
        may then only use one thread (:meth:`open` says so)."""
        if self._server is not None and self._server.pid is None:
            self.single_threaded = len(os.listdir("/proc/self/task")) > threading.active_count() if os.path.isdir("/proc/self/task") else False
            self._server.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def walls(self) -> str:
        """The walls in force around each case's method, as a row records them: sorted names, space-separated
        (``landlock:7 memory-cap net-namespace ...``; empty in-process). Asked of the server once."""
        if self._walls is None:
            self._walls = "" if self._server is None else " ".join(sorted(self._running().walls()))
        return self._walls

    def discover(self, folders: list[Path]) -> None:
        """Find the methods of installed packages, of ``folders`` and of conftest files (imported in a child)."""
        if self._server is None:
            load_installed()
            found = find_methods(folders)
        else:
            conversation = self._take()
            try:
                send(conversation.to_child, Discover([str(f) for f in folders]))
                found = receive(conversation.from_child)
            except (EOFError, BrokenPipeError, ProtocolError):
                output = tail(conversation.log)
                raise RuntimeError(f"method discovery failed: its process {self._server.status(conversation)}{output}") from None
            self._server.release(conversation)
        self.methods = {m.name: MethodInfo(m.name, m.origin, file_hash(m), m.baseline, m.steps, m.regrowth)
                        for m in found["methods"]}
        self.errors, self.stray_suites = dict(found["errors"]), list(found["suites"])
        precompile(self.methods.values())

    def catalogue(self) -> list[dict[str, Any]]:
        """The discovered methods as plain data (xdist hands it to each worker)."""
        return [m.as_dict() for m in self.methods.values()]

    def receive(self, catalogue: list[dict[str, Any]]) -> None:
        """Take the controller's discovery instead of repeating it (every worker must run the same methods)."""
        self.methods = {m["name"]: MethodInfo(**m) for m in catalogue}

    def method(self, name: str) -> MethodInfo:
        try:
            return self.methods[name]
        except KeyError:
            raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(self.methods)) or 'none'}") from None

    def open(self, setup: Setup) -> MethodCalls:
        """The conversation of one case with its method (its child is taken at the first call)."""
        if self._server is None:
            return InProcessCalls(setup)
        self.start()
        if self.single_threaded and setup.threads > 1:
            raise RuntimeError(f"this process ran multi-threaded torch before its sandbox's fork server started, so a "
                               f"child cannot use {setup.threads} threads: start the sandbox first "
                               f"(pytest_shrinkbench.sandbox.runner.default_sandbox()) or use one thread")
        return ChildCalls(self, setup)

    def _running(self) -> ForkServer:
        self.start()
        if not self._server.alive:  # something killed it (without Landlock's signal scope, a method could)
            self._server.close()
            self._prepared.clear()
            self._server.start()
        return self._server

    def _take(self) -> Child:
        return self._running().take()

    def _ship(self, setup: Setup) -> Setup:
        """``setup`` as sent to a child: without the base weights once the server holds that model built
        (prepared on a subject's first case: every later child inherits it, nothing to build or send)."""
        if setup.state is None or setup.base in self._prepared:
            return replace(setup, state=None)
        with tempfile.TemporaryDirectory(prefix="shrinkbench-base-") as folder:
            path = Path(folder) / "state"
            path.write_bytes(encode(setup.state))
            self._running().prepare(setup.base, setup.suite, path)
        self._prepared.add(setup.base)
        return replace(setup, state=None)


class ChildCalls:
    """A case's method in a fresh, walled child process; killed (with anything it started) at :meth:`close`."""

    def __init__(self, sandbox: Sandbox, setup: Setup) -> None:
        self.sandbox, self.setup = sandbox, setup
        self.name = setup.method.name
        self._child: Child | None = None
        # What an honest answer can weigh: a mask and a new value for every weight, twice over, and room for a
        # traceback. A child cannot make the harness allocate more than that.
        self.limit = 2 * sum(t.numel() * (1 + t.element_size()) for t in (setup.state or {}).values()) + ANSWER_SLACK

    def call(self, compression: float, step: int, state: dict[str, torch.Tensor] | None) -> Answer:
        if self._child is None:
            setup = self.sandbox._ship(self.setup)
            self._child = self.sandbox._take()
            self._send(setup)
        self._send(Call(compression, step, state))
        try:
            answer = receive(self._child.from_child, self.limit)
        except EOFError:
            raise self._failure("ended before it answered") from None
        except ProtocolError as exc:
            raise self._failure(f"sent a malformed answer ({exc})") from None
        if not isinstance(answer, Answer):
            raise self._failure(f"sent a {type(answer).__name__}, not an answer")
        breached = self.sandbox._server.breached(self._child)
        if breached:  # whatever it answered, it had more than its caps allow along the way
            child, self._child = self._child, None
            self.sandbox._server.status(child)  # killed, reaped, its folder and cgroup removed
            raise CaseFailure(f"method {self.name!r} ran into {' and '.join(breached)}")
        return answer

    def _send(self, message: Any) -> None:
        try:
            send(self._child.to_child, message)
        except BrokenPipeError:
            raise self._failure("ended before it answered") from None

    def _failure(self, what: str) -> CaseFailure:
        """Kill the child now (it is not released again) and say what happened and how it ended."""
        child, self._child = self._child, None
        output = tail(child.log)  # before the server removes the child's folder
        return CaseFailure(f"method {self.name!r}'s process {what}: it {self.sandbox._server.status(child)}{output}")

    def close(self) -> None:
        if self._child is not None:
            self.sandbox._server.release(self._child)
            self._child = None


def tail(log: Path) -> str:
    """The last thing the method printed, for a failure message."""
    try:
        text = " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip())
    except OSError:
        return ""
    return f"; its last output: {text[-OUTPUT_TAIL_CHARS:]}" if text else ""


def _warm_up() -> None:
    """Pay torch's first-call costs (lazy imports, module construction, the protocol) once, in the server.

    ``torch.manual_seed`` is among them: without a GPU it queues the CUDA seed with a formatted stack
    trace, and formatting reads the source of every file on the stack (about 1 ms in a fresh child)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    decode(encode(Answer(masks=dict(model.state_dict()))))
    torch.topk(torch.rand(8), 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)


_default: Sandbox | None = None


def default_sandbox() -> Sandbox:
    """This process's sandbox for the public API (``run_case`` outside pytest): Landlock where the kernel has
    it, the installed methods and those registered in this process (a conftest, a notebook cell). Its fork
    server is forked at first use, and again once a method was registered since (its children know only the
    methods of the moment it forked): in a notebook that ran multi-threaded torch ops before, keep the
    case's thread count at 1 (the default)."""
    global _default
    if _default is not None and set(METHODS.names()) - set(_default.methods):
        _default.close()  # methods registered here since its fork server started: a new one inherits them
        _default = None
    if _default is None:
        _default = Sandbox("landlock")
        _default.discover([])
        atexit.register(_default.close)
    return _default
