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
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import CaseFailure
from ..results.schema import LEVEL_IN_PROCESS, LEVEL_LANDLOCK, LEVEL_PROCESS
from ..suites.registry import SUITES
from . import child
from .contain import Caps
from .discovery import IMPORT_TIMEOUT, MAX_REPLY_BYTES, accept, file_hash, planned_names, precompile, registered_here, targets
from .inprocess import InProcessCalls
from .methods import METHODS
from .protocol import (MAX_ERROR_CHARS, Answer, Call, Discover, MethodInfo, ProtocolError, Ready, Setup, decode, encode,
                       printable, receive, send)
from .server import Child, ForkServer, ServerGone
from .walls import landlock_abi

# How much of the method's last output a failure message quotes.
OUTPUT_TAIL_CHARS = 400
OUTPUT_TAIL_BYTES = 4 * OUTPUT_TAIL_CHARS  # what is read of it: a character is at most 4 bytes of UTF-8
ANSWER_SLACK = 64 * 2**20


class _ImportFailed(Exception):
    """A method file or module discovery could not use: why, in one line."""


def _where(origin: str) -> str:
    """How a message names a discovery target: ``method file <path>`` or ``module <name>``."""
    kind, _, where = origin.partition(":")
    return {"file": f"method file {where}", "module": f"module {where}"}.get(kind, "a conftest.py")


class MethodCalls(Protocol):
    """One case's conversation with its method."""

    def call(self, compression: float, step: int, state: dict[str, torch.Tensor] | None) -> Answer: ...

    def close(self) -> None: ...


