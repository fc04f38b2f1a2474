"""The pytest plugin: options, case parametrization, subjects per session, result gathering, leaderboard.

Registered through the ``pytest11`` entry point. Without ``--shrink-method`` it only adds its
options; with it, the session collects the benchmark cases instead of the project's tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from . import devices, methods
from . import options
from .case import CaseSpec, run_case
from .errors import SuiteUnavailable
from .leaderboard import aggregate, render
from .results import ResultsFile, plain
from .subject import Subject, load_subject

CONFIG_KEY = pytest.StashKey[options.ShrinkConfig]()
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
    if _is_worker(config):
        devices.pin_worker_gpu(config.workerinput)  # first: before anything initializes CUDA here
    folders = [config.rootpath / "methods", *config.getini("shrink_method_dirs")]
    try:
        methods.discover(folders)
    except Exception as exc:
        raise pytest.UsageError(f"shrinkbench: could not load methods: {type(exc).__name__}: {exc}") from exc
    config.stash[CONFIG_KEY] = options.parse(config)
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = _benchmark_paths(config)
    torch.set_num_threads(config.stash[CONFIG_KEY].threads)
    if not _is_worker(config):
        config.pluginmanager.register(ResultsRecorder(config.stash[CONFIG_KEY]), "shrinkbench-results")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller (xdist): hand each worker the visible GPUs; worker k pins GPU k mod count."""
    config = node.config.stash.get(CONFIG_KEY, None)
    if config is not None and config.device == "cuda":
        node.workerinput[devices.WORKER_GPUS_KEY] = devices.visible_gpus()


def pytest_unconfigure(config: pytest.Config) -> None:
    methods.forget_session_methods()  # a project's methods are re-discovered per session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shrink_case" not in metafunc.fixturenames or CONFIG_KEY not in metafunc.config.stash:
        return
    cases = metafunc.config.stash[CONFIG_KEY].cases()
    metafunc.parametrize("shrink_case", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture(scope="session")
def shrink_subjects(pytestconfig: pytest.Config) -> Callable[..., Subject]:
    """Load each suite's subject (per base checkpoint) once per worker (the file lock makes one worker train it).

    A suite that cannot load raises the same error for each of its cases, without trying again.
    """
    loaded: dict[tuple[str, str | None], Subject | Exception] = {}
    config = pytestconfig.stash.get(CONFIG_KEY, None)

    def get(suite: str, weights: str | None = None) -> Subject:
        key = (suite, weights)
        if key not in loaded:
            checkpoint = config.checkpoint(suite, weights) if config else None
            try:
                loaded[key] = load_subject(
                    suite,
                    cache_dir=config.cache_dir if config else None,
                    device=config.device if config else "cpu",
                    data_root=config.data_root if config else None,
                    weights=checkpoint.path if checkpoint else None,
                )
                if checkpoint and loaded[key].sha256 != checkpoint.sha256:
                    raise RuntimeError(f"checkpoint {checkpoint.path} changed during the run (sha256 {loaded[key].sha256[:16]}..., was {checkpoint.sha256[:16]}...)")
            except Exception as exc:
                loaded[key] = exc
        subject = loaded[key]
        if isinstance(subject, Exception):
            raise subject.with_traceback(None)  # a fresh traceback per case, not one growing with each
        return subject

    return get


class ShrinkCase:
    """A case bound to its subject and its test item, so its result travels in ``user_properties``."""

    def __init__(self, spec: CaseSpec, subject: Subject, item: pytest.Item) -> None:
        self.spec, self.subject, self.item = spec, subject, item

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        try:
            return run_case(self.spec, self.subject, result)
        except Exception as exc:
            result["message"] = str(exc)
            raise
        finally:
            self.item.user_properties.append((RESULT_PROPERTY, plain(result)))


@pytest.fixture
def shrink_case(request: pytest.FixtureRequest, shrink_subjects: Callable[..., Subject]) -> ShrinkCase:
    """The case this test runs (parametrized by the plugin)."""
    spec = getattr(request, "param", None)
    if not isinstance(spec, CaseSpec):
        pytest.skip("benchmark cases run only with --shrink-method=NAME[,NAME...|all|baselines]")
    # Recorded before anything can fail, so even a setup error is reported as this case.
    request.node.user_properties.append((CASE_PROPERTY, spec.as_dict()))
    try:
        subject = shrink_subjects(spec.suite, spec.weights)
    except SuiteUnavailable as exc:  # its data or weights are not on this machine: one line, not a failure
        pytest.skip(str(exc))
    except Exception as exc:
        raise RuntimeError(f"[{spec.label}] could not load suite {spec.suite!r}: {type(exc).__name__}: {exc}") from exc
    return ShrinkCase(spec, subject, request.node)


class ResultsRecorder:
    """Controller-side plugin: turns each case's final report into a row, streams it, prints the leaderboard.

    It runs on the controller only, from the reports xdist forwards, so rows from a worker that
    later crashes are already on disk.
    """

    def __init__(self, config: options.ShrinkConfig) -> None:
        self.file = ResultsFile(config.results_dir)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        case = properties.get(CASE_PROPERTY)
        if case is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
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
    if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if result.get("message"):
        return result["message"]
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)
