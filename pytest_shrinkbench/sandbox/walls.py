"""The walls of the disposable child that runs a pruning method: Linux Landlock plus resource limits.

A method is untrusted code. Inside its child it may read the file system (models, data, its own
source) but not the hidden paths (the results store's signing key), write only its private temporary
folder and a few device files, open no TCP connection, and signal no process outside its own
Landlock domain; its address space is capped and it holds no capabilities, so it cannot lift the cap.

Landlock is driven through its three raw syscalls with ``ctypes``: the PyPI bindings are dev
releases or lack the network rights (ABI 4) and scopes (ABI 6), and three syscalls with fixed numbers
and three small structs are less code to review than a dependency to vet and pin.

:meth:`Walls.prepare` does the slow part once, in the fork server (resolving paths, listing the
directories around hidden paths, opening ``O_PATH`` descriptors); :meth:`Walls.apply` runs in each
forked child and only hands the inherited descriptors to the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from pathlib import Path

from ..results.schema import LEVEL_LANDLOCK, LEVEL_PROCESS
from .grants import planned_grants

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and aarch64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522

# File-system rights (ABI 1 unless noted).
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1_FS = (1 << 13) - 1  # the 13 rights of ABI 1: the four above, remove_*, make_*
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3 (ABI 5's IOCTL_DEV, 1 << 15, stays unhandled so that CUDA's ioctls work)
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_READ = _EXECUTE | _READ_FILE | _READ_DIR
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE  # the rights a rule on a non-directory may carry
_DEVICE = _READ_FILE | _WRITE_FILE | _TRUNCATE | _READ_DIR  # READ_DIR for /dev/nvidia-caps, a directory


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_NO_CAPABILITIES = (_CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)())  # capset's arguments: all sets empty


@cache
def _libc() -> ctypes.CDLL:
    """Loaded and typed once, in the server: a forked child inherits the resolved functions and pays no
    symbol lookup. Every argument of the variadic ``syscall`` and ``prctl`` goes as a full C long, as the
    kernel reads them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype, libc.syscall.argtypes = ctypes.c_long, (ctypes.c_long,) * 5
    libc.prctl.restype, libc.prctl.argtypes = ctypes.c_int, (ctypes.c_int,) + (ctypes.c_ulong,) * 4
    libc.capset.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    return libc


def _error(what: str) -> OSError:
    """An OSError naming the call that failed, so a child that cannot be walled says why."""
    code = ctypes.get_errno()
    return OSError(code, f"walls: {what} failed: {os.strerror(code)}")


def _check(result: int, what: str) -> int:
    if result < 0:
        raise _error(what)
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when there is none (not Linux, old kernel, disabled, any error),
    so callers fall back to the weaker process level instead of failing."""
    if sys.platform != "linux":
        return 0
    try:
        return max(_libc().syscall(_SYS_CREATE_RULESET, 0, 0, _CREATE_RULESET_VERSION, 0), 0)
    except Exception:  # noqa: BLE001  (no libc, no syscall(): no Landlock either)
        return 0


def limit_memory(max_bytes: int) -> None:
    """Cap the address space, the hard limit too, so the child cannot raise it back; a lower hard limit
    set from outside is kept. Not for CUDA processes: the driver reserves far more address space than it uses."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _drop_privileges() -> None:
    """No new privileges and no capabilities: a child running as root would otherwise lift its hard
    memory limit (CAP_SYS_RESOURCE) or open raw sockets around the TCP rules (CAP_NET_RAW). With
    no_new_privs set, nothing it executes gets capabilities back, not even as uid 0."""
    libc = _libc()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header, data = _NO_CAPABILITIES
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset (dropping all capabilities)")


def _handled_fs(abi: int) -> int:
    """Only the rights the running ABI knows: the kernel refuses a ruleset naming any other."""
    return _ABI1_FS | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)


def _ruleset_attr(abi: int) -> tuple[_RulesetAttr, int]:
    """The attribute and the size an older kernel accepts (it rejects fields it does not know)."""
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0  # handled with no rule: no TCP at all
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    return _RulesetAttr(_handled_fs(abi), net, scoped), size


def _open_grant(path: str, rights: int, handled: int) -> tuple[int, int]:
    """An O_PATH descriptor (inherited by forked children, not by exec'd programs) and the rights that fit
    what it turned out to be: a rule on a file may carry no directory right."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        rights &= _FILE_ONLY
    return fd, rights & handled


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive numbers: descriptors opened in a row form one run."""
    groups = [list(g) for _, g in groupby(enumerate(sorted(numbers)), key=lambda pair: pair[1] - pair[0])]
    return [(group[0][1], group[-1][1]) for group in groups]