class Sandbox:
    """Where methods run: ``mode`` is ``landlock``, ``process`` or ``in-process``; ``hidden`` are paths no
    method may read (the cache with the store's signing key, suites' data); ``caps`` limit each case's
    processes together; ``cuda``: cases may use CUDA (no address-space cap as a fallback for memory);
    ``import_timeout`` is the seconds a method file or module may take to import (0: no limit).

    In the ``in-process`` mode, discovery still imports each method file in a walled child of its own
    (the server exists for that, and ends with it): this process imports only the module of a method it
    runs, at its first case, so a debugging session runs no other file's code."""

    def __init__(self, mode: str = "landlock", hidden: list[Path] | None = None, caps: Caps = Caps(),
                 cuda: bool = False, import_timeout: float = IMPORT_TIMEOUT) -> None:
        if mode not in ("landlock", "process", "in-process"):
            raise ValueError(f"unknown sandbox mode {mode!r}")
        self.mode = mode
        self.abi = landlock_abi() if mode != "process" else 0
        self.level = {"in-process": LEVEL_IN_PROCESS, "process": LEVEL_PROCESS}.get(mode) or (
            LEVEL_LANDLOCK if self.abi > 0 else LEVEL_PROCESS)
        self.import_timeout = import_timeout
        self.methods: dict[str, MethodInfo] = {}
        self.errors: dict[str, str] = {}  # method files or packages that failed to import, or names claimed twice
        self.stray_suites: list[str] = []  # suites registered by method files (never seen by the harness)
        self._server = ForkServer(child.main, child.prepare, list(hidden or []), self.abi > 0, caps, cuda, warm=_warm_up)
        self._prepared: set[str] = set()  # base models the server holds built
        self._walls: str | None = None
        self.single_threaded = False  # set when the server was forked from a process with native threads

    def start(self) -> None:
        """Fork the server now: before this process loads data, keys or runs parallel torch ops.

        A process that already runs native threads of its own (an OpenMP pool torch started) can hand its
        children a pool that does not exist: their first parallel op would hang. Such a server's children
        may then only use one thread (:meth:`open` says so)."""
        if self.mode != "in-process" and self._server.pid is None:
            self.single_threaded = len(os.listdir("/proc/self/task")) > threading.active_count() if os.path.isdir("/proc/self/task") else False
            self._server.start()

    def close(self) -> None:
        self._server.close()

    @property
    def walls(self) -> str:
        """The walls in force around each case's method, as a row records them: sorted names, space-separated
        (``landlock:7 memory-cap net-namespace ...``; empty in-process). Asked of the server once."""
        if self._walls is None:
            self._walls = "" if self._server is None else " ".join(sorted(self._running().walls()))
        return self._walls

    def discover(self, folders: list[Path]) -> None:
        """Find the methods of installed packages, of ``folders`` and of conftest files: each package module and
        each method file imported in a walled child of its own, under :attr:`import_timeout`; what a reply may
        say is checked by :func:`~.discovery.accept`; where a method lives and its hash are this process's own."""
        chosen = targets(folders)
        precompile(Path(t.partition(":")[2]) for t in chosen if t.startswith("file:"))
        claims: dict[str, list[MethodInfo]] = {}
        for info in registered_here():
            claims.setdefault(info.name, []).append(info)
        self.errors, suites, failed = {}, set(), {}
        for target in chosen:
            try:
                found, registered = self._describe(target)
            except _ImportFailed as why:
                self.errors[_where(target)] = failed[target] = str(why)
                continue
            suites.update(registered)
            for info in found:
                claims.setdefault(info.name, []).append(info)
        if self.mode == "in-process":
            self._server.close()  # discovery was its only use: this process runs the methods
        self.methods = {}
        for name, infos in sorted(claims.items()):
            self.methods[name] = self._settle(name, infos)
        for target, why in failed.items():  # a file that failed: the cases of the methods it names fail with its line
            if target.startswith("file:"):
                path = Path(target.partition(":")[2])
                for name in planned_names(path):
                    self.methods.setdefault(name, MethodInfo(name, target, file_hash(path), broken=f"{_where(target)} {why}"))
        self.stray_suites = sorted(suites)

    def _settle(self, name: str, claims: list[MethodInfo]) -> MethodInfo:
        """Who runs ``name`` when several claim it: an installed module or a conftest before any method file (as
        when one process imported them all, the file's registration was the one refused); between equals, neither
        (a file cannot put its code under another file's method; the clash is reported and its cases fail)."""
        by_origin = {c.origin: c for c in claims}
        if len(by_origin) == 1:
            return claims[0]
        first = [c for c in by_origin.values() if not c.origin.startswith("file:")]
        for late in [c for c in by_origin.values() if c.origin.startswith("file:")] if len(first) == 1 else []:
            self.errors[f"method {name!r} of {_where(late.origin)}"] = f"not run from that file: {_where(first[0].origin)} defines it"
        if len(first) == 1:
            return first[0]
        why = f"method {name!r} is defined by {' and by '.join(_where(o) for o in sorted(by_origin))}: neither is run"
        self.errors[f"method {name!r}"] = why
        return replace(claims[0], broken=why)

    def _describe(self, target: str) -> tuple[list[MethodInfo], list[str]]:
        """One discovery child's import of ``target``, and what its reply may name; :class:`_ImportFailed` says why not."""
        self._running()
        conversation = self._take()
        deadline = time.monotonic() + self.import_timeout if self.import_timeout > 0 else None
        try:
            send(conversation.to_child, Discover(target))
            reply = receive(conversation.from_child, MAX_REPLY_BYTES, deadline)
        except TimeoutError:
            raise _ImportFailed(f"did not finish importing within {self.import_timeout:g} s (--shrink-import-timeout)") from None
        except (EOFError, BrokenPipeError, ProtocolError) as exc:
            how = f"sent a malformed reply ({exc})" if isinstance(exc, ProtocolError) else "ended before it replied"
            raise _ImportFailed(f"failed to import: its process {how}: it {self._server.status(conversation)}"
                                f"{tail(conversation.log)}") from None
        finally:
            self._server.release(conversation)
        if isinstance(reply, dict) and isinstance(reply.get("error"), str):
            raise _ImportFailed(f"failed to import: {printable(reply['error'], MAX_ERROR_CHARS)}")
        try:
            return accept(target, reply)
        except ValueError as exc:
            raise _ImportFailed(f"could not be used: {exc}") from None

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
        if setup.method.broken:
            raise CaseFailure(setup.method.broken)
        if self.mode == "in-process":
            return InProcessCalls(setup)
        self.start()
        if self.single_threaded and setup.threads > 1:
            raise RuntimeError(f"this process ran multi-threaded torch before its sandbox's fork server started, so a "
                               f"child cannot use {setup.threads} threads: start the sandbox first "
                               f"(pytest_shrinkbench.sandbox.runner.default_sandbox()) or use one thread")
        return ChildCalls(self, setup)

    def _running(self) -> ForkServer:
        """The fork server, replaced by a fresh interpreter if it ended (never forked again from this process,
        which now holds data and the key: :mod:`.fresh`)."""
        if self._server.pid is None and not self._server.restarts:  # first use (a notebook's sandbox; discovery in
            self.start() if self.mode != "in-process" else self._server.start()  # the in-process mode)
        elif not self._server.alive:  # killed from outside (or, without Landlock's signal scope, by a method)
            self._replace_server()
        return self._server

    def _replace_server(self) -> None:
        self._prepared.clear()  # a fresh server holds no model built
        self._server.restart()

    def _take(self) -> Child:
        try:
            return self._running().take()
        except ServerGone:  # it is ending since it was last seen alive: once more, with a fresh one
            self._replace_server()
            try:
                return self._server.take()
            except ServerGone as exc:
                raise CaseFailure(f"{exc}, and a fresh one could not be started") from None

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
            restarts = self.sandbox._running().restarts  # a server that ended is replaced before the model is prepared
            setup = self.sandbox._ship(self.setup)
            self._child = self.sandbox._take()
            if self.sandbox._server.restarts != restarts:  # replaced since: its children hold no model built
                setup = self.setup
            self._send(setup)
            timeout = self.sandbox.import_timeout
            self._receive(Ready, time.monotonic() + timeout if timeout > 0 else None,
                          f"did not import the method's module within {timeout:g} s (--shrink-import-timeout)")
        self._send(Call(compression, step, state))
        return self._receive(Answer)

    def _receive(self, kind: type, deadline: float | None = None, late: str = "") -> Any:
        try:
            message = receive(self._child.from_child, self.limit, deadline)
        except TimeoutError:
            raise self._failure(late) from None
        except EOFError:
            raise self._failure("ended before it answered") from None
        except ProtocolError as exc:
            raise self._failure(f"sent a malformed answer ({exc})") from None
        if not isinstance(message, kind):
            raise self._failure(f"sent a {type(message).__name__}, not {'an answer' if kind is Answer else 'word of its import'}")
        breached = self.sandbox._server.breached(self._child) if kind is Answer else []
        if breached:  # whatever it answered, it had more than its caps allow along the way
            child, self._child = self._child, None
            self.sandbox._server.status(child)  # killed, reaped, its folder and cgroup removed
            raise CaseFailure(f"method {self.name!r} ran into {' and '.join(breached)}")
        return message

    def _send(self, message: Any) -> None:
        try:
            send(self._child.to_child, message)
        except BrokenPipeError:
            raise self._failure("ended before it answered") from None

    def _failure(self, what: str) -> CaseFailure:
        """Kill the child now (it is not released again) and say what happened and how it ended."""
        child, self._child = self._child, None
        output = tail(child.log)
        ended = self.sandbox._server.status(child)
        child.close_pipes()
        return CaseFailure(f"method {self.name!r}'s process {what}: it {ended}{output}")

    def close(self) -> None:
        if self._child is not None:
            self.sandbox._server.release(self._child)
            self._child = None


