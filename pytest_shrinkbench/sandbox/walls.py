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
import glob
import os
import resource
import stat
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

LEVEL_LANDLOCK = "process+landlock"
LEVEL_PROCESS = "process"
LEVEL_IN_PROCESS = "in-process"

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
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


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


class _Grant(NamedTuple):
    """One path rule: the path is kept only to name it in an error."""

    path: str
    fd: int
    rights: int


@cache
def _libc() -> ctypes.CDLL:
    """Loaded once, in the server: a forked child inherits it, so apply() pays no dlopen."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    """Turn a C-style -1 into an OSError naming the call, so a child that cannot be walled says why."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"walls: {what} failed: {os.strerror(code)}")
    return result


def _syscall(number: int, *args: object) -> int:
    """Integers go as C longs: ``syscall`` is variadic and reads each argument as a full register."""
    return _libc().syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when there is none (not Linux, old kernel, disabled, any error),
    so callers fall back to the weaker process level instead of failing."""
    if sys.platform != "linux":
        return 0
    try:
        return max(_syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION), 0)
    except Exception:  # no libc, no syscall(): no Landlock either
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
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)), "prctl(PR_SET_NO_NEW_PRIVS)")
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset (dropping all capabilities)")


def _handled_fs(abi: int) -> int:
    """Only the rights the running ABI knows: the kernel refuses a ruleset naming any other."""
    return _ABI1_FS | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)


def _ruleset_attr(abi: int) -> tuple[_RulesetAttr, int]:
    """The attribute and the size an older kernel accepts (it rejects fields it does not know)."""
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0  # handled with no rule: no TCP at all
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    return _RulesetAttr(_handled_fs(abi), net, scoped), size


def _touches(target: Path, hidden: Sequence[Path]) -> bool:
    """Whether ``target`` is, contains or lies in a hidden path."""
    return any(target == h or target in h.parents or h in target.parents for h in hidden)


def _reveals(link: Path, hidden: Sequence[Path]) -> bool:
    """A rule follows a symlink to its target: a link into (or above) a hidden path would grant it."""
    try:
        return _touches(link.resolve(), hidden)
    except (OSError, RuntimeError):  # a loop: nothing sensible to grant
        return True


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


def _planned_grants(hidden: Sequence[Path]) -> list[tuple[str, int]]:
    """Paths and rights to grant, before descriptors are opened. A hidden path that does not exist yet
    stops the walk at its nearest existing ancestor, so whatever is created there later stays unreadable."""
    resolved = [Path(h).resolve() for h in hidden]
    if not resolved:
        reads = [("/", _READ)]
    else:  # READ_DIR from / down: the ancestors of hidden paths can be listed (names only, not contents)
        reads = [("/", _READ_DIR)] + [(p, _READ) for p in _read_grants_under(Path("/"), resolved, resolved)]
    devices = [*_DEVICES, *sorted(glob.glob("/dev/nvidia*"))]  # CUDA opens /dev/nvidia* read-write
    return reads + [(d, _DEVICE) for d in devices if os.path.exists(d)]


def _open_grant(path: str, rights: int, handled: int) -> _Grant:
    """An O_PATH descriptor (inherited by forked children, not by exec'd programs) and the rights that fit
    what it turned out to be: a rule on a file may carry no directory right."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        rights &= _FILE_ONLY
    return _Grant(path, fd, rights & handled)


@dataclass
class Walls:
    """Prepared once in the fork server (paths resolved, O_PATH fds opened), applied cheaply in each child."""

    level: str  # what apply() achieves: LEVEL_LANDLOCK, or LEVEL_PROCESS without Landlock
    abi: int  # the Landlock ABI the walls use; 0 at LEVEL_PROCESS
    rules: int  # path rules prepared (apply() adds one for the writable folder)
    _grants: list[_Grant] | None = field(default_factory=list, repr=False)  # None once closed

    @classmethod
    def prepare(cls, hidden: Sequence[Path] = (), landlock: bool = True) -> Walls:
        """Do the slow part once: list the directories around hidden paths and open a descriptor per rule.
        Entries that vanish meanwhile are skipped: an ungranted path is unreadable, never leaked."""
        abi = landlock_abi() if landlock else 0
        if abi == 0:
            return cls(LEVEL_PROCESS, 0, 0)
        handled, grants = _handled_fs(abi), []
        try:
            for path, rights in _planned_grants(hidden):
                try:
                    grants.append(_open_grant(path, rights, handled))
                except FileNotFoundError:
                    continue
        except BaseException:
            for grant in grants:
                os.close(grant.fd)
            raise
        return cls(LEVEL_LANDLOCK, abi, len(grants), grants)

    def apply(self, writable: Path, max_memory_bytes: int | None = None) -> str:
        """Wall in this process for good (call it in the child, before any method code); returns the level.
        Raises OSError when the walls cannot be raised: such a child must not run the method."""
        if self._grants is None:
            raise OSError(errno.EBADF, "walls: apply() after close()")
        if max_memory_bytes is not None:
            limit_memory(max_memory_bytes)
        _drop_privileges()
        if self.level == LEVEL_LANDLOCK:
            self._restrict(Path(writable))
        self.close()
        return self.level

    def _restrict(self, writable: Path) -> None:
        """Build the ruleset from the inherited descriptors plus the writable folder, and enter it."""
        attr, size = _ruleset_attr(self.abi)
        ruleset = _check(_syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0), "landlock_create_ruleset")
        try:
            writable_fd = os.open(writable, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
            try:
                for grant in [*self._grants, _Grant(str(writable), writable_fd, _handled_fs(self.abi))]:
                    rule = _PathBeneathAttr(grant.rights, grant.fd)
                    _check(_syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0),
                           f"landlock_add_rule({grant.path!r})")
            finally:
                os.close(writable_fd)
            _check(_syscall(_SYS_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
        finally:
            os.close(ruleset)

    def close(self) -> None:
        """Close the prepared descriptors: in the server at shutdown, and in each child once walled (apply()
        does it), so method code does not hold handles on the file system. Idempotent."""
        for grant in self._grants or ():
            os.close(grant.fd)
        self._grants = None