@dataclass
class _Prepared:
    """What the server builds for a Landlock child. The rule structs sit in one contiguous array: a
    forked child pays a copy-on-write page fault per page of Python objects it touches, so reading one
    array costs a page or two where separate objects cost about one fault per rule."""

    paths: list[str]  # to name a rule in an error
    fd_runs: list[tuple[int, int]]  # the descriptors, as runs of consecutive numbers to close at once
    rules: ctypes.Array[_PathBeneathAttr]
    ruleset_attr: _RulesetAttr
    ruleset_size: int

    @classmethod
    def open(cls, hidden: Sequence[Path], abi: int) -> _Prepared:
        """Open a descriptor per planned rule; entries that vanish meanwhile are skipped (an ungranted path
        is unreadable, never leaked)."""
        handled, paths, opened = _handled_fs(abi), [], []
        try:
            for path, rights in planned_grants(hidden, _READ, _READ_DIR, _DEVICE):
                try:
                    opened.append(_open_grant(path, rights, handled))
                except FileNotFoundError:
                    continue
                paths.append(path)
        except BaseException:
            for fd, _ in opened:
                os.close(fd)
            raise
        rules = (_PathBeneathAttr * len(opened))(*(_PathBeneathAttr(rights, fd) for fd, rights in opened))
        return cls(paths, _runs([fd for fd, _ in opened]), rules, *_ruleset_attr(abi))

    def ruleset(self, writable: Path, handled: int) -> int:
        """A ruleset with the prepared rules and one for the writable folder, ready to enter (its descriptor)."""
        syscall = _libc().syscall
        ruleset = _check(syscall(_SYS_CREATE_RULESET, ctypes.addressof(self.ruleset_attr), self.ruleset_size, 0, 0),
                         "landlock_create_ruleset")
        try:
            writable_fd = os.open(writable, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
            try:
                own = _PathBeneathAttr(handled, writable_fd)
                if syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.addressof(own), 0) < 0:
                    raise _error(f"landlock_add_rule({str(writable)!r}), the writable folder")
            finally:
                os.close(writable_fd)
            start, size = ctypes.addressof(self.rules), ctypes.sizeof(_PathBeneathAttr)
            for index, address in enumerate(range(start, start + len(self.paths) * size, size)):
                if syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, address, 0) < 0:
                    raise _error(f"landlock_add_rule({self.paths[index]!r})")
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def close(self) -> None:
        """A few close_range calls rather than one close per rule; a run holds only our descriptors."""
        for first, last in self.fd_runs:
            os.closerange(first, last + 1)


@dataclass
class Walls:
    """Prepared once in the fork server (paths resolved, O_PATH fds opened), applied cheaply in each child."""

    level: str  # what apply() achieves: LEVEL_LANDLOCK, or LEVEL_PROCESS without Landlock
    abi: int  # the Landlock ABI the walls use; 0 at LEVEL_PROCESS
    rules: int  # path rules prepared (apply() adds one for the writable folder)
    _prepared: _Prepared | None = field(default=None, repr=False)  # None at LEVEL_PROCESS
    _closed: bool = field(default=False, repr=False)
    _armed: tuple[Path, int] | None = field(default=None, repr=False)  # a ruleset built ahead for this folder

    @classmethod
    def prepare(cls, hidden: Sequence[Path] = (), landlock: bool = True) -> Walls:
        """Do the slow part once, in the server: list the directories around hidden paths, open a
        descriptor and build a struct per rule."""
        abi = landlock_abi() if landlock else 0
        if abi == 0:
            return cls(LEVEL_PROCESS, 0, 0)
        prepared = _Prepared.open(hidden, abi)
        return cls(LEVEL_LANDLOCK, abi, len(prepared.paths), prepared)

    def arm(self, writable: Path) -> None:
        """In the server, before forking the child that will write ``writable``: build its whole ruleset now,
        so that the child's :meth:`apply` only enters it (the rules cost the server, not the case)."""
        self.disarm()
        if self._prepared is not None:
            self._armed = (Path(writable), self._prepared.ruleset(Path(writable), _handled_fs(self.abi)))

    def disarm(self) -> None:
        """In the server, once the child is forked: its copy of the ruleset descriptor is the one that counts."""
        if self._armed is not None:
            os.close(self._armed[1])
            self._armed = None

    def apply(self, writable: Path, max_memory_bytes: int | None = None) -> str:
        """Wall in this process for good (call it in the child, before any method code); returns the level.
        Raises OSError when the walls cannot be raised: such a child must not run the method.

        Also points TMPDIR and :mod:`tempfile` at ``writable``, the one place the child may write: the
        default /tmp is walled off, and torch's import (among others) fails without a usable temp dir."""
        if self._closed:
            raise OSError(errno.EBADF, "walls: apply() after close()")
        if max_memory_bytes is not None:
            limit_memory(max_memory_bytes)
        _drop_privileges()
        if self._prepared is not None:
            armed = self._armed if self._armed is not None and self._armed[0] == Path(writable) else None
            ruleset = armed[1] if armed else self._prepared.ruleset(Path(writable), _handled_fs(self.abi))
            try:
                _check(_libc().syscall(_SYS_RESTRICT_SELF, ruleset, 0, 0, 0), "landlock_restrict_self")
            finally:
                os.close(ruleset)
                self._armed = None
        self.close()
        os.environ["TMPDIR"] = str(writable)  # for subprocesses
        tempfile.tempdir = None  # forget a temp dir the server may have settled on
        return self.level

    def close(self) -> None:
        """Close the prepared descriptors: in the server at shutdown, and in each child once walled (apply()
        does it), so method code holds no handles on the file system. Idempotent."""
        if self._prepared is not None and not self._closed:
            self._prepared.close()
        self.disarm()
        self._closed = True
