"""One benchmark session: started once in ``pytest_configure``, on the controller and on every xdist worker.

:func:`start` validates the settings, chooses what the session collects and registers the objects
that hold the session's state: a :class:`Benchmark` everywhere (parametrizing and ordering the
cases) and, on the controller only, the :class:`~.recorder.Recorder` (rows, store, leaderboard).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from ..run.guards import limit_memory, restore_memory
from ..sandbox import methods
from ..suites import user as user_suites
from . import devices
from . import terminal
from .config import CONFIG_KEY, ShrinkConfig, method_folders, parse
from .recorder import Recorder
from .wire import row_of

PACKAGED_CASES = Path(__file__).with_name("cases.py")


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def start(config: pytest.Config) -> None:
    """Validate the settings and register the session's objects (a usage error stops the session here)."""
    if is_worker(config):
        devices.pin_worker_gpu(config.workerinput)  # first: before anything initializes CUDA here
    folders = method_folders(config)
    user_suites.discover()  # installed packages' suites; a project's register from its conftest or method files
    broken = "; ".join(f"{path}: {error}" for path, error in methods.discover(folders).items())
    try:
        shrink = parse(config, {name: methods.METHODS.get(name) for name in methods.METHODS.names()})
    except pytest.UsageError as error:
        raise pytest.UsageError(f"{error} (method files that failed to import: {broken})" if broken else str(error)) from None
    if broken and not is_worker(config):
        config.issue_config_time_warning(pytest.PytestConfigWarning(f"shrinkbench: method files failed to import: {broken}"), stacklevel=2)
    config.stash[CONFIG_KEY] = shrink
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = _benchmark_paths(config)
    torch.set_num_threads(shrink.threads)
    config.pluginmanager.register(Benchmark(shrink), "shrinkbench-benchmark")
    terminal.register(config, shrink, worker=is_worker(config))
    if not is_worker(config):
        config.pluginmanager.register(Recorder(shrink), "shrinkbench-recorder")
        _end_on_sigterm(config)


def _benchmark_paths(config: pytest.Config) -> list[str]:
    """The project's ``benchmarks/`` folder if it has one, else the plugin's own case module."""
    folder = config.rootpath / "benchmarks"
    return [str(folder)] if folder.is_dir() else [str(PACKAGED_CASES)]


def _end_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a scheduler's kill, a CI timeout) ends the session like Ctrl-C: finished rows are already
    on disk, and the results file is still sorted and the partial leaderboard printed."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"shrinkbench: received signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


class Benchmark:
    """The session's cases, on every process: parametrized, ordered, and reported as reused when they were."""

    def __init__(self, config: ShrinkConfig) -> None:
        self.config = config
        self.cases = config.cases()
        self._memory = limit_memory(config.max_memory_gib) if config.max_memory_gib is not None else None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "shrink_case" in metafunc.fixturenames:
            metafunc.parametrize("shrink_case", self.cases, ids=[c.id for c in self.cases], indirect=True)
        if "shrink_reference" in metafunc.fixturenames:
            references = list(dict.fromkeys((c.suite, c.weights) for c in self.cases))
            ids = [f"dense-{suite}" + (f"-{tag}" if tag else "") for suite, tag in references]
            metafunc.parametrize("shrink_reference", references, ids=ids, indirect=True)

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """The dense latency references run first, as every case's measured speedup divides by them; without
        --shrink-latency they are deselected (pytest counts them as such)."""
        references = [item for item in items if "shrink_reference" in getattr(item, "fixturenames", ())]
        others = [item for item in items if "shrink_reference" not in getattr(item, "fixturenames", ())]
        if references and not self.config.latency_batch:
            config.hook.pytest_deselected(items=references)
        items[:] = (references if self.config.latency_batch else []) + others

    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, Any] | None:
        """A case answered from the store shows as ``reused`` (``r``, ``REUSED``), not as a fresh pass."""
        if report.when == "call" and report.passed and row_of(report).get("reused"):
            return "reused", "r", ("REUSED", {"yellow": True})
        return None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Controller (xdist): hand each worker the visible GPUs; worker k pins GPU k mod count."""
        if self.config.device == "cuda":
            node.workerinput[devices.WORKER_GPUS_KEY] = devices.visible_gpus()

    def pytest_unconfigure(self) -> None:
        methods.forget_session_methods()  # a project's methods and suites are re-discovered per session
        user_suites.forget_session_suites()
        if self._memory is not None:
            restore_memory(self._memory)