def tail(log: int) -> str:
    """The last thing the method printed, for a failure message: read through the descriptor the harness was
    handed (never a path), at most :data:`OUTPUT_TAIL_BYTES`, with ``pread`` on a file with no name (it cannot
    block), escapes written out."""
    try:
        size = os.fstat(log).st_size
        data = os.pread(log, OUTPUT_TAIL_BYTES, max(0, size - OUTPUT_TAIL_BYTES))
    except OSError:
        return ""
    lines = data.replace(b"\0", b"").decode(errors="replace").splitlines()  # NULs: a sparse or zeroed file
    text = " | ".join(line.strip() for line in lines if line.strip())
    return f"; its last output: {printable(text[-OUTPUT_TAIL_CHARS:], OUTPUT_TAIL_CHARS)}" if text else ""


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
_default_suites: dict[str, int] = {}  # the suites its fork server knows: name -> id of the Suite object


def default_sandbox() -> Sandbox:
    """This process's sandbox for the public API (``run_case`` outside pytest): Landlock where the kernel has
    it, the installed methods and those registered in this process (a conftest, a notebook cell). Its fork
    server is forked at first use, and again once a method was registered since (its children know only the
    methods of the moment it forked), or a suite registered or overridden (its children build the suite's model
    as it was then): in a notebook that ran multi-threaded torch ops before, keep the case's thread count at 1
    (the default)."""
    global _default, _default_suites
    suites = {name: id(SUITES.get(name)) for name in SUITES.names()}
    if _default is not None and (set(METHODS.names()) - set(_default.methods) or suites != _default_suites):
        _default.close()  # methods or suites registered here since its fork server started: a new one inherits them
        _default = None
    if _default is None:
        _default, _default_suites = Sandbox("landlock"), suites
        _default.discover([])
        atexit.register(_default.close)
    return _default
