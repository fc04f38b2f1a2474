"""The pytest plugin: options, case parametrization, subjects per session, result gathering, leaderboard.

Registered through the ``pytest11`` entry point. Without ``--shrink-method`` it only adds its
options; with it, the session collects the benchmark cases instead of the project's tests.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from . import methods
from . import options
from .case import CaseSpec, run_case
from .leaderboard import aggregate, render
from .guards import limit_memory, restore_memory
from .results import ResultsFile, plain
from .subject import Subject, load_subject

CONFIG_KEY = pytest.StashKey[options.ShrinkConfig]()
MEMORY_KEY = pytest.StashKey[int]()
CASE_PROPERTY = "shrinkbench_case"
RESULT_PROPERTY = "shrinkbench_result"
PACKAGED_CASES = Path(__file__).with_name("cases.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _benchmark_paths(config: pytest.Config) -> list[str]:
    """The project's ``benchmarks/`` folder if it has one, else the plugin's own case module."""
    folder = config.rootpath / "benchmarks"
    return [str(folder)] if folder.is_dir() else [str(PACKAGED_CASES)]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("shrink_method"):
        return
    folders = [config.rootpath / "methods", *config.getini("shrink_method_dirs")]
    broken = "; ".join(f"{path}: {error}" for path, error in methods.discover(folders).items())
    try:
        config.stash[CONFIG_KEY] = options.parse(config)
    except pytest.UsageError as error:
        raise pytest.UsageError(f"{error} (method files that failed to import: {broken})" if broken else str(error)) from None
    if broken and not _is_worker(config):
        config.issue_config_time_warning(pytest.PytestConfigWarning(f"shrinkbench: method files failed to import: {broken}"), stacklevel=2)
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = _benchmark_paths(config)
    shrink = config.stash[CONFIG_KEY]
    torch.set_num_threads(shrink.threads)
    if shrink.max_memory_gib is not None:
        config.stash[MEMORY_KEY] = limit_memory(shrink.max_memory_gib)  # inherited by xdist workers
    if not _is_worker(config):
        config.pluginmanager.register(ResultsRecorder(shrink), "shrinkbench-results")
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # SIGTERM (a scheduler's kill, a CI timeout) ends the session like Ctrl-C: finished rows
            # are already on disk, and the file is still sorted and the partial leaderboard printed.
            signal.signal(signal.SIGTERM, _interrupt)
            config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"shrinkbench: received signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    methods.forget_session_methods()  # a project's methods are re-discovered per session
    previous = config.stash.get(MEMORY_KEY, None)
    if previous is not None:
        restore_memory(previous)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shrink_case" not in metafunc.fixturenames or CONFIG_KEY not in metafunc.config.stash:
        return
    cases = metafunc.config.stash[CONFIG_KEY].cases()
    metafunc.parametrize("shrink_case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture(scope="session")
def shrink_subjects(pytestconfig: pytest.Config) -> Callable[[str], Subject]:
    """Load each suite's subject once per worker (the file lock makes one worker train it)."""
    loaded: dict[str, Subject] = {}
    cache_dir = pytestconfig.stash[CONFIG_KEY].cache_dir if CONFIG_KEY in pytestconfig.stash else None

    def get(suite: str) -> Subject:
        if suite not in loaded:
            loaded[suite] = load_subject(suite, cache_dir=cache_dir)
        return loaded[suite]

    return get


class ShrinkCase:
    """A case bound to its subject and its test item, so its result travels in ``user_properties``."""

    def __init__(self, spec: CaseSpec, subject: Subject, item: pytest.Item, timeout: float) -> None:
        self.spec, self.subject, self.item, self.timeout = spec, subject, item, timeout

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        try:
            return run_case(self.spec, self.subject, result, timeout=self.timeout)
        except Exception as exc:
            result["message"] = str(exc)
            raise
        finally:
            self.item.user_properties.append((RESULT_PROPERTY, plain(result)))


@pytest.fixture
def shrink_case(request: pytest.FixtureRequest, shrink_subjects: Callable[[str], Subject]) -> ShrinkCase:
    """The case this test runs (parametrized by the plugin)."""
    spec = getattr(request, "param", None)
    if not isinstance(spec, CaseSpec):
        pytest.skip("benchmark cases run only with --shrink-method=NAME[,NAME...|all|baselines]")
    # Recorded before anything can fail, so even a setup error is reported as this case.
    request.node.user_properties.append((CASE_PROPERTY, spec.as_dict()))
    try:
        subject = shrink_subjects(spec.suite)
    except Exception as exc:
        raise RuntimeError(f"[{spec.label}] could not load suite {spec.suite!r}: {type(exc).__name__}: {exc}") from exc
    return ShrinkCase(spec, subject, request.node, request.config.stash[CONFIG_KEY].timeout)


class ResultsRecorder:
    """Controller-side plugin: turns each case's final report into a row, streams it, prints the leaderboard.

    It runs on the controller only, from the reports xdist forwards, so rows from a worker that
    later crashes are already on disk.
    """

    def __init__(self, config: options.ShrinkConfig) -> None:
        self.file = ResultsFile(config.results_dir)
        self.cases = {case.id: case for case in config.cases()}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        case = properties.get(CASE_PROPERTY)
        if case is None and report.failed and report.when not in ("setup", "call", "teardown"):
            # xdist's report for an item whose worker died (os._exit, OOM kill): no user_properties,
            # so the case is found from its test id.
            spec = self.cases.get(report.nodeid.rpartition("[")[2].rstrip("]"))
            if spec is None:
                return
            case, result = spec.as_dict(), {"message": f"[{spec.label}] {report.longrepr}"}
        elif case is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        else:
            result = properties.get(RESULT_PROPERTY, {})
        status = "passed" if report.passed else "skipped" if report.skipped else "failed"
        self.file.add({**case, **result, "status": status, "message": _message(report, result), "duration": report.duration})

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for suite, table in render(aggregate(self.file.rows)).items():
            terminalreporter.write_sep("=", f"shrinkbench leaderboard: {suite}")
            terminalreporter.write_line(table)
        terminalreporter.write_line(f"shrinkbench: {len(self.file.rows)} results written to {self.file.path}")

    def pytest_unconfigure(self) -> None:
        self.file.close()


def _message(report: pytest.TestReport, result: dict[str, Any]) -> str | None:
    """Why a case did not pass: the harness's own message, else pytest's one-line crash summary."""
    if report.passed:
        return None
    if result.get("message"):
        return result["message"]
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)
