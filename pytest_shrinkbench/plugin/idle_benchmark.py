"""pytest-benchmark in a session that times nothing (no ``--shrink-latency``): out of the user's way.

It is loaded in every session because ``--shrink-latency`` uses its fixture, and on its own it creates
an empty ``.benchmarks/`` folder in the current directory, prints its defaults in the header and, under
xdist, warns that it switched itself off. A session that times nothing disables it and points its
storage at a temporary folder removed when the session ends; an explicit ``--benchmark-storage`` is kept.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's default --benchmark-storage


def quiet(config: pytest.Config, timing: bool) -> None:
    """Before pytest-benchmark configures itself (its ``pytest_configure`` runs last): disable it unless timing."""
    if timing or config.getoption("benchmark_storage", None) is None:  # timing, or pytest-benchmark not loaded
        return
    config.option.benchmark_disable = True
    if config.getoption("benchmark_storage") == DEFAULT_STORAGE:
        folder = tempfile.mkdtemp(prefix="shrinkbench-untimed-")
        config.option.benchmark_storage = f"file://{folder}"
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
