"""What holds a case's processes: namespaces, a cgroup, resource limits, a bounded folder; and the list of walls.

The principle: nothing a case's child starts outlives its case, whatever groups or sessions it makes,
and it gets no more processes, memory or disk than its caps. The robust tools, used where the
platform gives them (root; unprivileged user namespaces give all but the PID namespace; a delegated
cgroup gives the caps):

- a **PID namespace per child**: the child is the init of its own namespace, so when it dies the kernel
  kills every process in it, and nothing in it can join the harness's process group or signal it;
- a **network namespace** for the fork server and so every child: no interface but a loopback that is
  down (with :mod:`.seccomp`, which refuses ``socket()`` itself, also where namespaces are missing);
- a **mount namespace** for the server, where each child's folder is a **tmpfs of its own**, capped in
  size and inodes, off the disk the store writes to, and removed by one unmount;
- a **cgroup per case** (:mod:`.cgroups`): memory over all its processes, the number of its tasks, and
  v2's ``cgroup.kill``.

Without them (macOS, or a Linux without user namespaces or delegation) the fallbacks are what rlimits
give per process: ``RLIMIT_AS`` (memory, CPU only), ``RLIMIT_NPROC`` (per user, ignored for root),
``RLIMIT_FSIZE`` (per file); the server kills what a child leaves behind by its process group and as
subreaper. :meth:`Containment.walls` says which apply: every row records it, and reuse compares it.

Everything slow is done once in the fork server (:meth:`Containment.enter`) or while it forks the spare
child; a case pays nothing for it but the namespace's creation inside ``fork``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import environment
from .cleanup import remove_tree
from .cgroups import MEMORY, PIDS, Base, CaseCgroup, find_bases
from .seccomp import NoSockets

_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET, _CLONE_NEWUSER = 0x00020000, 0x20000000, 0x40000000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18
_MNT_DETACH = 2
FILES_PER_CASE = 16384  # inodes of a child's tmpfs: far more than an honest method makes, far fewer than a flood

# The walls a row can record (its ``walls`` field, space-separated; ``landlock:N`` is added by :mod:`.walls`).
PID_NAMESPACE, NET_NAMESPACE, NO_SOCKETS, CLEAN_ENVIRONMENT = "pid-namespace", "net-namespace", "no-sockets", "environment"
MEMORY_CAP, PROCESS_CAP, DISK_CAP = "memory-cap", "process-cap", "disk-cap"
HIDDEN_DATA = "hidden-data"  # suites' data files, the cache and the named paths hidden (not only the key)


@dataclass(frozen=True)
class Caps:
    """A case's limits, over all of its processes; ``None``: no cap (the API's default; a session sets each)."""

    memory: int | None = None  # bytes
    processes: int | None = None  # tasks (threads count)
    disk: int | None = None  # bytes its folder may hold

    def describe(self, cap: str) -> str:
        """The cap in words and the setting that sets it, for a failed case's one line."""
        if cap == MEMORY:
            return f"its memory cap ({(self.memory or 0) / 2**30:g} GiB over all its processes, --shrink-max-memory)"
        if cap == PIDS:
            return f"its process cap ({self.processes} processes and threads, --shrink-max-processes)"
        return f"its disk cap ({(self.disk or 0) / 2**30:g} GiB in its folder, --shrink-max-disk)"


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    return libc


