"""What a researcher reads in the terminal: a header that says what runs, one line per failed case, and the
reasons in full at the end.

A case that fails because of its method (:class:`~pytest_shrinkbench.errors.CaseFailure`: bad masks, a broken
invariant, a crash inside the method) is the method's fault, not the harness's: its report is the one line
that says what was wrong, not a traceback through the harness's internals with tensor dumps. ``--tb=long``
(or ``--tb=native``) brings the traceback back, and any other exception (the harness itself broke) keeps it.
pytest trims its short test summary at the terminal width, so the reasons are repeated under it in full,
grouped, whenever it trimmed one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ..errors import CaseFailure
from ..results import failures
from . import idle_benchmark
from .config import ShrinkConfig, method_folders
from .progress import Progress
from .wire import case_of

TRACEBACK_STYLES = ("long", "native")  # --tb values that ask for the traceback of a case failure too


def register(config: pytest.Config, shrink: ShrinkConfig, worker: bool) -> None:
    """Register this module's plugins: compact reports where cases run, the rest on the controller only."""
    idle_benchmark.quiet(config, timing=shrink.latency_batch is not None)
    config.pluginmanager.register(CompactFailures(config), "shrinkbench-compact-failures")
    if not worker:
        config.pluginmanager.register(Terminal(config, shrink), "shrinkbench-terminal")
        config.pluginmanager.register(Progress(config, shrink.cases(), shrink.progress_seconds), "shrinkbench-progress")


class CompactFailures:
    """On the process that runs a case: a case failure's report becomes its one-line message."""

    def __init__(self, config: pytest.Config) -> None:
        self.traceback = config.getoption("tbstyle", "auto") in TRACEBACK_STYLES

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.failed and call.excinfo is not None and call.excinfo.errisinstance(CaseFailure) and not self.traceback:
            report.longrepr = str(call.excinfo.value)
        return report


class Terminal:
    """On the controller: the header's shrinkbench lines, and the failure reasons in full after the short summary."""

    def __init__(self, config: pytest.Config, shrink: ShrinkConfig) -> None:
        self.config, self.shrink = config, shrink

    @pytest.hookimpl(wrapper=True)
    def pytest_report_header(self, config: pytest.Config) -> Any:
        results = yield
        timing = self.shrink.latency_batch is not None
        collected = config.args_source != pytest.Config.ArgsSource.ARGS  # the session chose its benchmark paths
        kept = []
        for result in results:
            lines = [result] if isinstance(result, str) else list(result or [])
            lines = [line for line in lines if timing or not line.startswith("benchmark: ")]  # pytest-benchmark's defaults
            lines = [line for line in lines if not (collected and line.startswith("testpaths: "))]  # not what runs
            kept.append(lines)
        return [self.header(config, collected), *kept]  # results are shown in reverse: this comes last

    def header(self, config: pytest.Config, collected: bool) -> list[str]:
        s = self.shrink
        grid = [f"{len(s.methods)} method{'s' if len(s.methods) > 1 else ''} ({', '.join(s.methods)})",
                f"suites {', '.join(s.suites)}", "ratios " + " ".join(f"x{r:g}" for r in s.ratios),
                "seeds " + " ".join(map(str, s.seeds))]
        checkpoints = sum(len(v) for v in s.weights.values() if len(v) > 1)
        grid += [f"{checkpoints} checkpoints"] if checkpoints else []
        lines = [f"shrinkbench: {len(s.cases())} cases: " + " × ".join(grid)]
        if collected:
            paths = ", ".join(_relative(config, arg) for arg in config.args)
            testpaths = config.getini("testpaths")
            lines.append(f"shrinkbench: collecting {paths}" + (f" (not testpaths: {', '.join(testpaths)})" if testpaths else ""))
        if not any(folder.is_dir() for folder in method_folders(config)):
            lines.append(f"shrinkbench: methods from conftest.py files and installed packages only: no methods/ folder under "
                         f"the rootdir {config.rootpath}")
        return lines

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> Any:
        result = yield  # pytest's short test summary is written as this returns
        compact = [report for report in terminalreporter.stats.get("failed", [])
                   if case_of(report) is not None and isinstance(report.longrepr, str)]
        if compact and self._summary_trimmed(terminalreporter, compact):
            rows = [{**case_of(report), "status": "failed", "message": report.longrepr} for report in compact]
            terminalreporter.write_line("shrinkbench: why cases failed, in full (--tb=long shows the tracebacks):")
            for group in failures.group(rows):
                terminalreporter.write_line(f"  {group.method} on {group.suite} ({group.where}): {group.reason}", red=True)
        return result

    def _summary_trimmed(self, terminalreporter: pytest.TerminalReporter, reports: list[pytest.TestReport]) -> bool:
        """Whether pytest's short summary left a reason out or cut it: it shows none without ``f`` in ``-r``,
        and trims each line at the terminal width unless on CI or with -vv."""
        if "f" not in terminalreporter.reportchars:
            return True
        untrimmed = os.environ.get("CI") or os.environ.get("BUILD_NUMBER") or self.config.get_verbosity() >= 2
        if untrimmed and not self.config.getoption("force_short_summary", False):
            return False
        width = self.config.get_terminal_writer().fullwidth
        return any(len(f"FAILED {report.nodeid} - {report.longrepr}") >= width for report in reports)


def _relative(config: pytest.Config, path: str) -> str:
    """A collected path as the user would type it: relative to where pytest runs when it lies below, else in full."""
    here = config.invocation_params.dir
    return str(Path(path).relative_to(here)) if Path(path).is_relative_to(here) else path
