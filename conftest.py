"""Root conftest: fixtures of the project's own tests, which drive the plugin end to end through pytester.

(pytester itself is enabled by ``-p pytester`` in pyproject.toml: a ``pytest_plugins`` line here would
break runs that collect the plugin's packaged case module from another project.)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread in the test process, as every benchmark case pins: results are bit-reproducible, and
    a sandbox's fork server forked from this process later has no OpenMP pool to inherit."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shrink_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache shared by all tests (and by xdist workers: the parent of each worker's basetemp).

    The plugin keys files by recipe hash, verifies their sha256 and trains under a file lock, so
    sharing it is exactly what a user's machine does.
    """
    return tmp_path_factory.getbasetemp().parent / "shrinkbench-test-cache"


@pytest.fixture
def project(pytester: pytest.Pytester, shrink_cache: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An empty project using the installed plugin, its results going to ``results/``.

    When this test suite itself runs under xdist, the worker's ``PYTEST_XDIST_*`` variables are removed:
    the project's pytest must see a user's plain environment, not believe it is an xdist worker.
    """
    monkeypatch.setenv("SHRINKBENCH_CACHE", str(shrink_cache))
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        monkeypatch.delenv(name)
    pytester.makeini("[pytest]\nshrink_results = results\n")
    return pytester


@pytest.fixture
def cifar_md5_bypass(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks CIFAR-10's md5 sums (batches and meta); the fakes of ``tests.vision_fakes`` only exist.
    This test process only, with the per-process cache of the CIFAR-10 loader emptied before and after."""
    import torchvision

    from pytest_shrinkbench.suites import vision_data

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    vision_data._cifar10.cache_clear()
    yield
    vision_data._cifar10.cache_clear()
