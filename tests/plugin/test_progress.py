"""The progress line's numbers: cases done per suite, counted once each, and a time left from finished cases."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_shrinkbench.identity import CaseSpec
from pytest_shrinkbench.plugin.progress import Progress, clock_text

CASES = [CaseSpec("m", suite, 2.0, seed) for suite in ("digits-cnn", "digits-mlp") for seed in range(4)]


def report(case: CaseSpec, when: str, outcome: str = "passed", duration: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(nodeid=f"benchmarks/test_cases.py::test_case[{case.id}]", when=when, duration=duration,
                           passed=outcome == "passed", outcome=outcome)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def progress(pytestconfig: pytest.Config, clock: Clock) -> Progress:
    tracker = Progress(pytestconfig, CASES, every=0, clock=clock)  # every=0: it writes nothing here
    tracker.pytest_runtest_logstart()
    return tracker


def test_each_case_counts_once_whatever_its_phases(progress: Progress) -> None:
    first, second, third = CASES[:3]
    for when, duration in (("setup", 3.0), ("call", 1.0), ("teardown", 0.1)):
        progress.pytest_runtest_logreport(report(first, when, duration=duration))
    progress.pytest_runtest_logreport(report(second, "setup", "skipped", 0.01))  # data missing: done at setup
    progress.pytest_runtest_logreport(report(second, "teardown"))
    progress.pytest_runtest_logreport(report(third, "setup", "failed", 0.5))
    progress.pytest_runtest_logreport(report(CASES[4], "call", "failed", 2.0))
    progress.pytest_runtest_logreport(SimpleNamespace(nodeid="x::test_dense_latency[dense-digits-cnn]", when="call"))
    assert progress.done == {"digits-cnn": 3, "digits-mlp": 1}
    assert progress.seconds["digits-cnn"] == pytest.approx(4.0 + 0.01 + 0.5), "setup time counts with its case"


def test_the_time_left_scales_each_suites_mean_by_the_parallelism_seen(progress: Progress, clock: Clock) -> None:
    for case in CASES[:2]:  # two cnn cases of 4 s each, finished in 4 s of wall time: two at once
        progress.pytest_runtest_logreport(report(case, "call", duration=4.0))
    clock.now += 4.0
    # 2 cnn cases left at 4 s, 4 mlp cases at the overall mean (4 s): 24 s of case time, at 2 per wall second
    assert progress.estimate(4.0) == pytest.approx(12.0)
    assert progress.line(clock.now) == "shrinkbench: digits-cnn 2/4 · digits-mlp 0/4 · 0:04 elapsed · about 0:12 left"
    for case in CASES[4:6]:  # mlp cases are quicker: 1 s each
        progress.pytest_runtest_logreport(report(case, "call", duration=1.0))
    assert progress.estimate(5.0) == pytest.approx((2 * 4.0 + 2 * 1.0) * 5.0 / 10.0)


def test_no_estimate_before_a_case_finished(progress: Progress) -> None:
    assert progress.estimate(0.0) is None
    assert progress.line(100.0) == "shrinkbench: digits-cnn 0/4 · digits-mlp 0/4 · 0:00 elapsed"


def test_times_read_as_a_clock() -> None:
    assert [clock_text(s) for s in (0.4, 41, 725, 10930)] == ["0:00", "0:41", "12:05", "3:02:10"]
