"""The fork server collapses its memory into huge pages, so that forking a case's child and its exit are cheap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pytest_shrinkbench.sandbox import hugepages
from pytest_shrinkbench.sandbox.hugepages import HUGE_PAGE, private_ranges

MAPS = """\
55d0c0a00000-55d0c1200000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000500000 rw-p 00000000 00:00 0 
7f0000600000-7f0000700000 rw-p 00000000 00:00 0 
7f0000800000-7f0000a00000 r--p 00000000 00:00 0 
7f1000000000-7f1000400000 rw-p 00010000 08:01 1234                       /usr/lib/libtorch_cpu.so
7f2000000000-7f2000400000 rw-p 00000000 00:00 0                          [stack]
7f3000100000-7f3000700000 rw-p 00000000 00:00 0 
"""


def test_only_private_anonymous_writable_memory_is_collapsed_in_whole_huge_pages() -> None:
    """The heap and unnamed mappings, trimmed inward to 2 MiB boundaries; never a library's data, the stack,
    read-only memory, or a mapping too small to hold one aligned huge page."""
    assert private_ranges(MAPS) == [
        (0x55D0C0A00000, 0x55D0C1200000),
        (0x7F0000000000, 0x7F0000400000),
        (0x7F3000200000, 0x7F3000600000),
    ]
    assert all(low % HUGE_PAGE == 0 and high % HUGE_PAGE == 0 for low, high in private_ranges(MAPS))


COLLAPSE_A_MAPPING = textwrap.dedent("""
    import importlib.util, mmap, sys
    spec = importlib.util.spec_from_file_location("hugepages", sys.argv[1])
    hugepages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hugepages)
    memory = mmap.mmap(-1, 16 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.write(b"x" * len(memory))  # populated with 4 KiB pages
    collapsed = hugepages.collapse_private_memory()
    huge = sum(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages:"))
    print(collapsed, huge * 1024, memory[:1] == b"x" and memory[-1:] == b"x")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_a_process_memory_ends_up_in_huge_pages_with_its_contents_unchanged() -> None:
    """Run in a small process of its own: collapsing a whole pytest worker would copy hundreds of MB."""
    out = subprocess.run([sys.executable, "-c", COLLAPSE_A_MAPPING, hugepages.__file__], capture_output=True, text=True,
                         check=True).stdout.split()
    collapsed, huge, intact = int(out[0]), int(out[1]), out[2] == "True"
    if collapsed == 0:
        pytest.skip("this kernel cannot collapse memory into huge pages (MADV_COLLAPSE needs Linux 6.1 and THP not 'never')")
    assert intact
    assert huge >= 8 * 2**20, f"only {huge} bytes of huge pages after collapsing {collapsed}"
