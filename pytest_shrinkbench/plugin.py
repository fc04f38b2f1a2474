"""The pytest plugin: options, case parametrization, subjects per session, result gathering, leaderboard.

Registered through the ``pytest11`` entry point. Without ``--shrink-method`` it only adds its
options; with it, the session collects the benchmark cases instead of the project's tests.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from . import custom_suites, devices, gate, methods, options
from . import report as reports
from .case import CaseSpec, provenance, run_case
from .errors import SuiteUnavailable
from .guards import limit_memory, restore_memory
from .latency import latency_inputs, measure_shrunk, median_seconds
from .leaderboard import aggregate, render, render_summary, suite_label, summarize
from .results import ResultsFile, plain
from .store import ResultsStore, case_key, is_store
from .subject import Subject, load_subject

CONFIG_KEY = pytest.StashKey[options.ShrinkConfig]()
MEMORY_KEY = pytest.StashKey[int]()
# --shrink-latency: median seconds per forward pass of each (suite, weights tag)'s dense model, timed before its cases.
DENSE_LATENCY_KEY = pytest.StashKey[dict[tuple[str, "str | None"], float]]()
CASE_PROPERTY = "shrinkbench_case"
RESULT_PROPERTY = "shrinkbench_result"
# Flat scalar properties (``shrinkbench.top1`` ...) for JUnit XML, which shows each property as a string.
JUNIT_METRICS = ("top1", "top5", "top1_pre", "top5_pre", "compression", "speedup", "params_total", "params_nonzero",
                 "flops_dense", "flops_sparse", "prune_seconds", "finetune_seconds", "method_hash", "base_sha256",
                 "recipe_hash", "reused", "latency_ms", "latency_dense_ms", "speedup_measured")
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
    custom_suites.discover()  # installed packages' suites; a project's register from its conftest or method files
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


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller (xdist): hand each worker the visible GPUs; worker k pins GPU k mod count."""
    config = node.config.stash.get(CONFIG_KEY, None)
    if config is not None and config.device == "cuda":
        node.workerinput[devices.WORKER_GPUS_KEY] = devices.visible_gpus()


