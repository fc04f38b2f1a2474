"""Huge pages for the fork server's memory: cheaper forks and exits for every case's child.

Why: a process that imported torch (the CUDA build) holds about 280 MB of private, anonymous
memory. Forking it copies one page-table entry per 4 KiB page of that memory (about 70,000), and
the child's exit frees as many: about 15 ms of kernel time per case on this project's machine, paid
on the cores the cases run on. Collapsed into 2 MiB transparent huge pages, the same memory takes a
few hundred entries to fork and free (a child that writes to a shared huge page still copies only
the 4 KiB it touched). Collapsing copies the memory once (0.1 to 0.7 s for 250 MB, by how recently
the machine used the pages it gets), so the server collapses only once it has forked
:data:`COLLAPSE_EVERY` children, and again every as many: ranges already collapsed cost nothing
again, and a session of a few dozen cases per process (a test's, a small sweep's) pays nothing.
The memory collapsed is the server's own: it stops sharing pages with the harness process it was
forked from, which then no longer copies a page on its first write to it.

Linux 6.1 and newer (``MADV_COLLAPSE``); elsewhere, or where transparent huge pages are off, the
call does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path

MADV_COLLAPSE = 25
HUGE_PAGE = 2 * 2**20
# A collapse (0.1 to 0.7 s) pays for itself after about 35 children (13 ms saved on each): a process that has run
# this many cases is likely to run as many again.
COLLAPSE_EVERY = 32


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    function = ctypes.CDLL(None, use_errno=True).madvise
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def private_ranges(maps: str) -> list[tuple[int, int]]:
    """The 2 MiB-aligned parts of the private, writable, anonymous mappings (the heap and unnamed ones)
    listed in ``maps`` (the text of ``/proc/<pid>/maps``)."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        low = -(-low // HUGE_PAGE) * HUGE_PAGE
        high = high // HUGE_PAGE * HUGE_PAGE
        if high > low:
            ranges.append((low, high))
    return ranges


def collapse_private_memory() -> int:
    """Collapse this process's private anonymous memory into huge pages where the kernel can; return the
    bytes of the ranges it collapsed (0 where it cannot)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    return sum(high - low for low, high in private_ranges(maps) if madvise(low, high - low, MADV_COLLAPSE) == 0)
