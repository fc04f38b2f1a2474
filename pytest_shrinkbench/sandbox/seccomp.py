"""No sockets in a method's child: a seccomp filter that refuses ``socket()`` (and ``io_uring``, which can make them).

A network namespace leaves a child no route anywhere, but it does not stop a connection to a
*pathname* unix socket (a Docker or systemd socket is a file, reached across namespaces), and
Landlock does not govern ``connect`` on those. Refusing to create a socket at all covers every
family at once — TCP, UDP, raw, netlink, unix — on any Linux with seccomp (3.5+), with or without
namespaces. ``socketpair`` stays allowed: a pair of connected ends inside the case reaches nothing
outside it. The filter is ten BPF instructions built once in the fork server; a child only installs it.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
from dataclasses import dataclass

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_NR_OFFSET, _ARCH_OFFSET = 0, 4  # struct seccomp_data: int nr; u32 arch; ...
_X32_BIT = 0x40000000
# machine -> (AUDIT_ARCH_*, socket's syscall number, io_uring_setup's, whether x32 numbers exist)
_ARCHES = {"x86_64": (0xC000003E, 41, 425, True), "aarch64": (0xC00000B7, 198, 425, False)}


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


@dataclass
class NoSockets:
    """The filter, ready to install; ``None`` from :meth:`prepare` where seccomp or the machine is unknown."""

    _instructions: ctypes.Array[_Instruction]
    _program: _Program
    _libc: ctypes.CDLL

    @classmethod
    def prepare(cls) -> NoSockets | None:
        arch = _ARCHES.get(platform.machine())
        if sys.platform != "linux" or arch is None:
            return None
        audit, socket_nr, uring_nr, x32 = arch
        deny = _RET_ERRNO | errno.EACCES
        code = [
            (_LD_W_ABS, 0, 0, _ARCH_OFFSET),
            (_JEQ_K, 1, 0, audit),  # another ABI (32-bit calls on a 64-bit kernel: socketcall) gets nothing
            (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
            (_LD_W_ABS, 0, 0, _NR_OFFSET),
            (_JGE_K, 3, 0, _X32_BIT if x32 else 0xFFFFFFFF),  # x32 numbers: refused like the calls they mirror
            (_JEQ_K, 2, 0, socket_nr),
            (_JEQ_K, 1, 0, uring_nr),
            (_RET_K, 0, 0, _RET_ALLOW),
            (_RET_K, 0, 0, deny),
        ]
        instructions = (_Instruction * len(code))(*(_Instruction(*i) for i in code))
        return cls(instructions, _Program(len(code), instructions), ctypes.CDLL(None, use_errno=True))

    def install(self) -> None:
        """Irreversible for this process and everything it starts. Sets no_new_privs, which seccomp requires."""
        libc = self._libc
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
                _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._program), 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"walls: installing the no-socket filter failed: {errno.errorcode.get(code, code)}")
