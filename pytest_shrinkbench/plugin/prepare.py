"""``pytest-shrinkbench prepare``: train or verify, once, every base model a run needs, before its shards start.

It runs inside pytest's own start-up (``pytest.main`` with this plugin answering ``pytest_cmdline_main``),
so it reads the very settings a run reads — command line, ini file, environment, rootdir, the
project's ``conftest.py`` and its suites — through the same code (:func:`.config.read_subjects`):
give it the run's options and it prepares exactly the base models the run will load. Nothing is
collected and no case runs. Shards started with ``--shrink-cache-mode=readonly`` then only read the
cache: no N nodes racing to train the same model, no file locks on a network file system.
"""

from __future__ import annotations

import sys
import time

import pytest

from ..errors import SuiteUnavailable
from ..results.signing import key_path, load_key
from ..suites import user as user_suites
from ..suites.subject import default_cache_dir, load_subject
from .config import read_subjects

EXIT_OK, EXIT_FAILED = 0, 1


class Prepare:
    """The plugin that turns a pytest invocation into ``prepare``: it answers ``pytest_cmdline_main`` itself."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> int:
        return prepare(config)


def run(args: list[str]) -> int:
    """Prepare the base models of the run ``pytest ARGS`` would start; the exit status (0: all ready)."""
    return int(pytest.main(args, plugins=[Prepare()]))


def prepare(config: pytest.Config) -> int:
    """Load every (suite, checkpoint) of the run, training into the cache what is missing; one line each."""
    user_suites.discover()  # installed packages' suites (a project's came with its conftest)
    try:
        subjects = read_subjects(config)
    except pytest.UsageError as exc:
        print(f"pytest-shrinkbench prepare: {exc}", file=sys.stderr)
        return int(pytest.ExitCode.USAGE_ERROR)
    # The key that signs rows lives in the cache too: made here once, so shards reading a shared cache share it.
    load_key(key_path(subjects["cache_dir"] or default_cache_dir()))
    status = EXIT_OK
    for suite, checkpoint in [(s, c) for s in subjects["suites"] for c in subjects["weights"].get(s, ()) or (None,)]:
        label = suite + (f" [{checkpoint.tag}]" if checkpoint is not None and checkpoint.tag else "")
        started = time.time()
        try:
            subject = load_subject(suite, subjects["cache_dir"], subjects["device"], data_root=subjects["data_root"],
                                   weights=checkpoint.path if checkpoint is not None else None)
        except SuiteUnavailable as exc:  # a run would skip its cases: preparing for it is not done
            print(f"{label}: UNAVAILABLE: {exc}")
            status = EXIT_FAILED
            continue
        except Exception as exc:  # noqa: BLE001  (one broken suite must not hide the others)
            print(f"{label}: FAILED: {type(exc).__name__}: {exc}")
            status = EXIT_FAILED
            continue
        how = "trained" if subject.checkpoint.stat().st_mtime >= started else "verified"
        metric = subject.suite.objective.metric
        print(f"{label}: {how} {subject.checkpoint} (identity {subject.sha256[:16]}..., {metric} {subject.base_metrics[metric]:.4f}, "
              f"{time.time() - started:.1f} s)")
    return status