def _call(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


@dataclass
class Containment:
    """Built once in the fork server by :meth:`enter`; used around every child it forks."""

    caps: Caps
    cuda: bool  # children may use CUDA: no address-space cap (the driver reserves far more than it uses)
    walls: list[str] = field(default_factory=list)
    _libc: ctypes.CDLL | None = None
    _pid_namespace: int | None = None  # a descriptor of the server's own PID namespace, to return to after a fork
    _tmpfs: bool = False
    _folders: str | None = None  # where children's folders go (None: the temp dir)
    _bases: list[Base] = field(default_factory=list)
    _no_sockets: NoSockets | None = None
    _nproc: int | None = None
    _memory_cgroup: bool = False
    _cgroups: dict[int, CaseCgroup] = field(default_factory=dict)
    _next: CaseCgroup | None = None

    @classmethod
    def enter(cls, caps: Caps, cuda: bool) -> Containment:
        """In the fork server, once, before it forks anything: scrub the environment, enter what namespaces
        this platform allows, find the cgroups it may make, and prepare the fallbacks."""
        self = cls(caps, cuda)
        environment.scrub()
        self.walls.append(CLEAN_ENVIRONMENT)
        if sys.platform != "linux":
            self._fallbacks()
            return self
        self._libc = _libc()
        unshare = self._libc.unshare
        if os.geteuid() != 0:
            self._user_namespace()
        if unshare(_CLONE_NEWNS) == 0 and self._libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0:
            self._tmpfs = self._try_tmpfs()
        if unshare(_CLONE_NEWNET) == 0:
            self.walls.append(NET_NAMESPACE)
        self._pid_namespace = self._try_pid_namespace()
        if self._pid_namespace is not None:
            self.walls.append(PID_NAMESPACE)
        # A v2 folder without controllers only adds cgroup.kill, which a PID namespace makes redundant; moving a
        # task into a v2 cgroup costs milliseconds (an RCU grace period), so it is used only where it is needed.
        self._bases = [b for b in find_bases() if b.controllers or self._pid_namespace is None]
        for base in self._bases:
            remove_stale(base.path)
        self._no_sockets = NoSockets.prepare()
        if self._no_sockets is not None:
            self.walls.append(NO_SOCKETS)
        self._fallbacks()
        return self

    def _user_namespace(self) -> None:
        """Not root: a user namespace of our own (uid and gid mapped to themselves) gives the rights to make the
        other namespaces and mount a tmpfs, nothing more; where the kernel refuses one, the fallbacks apply."""
        uid, gid = os.geteuid(), os.getegid()
        if self._libc.unshare(_CLONE_NEWUSER) != 0:
            return
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            try:
                Path("/proc/self", name).write_text(text)
            except OSError:
                pass

    def _try_tmpfs(self) -> bool:
        """Mount one capped tmpfs as a test; children's folders go under the temp dir, each its own tmpfs."""
        if self.caps.disk is None:
            return False
        probe = tempfile.mkdtemp(prefix="shrinkbench-probe-")
        try:
            self._mount_tmpfs(probe)
            self._libc.umount2(probe.encode(), _MNT_DETACH)
            return True
        except OSError:
            return False
        finally:
            os.rmdir(probe)

    def _mount_tmpfs(self, folder: str) -> None:
        options = f"size={self.caps.disk},nr_inodes={FILES_PER_CASE},mode=0700".encode()
        _call(self._libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
              f"mounting a tmpfs on {folder}")

    def _try_pid_namespace(self) -> int | None:
        """A descriptor of this process's PID namespace if it may make new ones and return to its own after.

        Tried in a throwaway child: a namespace made but not left again (``setns`` back needs rights over the
        namespace's owner, which a user namespace of our own does not give) would take every later fork."""
        try:
            own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        probe = os.fork()
        if probe == 0:
            os._exit(0 if self._libc.unshare(_CLONE_NEWPID) == 0 and self._libc.setns(own, _CLONE_NEWPID) == 0 else 1)
        _, status = os.waitpid(probe, 0)
        if status == 0:
            return own
        os.close(own)
        return None

    def _fallbacks(self) -> None:
        """What the cgroups do not cover, done with rlimits and a folder off the store's disk where possible."""
        given = set().union(*(b.controllers for b in self._bases)) if self._bases else set()
        if self.caps.memory is not None and (MEMORY in given or not self.cuda):
            self.walls.append(MEMORY_CAP)  # a cgroup's memory.max, or (CPU) each process's address space
        if self.caps.processes is not None and PIDS not in given and os.geteuid() != 0:
            self._nproc = _user_tasks() + self.caps.processes  # RLIMIT_NPROC counts all of the user's tasks
        if self.caps.processes is not None and (PIDS in given or self._nproc is not None):
            self.walls.append(PROCESS_CAP)
        if self.caps.disk is not None:
            self.walls.append(DISK_CAP)  # a tmpfs of its own, or RLIMIT_FSIZE per file
            shm = "/dev/shm"
            if not self._tmpfs and os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
                self._folders = shm  # at least not the disk the store writes to
        self._memory_cgroup = MEMORY in given

    # -- around each child, in the server ---------------------------------------------------------------

    def folder(self) -> Path:
        """A fresh private folder for the next child: its own capped tmpfs where the server may mount one."""
        folder = tempfile.mkdtemp(prefix="shrinkbench-child-", dir=self._folders)
        if self._tmpfs:
            try:
                self._mount_tmpfs(folder)
            except OSError:
                os.rmdir(folder)
                raise
        self._next = CaseCgroup(self._bases, f"shrinkbench-{os.getpid()}-{os.path.basename(folder)}",
                                self.caps.memory if self._memory_cgroup else None, self.caps.processes) if self._bases else None
        return Path(folder)

    def fork(self) -> int:
        """``os.fork`` with the child as init of a new PID namespace where possible, put in its cgroup."""
        if self._pid_namespace is None:
            pid = os.fork()
        else:
            _call(self._libc.unshare(_CLONE_NEWPID), "unshare(CLONE_NEWPID)")
            try:
                pid = os.fork()
            except BaseException:
                self._libc.setns(self._pid_namespace, _CLONE_NEWPID)
                raise
            if pid != 0:  # the server's next fork must not land in this child's namespace
                _call(self._libc.setns(self._pid_namespace, _CLONE_NEWPID), "setns(CLONE_NEWPID)")
        if pid != 0 and self._next is not None:
            cgroup, self._next = self._next, None
            try:
                cgroup.adopt(pid)
            except OSError:
                os.kill(pid, signal.SIGKILL)
                cgroup.remove()
                raise
            self._cgroups[pid] = cgroup
        return pid

    def kill(self, pid: int) -> None:
        """SIGKILL the child, its process group and (cgroup v2) everything in its cgroup. With a PID namespace
        the first is enough: the kernel kills every process of the namespace with its init."""
        cgroup = self._cgroups.get(pid)
        if cgroup is not None:
            cgroup.kill()
        kill_tree(pid)

    def breached(self, pid: int, folder: Path | None) -> list[str]:
        """The caps the case ran into so far: ``memory``, ``pids`` (from its cgroup), ``disk`` (its tmpfs full)."""
        cgroup = self._cgroups.get(pid)
        hit = cgroup.breached() if cgroup is not None else []
        if folder is not None and self._tmpfs:
            try:
                usage = os.statvfs(folder)
                if usage.f_bavail * usage.f_frsize < 2**16 or usage.f_favail == 0:
                    hit.append("disk")
            except OSError:
                pass
        return hit

    def clean(self, pid: int, folder: Path | None) -> None:
        """Once the child is reaped: its folder (one unmount for a tmpfs) and its cgroup."""
        if folder is not None:
            if self._tmpfs:
                self._libc.umount2(str(folder).encode(), _MNT_DETACH)
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
            else:
                remove_tree(folder)  # never raises, never follows a link, whatever depth a method left
        cgroup = self._cgroups.pop(pid, None)
        if cgroup is not None:
            cgroup.remove()

    def close(self) -> None:
        if self._next is not None:
            self._next.remove()
            self._next = None

    # -- in the child, before the walls ------------------------------------------------------------------

    def enter_child(self) -> None:
        """The limits no method may lift (hard limits lowered; capabilities are dropped by the walls next),
        and the no-socket filter. The server's namespace descriptor is not the child's to keep."""
        if self._pid_namespace is not None:
            os.close(self._pid_namespace)
        if self.caps.disk is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.caps.disk, self.caps.disk))
        if self._nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self._nproc, self._nproc))
        if self._no_sockets is not None:
            self._no_sockets.install()

    def address_space(self, cuda: bool) -> int | None:
        """The per-process address-space cap, where no cgroup caps memory and the case does not use CUDA."""
        return None if self._memory_cgroup or cuda or self.caps.memory is None else self.caps.memory


def remove_stale(folder: Path) -> None:
    """Remove the case cgroups a server that died without cleaning up left under ``folder`` (its pid is in the
    name: ``shrinkbench-<server pid>-...``); a folder still holding processes is not removed (rmdir refuses)."""
    for stale in folder.glob("shrinkbench-*-*"):
        owner = stale.name.split("-")[1]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                stale.rmdir()
            except OSError:
                pass


def kill_tree(pid: int) -> None:
    """SIGKILL a child and its process group: a child that left its group (or made a session) still dies."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _user_tasks() -> int:
    """How many tasks (threads included, as RLIMIT_NPROC counts them) this user runs now."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count