def pytest_unconfigure(config: pytest.Config) -> None:
    methods.forget_session_methods()  # a project's methods and suites are re-discovered per session
    custom_suites.forget_session_suites()
    previous = config.stash.get(MEMORY_KEY, None)
    if previous is not None:
        restore_memory(previous)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CONFIG_KEY not in metafunc.config.stash:
        return
    cases = metafunc.config.stash[CONFIG_KEY].cases()
    if "shrink_case" in metafunc.fixturenames:
        metafunc.parametrize("shrink_case", cases, ids=[c.id for c in cases], indirect=True)
    if "shrink_reference" in metafunc.fixturenames:
        references = list(dict.fromkeys((c.suite, c.weights) for c in cases))
        ids = [f"dense-{suite}" + (f"-{tag}" if tag else "") for suite, tag in references]
        metafunc.parametrize("shrink_reference", references, ids=ids, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The dense latency references run first, as every case's measured speedup divides by them; without
    --shrink-latency they are not run at all."""
    shrink = config.stash.get(CONFIG_KEY, None)
    if shrink is None:
        return
    references = [item for item in items if "shrink_reference" in getattr(item, "fixturenames", ())]
    others = [item for item in items if "shrink_reference" not in getattr(item, "fixturenames", ())]
    items[:] = (references if shrink.latency_batch else []) + others


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


@pytest.fixture(scope="session")
def shrink_stored(pytestconfig: pytest.Config) -> Iterator[Callable[[str], dict[str, Any] | None]]:
    """Look up a passed result by case key in the results store (``None`` when reuse is off or not stored).

    Each process (worker) reads the store itself: in WAL mode its reads never block the
    controller's writes.
    """
    config = pytestconfig.stash.get(CONFIG_KEY, None)
    path = config.store_path if config is not None and config.reuse else None
    stores: list[ResultsStore] = []

    def get(key: str) -> dict[str, Any] | None:
        if path is None or not is_store(path):
            return None
        if not stores:
            stores.append(ResultsStore(path, readonly=True))
        return stores[0].get(key)

    yield get
    for store in stores:
        store.close()


@pytest.fixture
def shrink_reference(request: pytest.FixtureRequest, shrink_subjects: Callable[..., Subject]) -> Callable[[], float]:
    """Times a suite's dense base model (--shrink-latency); calling it returns and keeps the median seconds."""
    if getattr(request, "param", None) is None:
        pytest.skip("dense latency references run only with --shrink-method=... --shrink-latency")
    suite, weights = request.param
    config = request.config.stash[CONFIG_KEY]
    benchmark = request.getfixturevalue("benchmark")
    benchmark.group = suite_label(suite, weights)

    def measure() -> float:
        subject = shrink_subjects(suite, weights)
        seconds = median_seconds(benchmark, subject.fresh_model(), latency_inputs(subject, config.latency_batch))
        request.config.stash.setdefault(DENSE_LATENCY_KEY, {})[(suite, weights)] = seconds
        request.node.user_properties.append(("shrinkbench.latency_dense_ms", seconds * 1e3))
        return seconds

    return measure


class ShrinkCase:
    """A case bound to its subject and its test item, so its result travels in ``user_properties``.

    ``stored`` is the stored row of the same case key, when reuse is on: :meth:`run` then reports
    that row (flagged ``reused``) instead of running the case again. With ``benchmark`` (pytest-benchmark's
    fixture, --shrink-latency) the final pruned model is physically shrunk and timed against
    ``dense_seconds``, the dense reference's median (None when it was not run).
    """

    def __init__(
        self, spec: CaseSpec, subject: Subject, item: pytest.Item, timeout: float, stored: dict[str, Any] | None = None,
        benchmark: Any = None, latency_batch: int = 0, dense_seconds: float | None = None,
    ) -> None:
        self.spec, self.subject, self.item, self.timeout, self.stored = spec, subject, item, timeout, stored
        self.benchmark, self.latency_batch, self.dense_seconds = benchmark, latency_batch, dense_seconds

    def run(self) -> dict[str, Any]:
        if self.stored is not None:
            row = {**self.stored, "reused": True}
            self._record(row)
            return row
        result: dict[str, Any] = {"reused": False}
        try:
            return run_case(self.spec, self.subject, result, timeout=self.timeout,
                            then=self._time_shrunk if self.benchmark is not None else None)
        except Exception as exc:
            result["message"] = str(exc)
            raise
        finally:
            self._record(result)

    def _time_shrunk(self, model: torch.nn.Module, result: dict[str, Any]) -> None:
        self.benchmark.group = suite_label(self.spec.suite, self.spec.weights)
        self.benchmark.extra_info.update(self.spec.as_dict(), speedup=result.get("speedup"))
        result.update(measure_shrunk(self.benchmark, model, self.subject, self.latency_batch, self.dense_seconds))
        self.benchmark.extra_info.update(speedup_measured=result["speedup_measured"])

    def _record(self, result: dict[str, Any]) -> None:
        result = plain(result)
        self.item.user_properties.append((RESULT_PROPERTY, result))
        for name in JUNIT_METRICS:
            if result.get(name) is not None:
                self.item.user_properties.append((f"shrinkbench.{name}", result[name]))


@pytest.fixture
def shrink_case(
    request: pytest.FixtureRequest,
    shrink_subjects: Callable[..., Subject],
    shrink_stored: Callable[[str], dict[str, Any] | None],
) -> ShrinkCase:
    """The case this test runs (parametrized by the plugin).

    The reuse check happens here, after the subject is loaded: the case key includes the base
    weights' sha256, known only then.
    """
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
    stored = shrink_stored(case_key({**spec.as_dict(), **provenance(spec, subject)}))
    config = request.config.stash[CONFIG_KEY]
    if not config.latency_batch:
        return ShrinkCase(spec, subject, request.node, config.timeout, stored)
    dense = request.config.stash.get(DENSE_LATENCY_KEY, {}).get((spec.suite, spec.weights))
    return ShrinkCase(spec, subject, request.node, config.timeout, stored, request.getfixturevalue("benchmark"),
                      config.latency_batch, dense)


def _reused(report: pytest.TestReport) -> bool:
    for name, value in report.user_properties:
        if name == RESULT_PROPERTY and isinstance(value, dict) and value.get("reused"):
            return True
    return False


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    """A case answered from the store shows as ``reused`` (``r``, ``REUSED``), not as a fresh pass."""
    if report.when == "call" and report.passed and _reused(report):
        return "reused", "r", ("REUSED", {"yellow": True})
    return None


class ResultsRecorder:
    """Controller-side plugin: turns each case's final report into a row, streams it, prints the leaderboard.

    It runs on the controller only, from the reports xdist forwards, so rows from a worker that
    later crashes are already on disk.
    """

    def __init__(self, config: options.ShrinkConfig) -> None:
        self.config = config
        self.file = ResultsFile(config.results_dir)
        self.cases = {case.id: case for case in config.cases()}
        self.store = ResultsStore(config.store_path) if config.store_path is not None else None
        self.gate: gate.GateResult | None = None
        self.messages: list[tuple[str, dict[str, bool]]] = []  # (line, markup) for the terminal summary

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
            if result.get("reused") and report.passed:
                self.file.add({**result, **case, "reused": True})  # the stored row, as it was measured
                return
        status = "passed" if report.passed else "skipped" if report.skipped else "failed"
        row = {**case, **result, "status": status, "message": _message(report, result), "duration": report.duration,
               "reused": False, "run": self.file.path.stem, "finished": _now()}
        self.file.add(row)
        if self.store is not None:
            self.store.put(row)  # committed before the next case is reported

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        """Gate, baseline and report after the last case; a regression fails the session by its exit status."""
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            if self.config.baseline or self.config.save_baseline:
                self.messages.append(("shrinkbench: session interrupted: no baseline compared or saved", {"yellow": True}))
        else:
            self._finish()
        result = yield
        if self.gate is not None and self.gate.failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return result

    def _finish(self) -> None:
        entries = aggregate(self.file.rows)
        if self.config.baseline is not None:
            expected, setup = gate.load_baseline(self.config.baseline)  # checked when options were parsed
            self.gate = gate.compare(entries, expected, points=self.config.tolerance_points,
                                     stds=self.config.tolerance_stds, setup=setup, rows=self.file.rows)
        if self.config.save_baseline is not None:
            document = gate.save_baseline(self.config.save_baseline, entries, self.file.rows)
            self.messages.append((f"shrinkbench: baseline of {len(document['entries'])} entries written to {self.config.save_baseline}", {}))
        if self.config.report_dir is not None and self.file.rows:
            written = reports.write(reports.build(self.file.rows, merge=False), self.config.report_dir)
            self.messages.append((f"shrinkbench: report ({', '.join(sorted(written))}) written to {self.config.report_dir}", {}))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        entries = aggregate(self.file.rows)
        summaries = render_summary(summarize(entries))
        for suite, table in render(entries).items():
            terminalreporter.write_sep("=", f"shrinkbench leaderboard: {suite}")
            terminalreporter.write_line(table)
            terminalreporter.write_line("")
            terminalreporter.write_line(summaries[suite])
        reused = sum(1 for r in self.file.rows if r.get("reused"))
        terminalreporter.write_line(f"shrinkbench: {len(self.file.rows)} results written to {self.file.path}")
        if self.store is not None:
            terminalreporter.write_line(
                f"shrinkbench: results store {self.store.path} ({len(self.store)} cases); "
                + (f"{reused} cases reused from it (--shrink-rerun runs them again)" if reused else "no case reused")
            )
        if self.gate is not None:
            terminalreporter.write_sep("=", f"shrinkbench gate: {self.config.baseline}", red=self.gate.failed, green=not self.gate.failed)
            for line in gate.render(self.gate).splitlines():
                terminalreporter.write_line(line, red=self.gate.failed and line.startswith("shrinkbench gate"),
                                            bold=line.startswith("shrinkbench gate"))
        for line, markup in self.messages:
            terminalreporter.write_line(line, **markup)

    def pytest_unconfigure(self) -> None:
        self.file.close()
        if self.store is not None:
            self.store.close()


def _now() -> str:
    """UTC time with microseconds: orders a case's recordings when stores are merged."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


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
