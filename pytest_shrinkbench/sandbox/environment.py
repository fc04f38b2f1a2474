"""The environment a method's child gets: an allow-list (what torch, CUDA and the method API read), not the
pytest process's (where a CI job keeps its tokens).

The fork server scrubs itself once, before it forks any child: the names not allowed leave
``os.environ`` (and so the C ``environ`` a subprocess inherits), and their text is overwritten where
it lies — in the process's original environment block, which ``/proc/self/environ`` and the stack
show whatever ``environ`` says, and in the bytes objects Python kept of it — so a child forked
afterwards finds none of it in its memory.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# Names, and prefixes of names, a child keeps: locale and paths; torch's, CUDA's and the math libraries' switches.
ALLOWED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "SHELL",
                     "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED"})
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "CUBLAS_", "CUDNN_", "TORCH", "PYTORCH_", "OMP_", "MKL_", "KMP_",
                    "OPENBLAS_", "TRITON_")


def allowed(name: str) -> bool:
    return name in ALLOWED or name.startswith(ALLOWED_PREFIXES)


def scrub() -> list[str]:
    """Remove every variable not allowed from this process, its text overwritten; the names removed."""
    removed = sorted(name for name in os.environ if not allowed(name))
    originals = _original_block()
    for name in removed:
        raw = os.environ._data.get(os.environ.encodekey(name))  # type: ignore[attr-defined]  (the bytes os.environ keeps)
        del os.environ[name]  # unsetenv too: a subprocess does not inherit it
        if raw is not None:
            _overwrite_bytes(raw)
    if originals is not None:
        start, block = originals
        prefixes = tuple(name.encode() + b"=" for name in removed)
        at = 0
        for entry in block.split(b"\0"):
            if prefixes and entry.startswith(prefixes):
                ctypes.memset(start + at, 0, len(entry))
            at += len(entry) + 1
    return removed


def _original_block() -> tuple[int, bytes] | None:
    """The address and text of the environment block the kernel gave this process (``env_start``/``env_end``
    in /proc/self/stat, fields 50–51), which /proc/self/environ reads."""
    if sys.platform != "linux":
        return None
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        start, end = int(fields[47]), int(fields[48])
    except (OSError, IndexError, ValueError):
        return None
    return start, ctypes.string_at(start, end - start)


def _overwrite_bytes(value: bytes) -> None:
    """Zero a bytes object's buffer in place (it is about to be dropped). Interned one-byte and empty values
    are shared by the whole interpreter: those are left alone (one character is no secret)."""
    if len(value) > 1:
        offset = sys.getsizeof(b"") - 1  # header size: the buffer follows it
        ctypes.memset(id(value) + offset, 0, len(value))
