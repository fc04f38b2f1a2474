"""The controller's side of a session: each case's report becomes a row, streamed to the results file and the
store; at the end, the gate, the baseline, the report and the leaderboard.

It runs on the controller only, from the reports xdist forwards, so rows from a worker that later
crashes are already on disk.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from ..results import failures, formats, gate
from ..results import report as reports
from ..results.files import ResultsFile
from ..results.gate import confinement
from ..results.leaderboard import aggregate, footnotes, heading, render, render_summary, summarize
from ..results.schema import LEVEL_IN_PROCESS, make_row
from ..results.signing import sign
from ..results.store import ResultsStore
from ..shards import write_manifest
from .config import ShrinkConfig
from .wire import case_of, row_of


class Recorder:
    """Rows of this session, in the order their cases ended, and where they go."""

    def __init__(self, config: ShrinkConfig, key: bytes | None, walls: Callable[[], str] = str) -> None:
        self.config, self.key = config, key
        self.walls = walls  # the walls this session's methods run behind (asked of the sandbox when needed)
        self.file = ResultsFile(config.results_dir)
        self.cases = {case.id: case for case in config.cases()}
        self.store = ResultsStore(config.store_path) if config.store_path is not None else None
        self.gate: gate.GateResult | None = None
        self.confinement: list[str] = []  # --shrink-require-sandbox: why the session's rows fall short
        self.messages: list[tuple[str, dict[str, bool]]] = []  # (line, markup) for the terminal summary
        if config.shard is not None:  # first: a shard that crashes still tells the report what it was to run
            write_manifest(config.results_dir, config.shard, config.all_cases())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        case = case_of(report)
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
            result = row_of(report)
            if result.get("reused") and report.passed:
                self.file.add({**result, **case, "reused": True})  # the stored row, as it was measured
                return
        status = "passed" if report.passed else "skipped" if report.skipped else "failed"
        row = make_row({**case, **result, "status": status, "message": _message(report, result), "duration": report.duration,
                        "reused": False, "run": self.file.path.stem, "finished": _now()})
        if self.key is not None:  # None: a debugging session, whose rows are never signed
            row = sign(row, self.key)
        self.file.add(row)
        if self.store is not None and row.get("sandbox") != LEVEL_IN_PROCESS:
            self.store.put(row)  # committed before the next case is reported; debugging-mode rows are never stored

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        """Gate, baseline and report after the last case; a regression fails the session by its exit status."""
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            if self.config.baseline or self.config.save_baseline:
                self.messages.append(("shrinkbench: session interrupted: no baseline compared or saved", {"yellow": True}))
        else:
            self._finish()
        result = yield
        failed = (self.gate is not None and self.gate.failed) or bool(self.confinement)
        if failed and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return result

    def _finish(self) -> None:
        entries = aggregate(self.file.rows)
        self.confinement = confinement(self.file.rows, self.config.require_sandbox,
                                       self.walls() if self.config.require_sandbox else "")
        if self.config.baseline is not None:
            expected, setup = gate.load_baseline(self.config.baseline)  # checked when options were parsed
            self.gate = gate.compare(entries, expected, points=self.config.tolerance_points,
                                     stds=self.config.tolerance_stds, setup=setup, rows=self.file.rows)
        if self.config.save_baseline is not None:
            document = gate.save_baseline(self.config.save_baseline, entries, self.file.rows)
            self.messages.append((f"shrinkbench: baseline of {len(document['entries'])} entries written to {self.config.save_baseline}", {}))
        if self.config.report_dir is not None and self.file.rows:
            written = formats.write(reports.build(self.file.rows, merge=False), self.config.report_dir)
            tables = sorted(name for name in written if not name.endswith((".png", ".pdf", ".svg")))
            figures = sum(name.endswith(".png") for name in written)
            self.messages.append((f"shrinkbench: report written to {self.config.report_dir}: {', '.join(tables)}"
                                  + (f", and {figures} figures as PDF, SVG and 300-dpi PNG" if figures else ""), {}))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        entries = aggregate(self.file.rows)
        summaries = render_summary(summarize(entries))
        for suite, table in render(entries).items():
            terminalreporter.write_sep("=", f"shrinkbench leaderboard: {suite}")
            for line in heading([e for e in entries if e.suite == suite]):  # metric, compression basis, protocol
                terminalreporter.write_line(line)
            terminalreporter.write_line(table)
            for note in footnotes([e for e in entries if e.suite == suite]):
                terminalreporter.write_line(note)
            terminalreporter.write_line("")
            terminalreporter.write_line(summaries[suite])
            failed = failures.failure_lines(self.file.rows, suite)
            if failed:
                terminalreporter.write_line("")
                terminalreporter.write_line("failed cases, by reason:")
                for line in failed:
                    terminalreporter.write_line(line, red=True)
        reused = sum(1 for r in self.file.rows if r.get("reused"))
        terminalreporter.write_line(f"shrinkbench: {len(self.file.rows)} results written to {self.file.path}")
        if self.store is not None:
            terminalreporter.write_line(
                f"shrinkbench: results store {self.store.path} ({len(self.store)} cases); "
                + (f"{reused} cases reused from it (--shrink-rerun runs them again)" if reused else "no case reused")
            )
        shared = sum(1 for r in self.file.rows if r.get("shared_from"))
        if shared:
            terminalreporter.write_line(f"shrinkbench: {shared} cases took the measurements of the same pruned model, measured "
                                        "once (--shrink-rerun measures each)")
        if self.gate is not None:
            terminalreporter.write_sep("=", f"shrinkbench gate: {self.config.baseline}", red=self.gate.failed, green=not self.gate.failed)
            for line in gate.render(self.gate).splitlines():
                terminalreporter.write_line(line, red=self.gate.failed and line.startswith("shrinkbench gate"),
                                            bold=line.startswith("shrinkbench gate"))
        for line in self.confinement:
            terminalreporter.write_line(line, red=True, bold=True)
        for line, markup in self.messages:
            terminalreporter.write_line(line, **markup)
        for line in failures.skip_lines(self.file.rows):  # shown without -rs: a skipped suite is easy to miss
            terminalreporter.write_line(line, yellow=True)

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
