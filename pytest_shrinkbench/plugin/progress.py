"""A progress line while the cases run: per suite, cases done of all; time elapsed; an estimate of the time left.

A main job prints dots for minutes; this says how far along it is. It runs on the controller, which sees
every case's report, also under xdist. The estimate comes from finished cases only: each suite's mean
case time (setup included), scaled by how much wall time the finished cases took per second of case time
(that factor is the parallelism, and the overheads between cases). Lines are written between pytest's own
lines of dots, never inside one (unless a line has taken four intervals), so both read well in a CI log;
``-q`` shows none, and ``--shrink-progress=0`` turns them off.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Callable

import pytest

from ..identity import CaseSpec
from ..results.leaderboard import suite_label

MID_LINE = 4  # intervals after which a line is written even in the middle of pytest's dots


class Progress:
    """Cases done per suite and their durations, and when the last progress line was written."""

    def __init__(self, config: pytest.Config, cases: list[CaseSpec], every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.every, self.clock = config, every, clock
        self.suite_of = {c.id: suite_label(c.suite, c.weights) for c in cases}
        self.total = Counter(self.suite_of.values())
        self.done: Counter[str] = Counter()
        self.seconds: dict[str, float] = defaultdict(float)  # per suite: time its finished cases took
        self.setup: dict[str, float] = {}  # per test id: setup time of a case still running
        self.started: float | None = None
        self.last: float | None = None  # when the last line was written (or the first case started)

    def pytest_runtest_logstart(self) -> None:
        if self.started is None:
            self.started = self.last = self.clock()

    @pytest.hookimpl(trylast=True)  # after the terminal wrote this report's letter (and maybe ended its line)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        suite = self.suite_of.get(report.nodeid.rpartition("[")[2].rstrip("]"))
        if suite is None:
            return
        if report.when == "setup" and report.passed:
            self.setup[report.nodeid] = report.duration
            return
        if report.when == "teardown":
            return  # the case was counted at its call, or at its setup if that did not pass
        self.done[suite] += 1  # a call, a setup that failed or skipped, or xdist's report of a crashed worker
        self.seconds[suite] += report.duration + self.setup.pop(report.nodeid, 0.0)
        self._write()

    def line(self, now: float) -> str:
        """``shrinkbench: digits-cnn 98/126 · digits-mlp 0/126 · 0:41 elapsed · about 1:05 left``."""
        parts = [f"{suite} {self.done[suite]}/{total}" for suite, total in self.total.items()]
        elapsed = now - (self.started if self.started is not None else now)
        parts.append(f"{clock_text(elapsed)} elapsed")
        left = self.estimate(elapsed)
        if left is not None:
            parts.append(f"about {clock_text(left)} left")
        return "shrinkbench: " + " · ".join(parts)

    def estimate(self, elapsed: float) -> float | None:
        """Seconds left: each suite's remaining cases × its mean case time × wall time per case time so far."""
        finished, work = sum(self.done.values()), sum(self.seconds.values())
        if not finished or work <= 0:
            return None
        overall = work / finished
        remaining = sum((self.total[s] - self.done[s]) * (self.seconds[s] / self.done[s] if self.done[s] else overall)
                        for s in self.total)
        return remaining * elapsed / work

    def _write(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.every <= 0 or self.config.get_verbosity() < 0 or self.last is None:
            return
        if sum(self.done.values()) >= sum(self.total.values()):
            return  # the last case: the leaderboard follows
        now = self.clock()
        writer = self.config.get_terminal_writer()
        at_line_start = writer.width_of_current_line == 0
        if now - self.last < self.every * (1 if at_line_start or self.config.get_verbosity() > 0 else MID_LINE):
            return
        self.last = now
        if self.config.get_verbosity() > 0:  # one test per line: pytest ends this line when the next test starts
            writer.write("\n" + self.line(now), flush=True)
        else:  # between lines of dots; the dots go on below
            writer.write(("" if at_line_start else "\n") + self.line(now) + "\n", flush=True)


def clock_text(seconds: float) -> str:
    """``0:41``, ``12:05``, ``3:02:10``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
