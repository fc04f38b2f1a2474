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

from ..results.schema import LEVEL_IN_PROCESS, LEVEL_LANDLOCK, LEVEL_PROCESS
from ..results.signing import key_path, load_key
from ..sandbox.contain import Caps
from ..sandbox.methods import forget_session_methods
from ..sandbox.runner import Sandbox
from ..suites import user as user_suites
from ..suites.hidden import embedded_data
from ..suites.subject import default_cache_dir
from . import devices, terminal
from .config import CONFIG_KEY, SANDBOX_KEY, ShrinkConfig, method_folders, parse
from .recorder import Recorder
from .reuse import Exchange
from .settings import under, value
from .wire import row_of

PACKAGED_CASES = Path(__file__).with_name("cases.py")
CATALOGUE_KEY = "shrinkbench_methods"  # workerinput: the methods the controller discovered


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def start(config: pytest.Config) -> None:
    """Validate the settings and register the session's objects (a usage error stops the session here).

    The sandbox's fork server is forked first, before this process loads any data, key or subject;
    method discovery then runs in a child of it (on xdist workers it is not repeated: the controller
    hands its catalogue to each worker).
    """
    if is_worker(config):
        devices.pin_worker_gpu(config.workerinput)  # first: before anything initializes CUDA here
    user_suites.discover()  # installed packages' suites; a project's register from its conftest
    sandbox = _start_sandbox(config)
    try:
        shrink = parse(config, sandbox.methods)
    except pytest.UsageError as error:
        sandbox.close()
        broken = "; ".join(f"{where}: {message}" for where, message in sandbox.errors.items())
        raise pytest.UsageError(f"{error} (method files that could not be used: {broken})" if broken else str(error)) from None
    config.stash[CONFIG_KEY], config.stash[SANDBOX_KEY] = shrink, sandbox
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = _benchmark_paths(config)
    torch.set_num_threads(shrink.threads)
    config.pluginmanager.register(Benchmark(shrink, sandbox), "shrinkbench-benchmark")
    terminal.register(config, shrink, worker=is_worker(config))
    if not is_worker(config):
        _warn_once(config, sandbox)
        config.pluginmanager.register(Recorder(shrink, _signing_key(shrink), walls=lambda: sandbox.walls),
                                      "shrinkbench-recorder")
        _end_on_sigterm(config)


def _signing_key(shrink: ShrinkConfig) -> bytes | None:
    """The key the controller signs rows with; none in a debugging session (``in-process``): method code runs in
    this process there, so it must hold no key (its rows are unsigned, never stored, never reused)."""
    if shrink.sandbox == "in-process":
        return None
    return load_key(key_path(shrink.cache_dir or default_cache_dir()))


def _start_sandbox(config: pytest.Config) -> Sandbox:
    """The process's sandbox, its server forked now, its methods discovered (or received from the controller)."""
    sandbox = Sandbox(value(config, "shrink_sandbox"), hidden_paths(config), caps(config),
                      cuda=value(config, "shrink_device") != "cpu", import_timeout=value(config, "shrink_import_timeout"))
    sandbox.start()
    if is_worker(config):
        sandbox.receive(config.workerinput[CATALOGUE_KEY])
    else:
        sandbox.discover(method_folders(config))
    return sandbox


def hidden_paths(config: pytest.Config) -> list[Path]:
    """What no method may read: the cache (base models, decoded data, the signing key), the data root, the
    embedded suites' data files and the paths the ini names (``shrink_hidden_paths``)."""
    cache, data = value(config, "shrink_cache"), value(config, "shrink_data_root")
    hidden = [under(config.rootpath, cache) if cache else default_cache_dir()]  # its keys/ folder holds the key
    hidden += [under(config.rootpath, data)] if data else []
    return hidden + embedded_data() + [Path(p) for p in config.getini("shrink_hidden_paths")]


def caps(config: pytest.Config) -> Caps:
    """A case's caps, from the settings (plugin/settings.py declares each, with its default)."""
    return Caps(memory=int(value(config, "shrink_max_memory") * 2**30), processes=value(config, "shrink_max_processes"),
                disk=int(value(config, "shrink_max_disk") * 2**30))


def _warn_once(config: pytest.Config, sandbox: Sandbox) -> None:
    """Say, once per session, what could not be done: walls the kernel lacks, files that failed to import."""
    warnings = []
    if sandbox.mode == "landlock" and sandbox.level != LEVEL_LANDLOCK:
        warnings.append("this kernel has no Landlock: methods run in child processes without walls (rows say 'process')")
    if sandbox.errors:
        warnings.append("method files that could not be used (their methods' cases fail): " + "; ".join(f"{where}: {message}" for where, message in sandbox.errors.items()))
    if sandbox.stray_suites:
        warnings.append(f"method files registered suites {sandbox.stray_suites}: define suites in conftest.py "
                        "(method files are imported only in method processes, never by the harness)")
    for text in warnings:
        config.issue_config_time_warning(pytest.PytestConfigWarning(f"shrinkbench: {text}"), stacklevel=2)


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

    def __init__(self, config: ShrinkConfig, sandbox: Sandbox) -> None:
        self.config, self.sandbox = config, sandbox
        self.cases = config.cases()
        self.exchange = Exchange()  # xdist: the folder workers share measurements through (run/reuse.py)

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

    def pytest_report_header(self) -> str:
        where = {LEVEL_LANDLOCK: f"in a child process per case, behind Landlock walls (ABI {self.sandbox.abi})",
                 LEVEL_PROCESS: "in a child process per case, without walls",
                 LEVEL_IN_PROCESS: "in this process (debugging mode: rows are unverified)"}[self.sandbox.level]
        return f"shrinkbench: methods run {where}"

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Controller (xdist): hand each worker the methods it may run and the visible GPUs (worker k pins GPU k
        mod count), and the folder the workers share measurements through."""
        node.workerinput[CATALOGUE_KEY] = self.sandbox.catalogue()
        if self.config.reuse:
            self.exchange.for_worker(node.workerinput)
        if self.config.device == "cuda":
            node.workerinput[devices.WORKER_GPUS_KEY] = devices.visible_gpus()

    def pytest_unconfigure(self) -> None:
        self.sandbox.close()
        self.exchange.remove()
        forget_session_methods()  # a project's methods and suites are re-discovered per session
        user_suites.forget_session_suites()
