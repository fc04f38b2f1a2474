"""Micro-benchmark of the walls: what :meth:`Walls.apply` costs each case's child.

Why: every case runs its method in a fresh child forked from the fork server, and each child walls
itself in before the method runs, so this cost is paid once per case. The issue's target: setting up
the ruleset well under 1 ms per case.

The script prepares :class:`Walls` once (one hidden file under a temporary folder, as a results store's
signing key), then forks N children one after another; each times ``apply()`` (Landlock ruleset, memory
cap, privileges dropped) with ``time.perf_counter_ns`` and sends the duration back through a pipe, with
the page faults counted meanwhile. For reference it also times a bare ``os.fork()`` + ``os._exit`` round
trip of the same process, which imports torch first so that its address space resembles the fork server's,
and the cost of walls that hide nothing (the part that does not grow with the number of rules).

It is a measurement, not a gate: it exits 0 and prints "ABOVE TARGET" if the median misses 1 ms.
Run from anywhere::

    python benchmarks/bench_walls.py [-n 200] [--dir FOLDER]

Not a test: pytest collects only ``test_*.py`` from ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch  # noqa: F401  (imported for its address space: the fork server holds torch)

from pytest_shrinkbench.sandbox.walls import Walls

TARGET_US = 1000.0


def timed_apply(walls: Walls, writable: Path, armed: bool) -> tuple[int, int]:
    """Fork a child that applies the walls and reports how long apply() took, in nanoseconds, and the
    page faults it took meanwhile: a fresh fork faults on the first touch of each page of code or data,
    and on a virtual machine those faults can be most of the cost. ``armed``: the ruleset is built before
    the fork, as the fork server does for its spare child, so the child only enters it."""
    read_end, write_end = os.pipe()
    if armed:
        walls.arm(writable)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter_ns()
        walls.apply(writable, max_memory_bytes=64 * 2**30)
        elapsed = time.perf_counter_ns() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        os.write(write_end, struct.pack("qq", elapsed, faults))
        os._exit(0)
    walls.disarm()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or len(data) != 16:
        raise SystemExit(f"a walled child failed (exit status {status})")
    return struct.unpack("qq", data)


def timed_bare_fork() -> int:
    """The round trip of a child that does nothing: the floor any per-case child pays."""
    start = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter_ns() - start


def summary(name: str, durations_ns: Sequence[int]) -> str:
    micro = [d / 1000 for d in durations_ns]
    return f"{name}: min {min(micro):.1f} µs, median {statistics.median(micro):.1f} µs, max {max(micro):.1f} µs"


def measure(walls: Walls, root: Path, count: int, label: str) -> None:
    """Apply ``walls`` in ``count`` children, each with its own writable folder, and print the spread: the
    ruleset armed in the parent (what a case's child pays: the fork server arms its spare) and built in the child."""
    print(f"{label}: {walls.rules} prepared path rules (+1 writable), Landlock ABI {walls.abi}, level {walls.level}")
    for armed, what in ((True, "armed by the server, entered by the child (a case's cost)"), (False, "built in the child")):
        writables = [Path(tempfile.mkdtemp(dir=root)) for _ in range(count)]
        applied, faults = zip(*(timed_apply(walls, writable, armed) for writable in writables))
        above = "  ABOVE TARGET" if armed and statistics.median(applied) / 1000 > TARGET_US else ""
        print("  " + summary(f"apply() in {count} children, ruleset {what}", applied) + above)
        print(f"    page faults during apply(): median {statistics.median(faults):.0f}")
    walls.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="children to fork (default 200)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary folder holding the key goes (default: the system temp dir); "
                             "each entry beside it and beside its ancestors is one more rule")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        key = Path(root) / "store" / "signing.key"
        key.parent.mkdir()
        key.write_text("secret")
        measure(Walls.prepare(hidden=[key]), Path(root), args.n, f"one hidden key, {key}")
        measure(Walls.prepare(), Path(root), args.n, "nothing hidden (the fixed cost)")
    bare = [timed_bare_fork() for _ in range(args.n)]
    print(summary(f"bare fork + _exit round trip, {args.n} times (reference)", bare))


if __name__ == "__main__":
    main()
