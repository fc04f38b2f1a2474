"""--shrink-latency end to end: dense and shrunk models timed by pytest-benchmark, the measured speedup recorded.

Timings themselves are never asserted (a shared machine is noisy): only that they were taken,
where they went, and that the shrunk models really are smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_shrinkbench import load_subject
from pytest_shrinkbench.measure import latency
from tests.helpers import only_run

QUICK_TIMING = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.02"]
ARGS = ["--shrink-method=l1-filter,global-magnitude", "--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0",
        "--shrink-latency", *QUICK_TIMING, "-p", "no:randomly"]


def test_latency_recorded_beside_theoretical_speedup(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*ARGS, "--benchmark-json=bench.json", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*test_dense_latency?dense-digits-mlp? PASSED*",  # the reference runs before the cases
        "*test_case?global-magnitude-digits-mlp-x4-seed0? PASSED*",
        "*test_case?l1-filter-digits-mlp-x4-seed0? PASSED*",
        "ratio*method*rank*compression*speedup*measured speedup*seeds*",
        "*benchmark 'digits-mlp': 3 tests*",
    ])
    rows = {r["method"]: r for r in only_run(project.path / "results")}
    for row in rows.values():
        assert row["latency_batch"] == 64
        assert row["latency_ms"] > 0 and row["latency_dense_ms"] > 0
        assert row["speedup_measured"] == pytest.approx(row["latency_dense_ms"] / row["latency_ms"])
        assert row["params_shrunk"] <= row["params_total"] and row["flops_shrunk"] <= row["flops_dense"]
        assert row["shrink_exact"] is True, "an MLP's folds are exact"
    structured = rows["l1-filter"]
    assert structured["channels_shrunk"] > 0
    assert structured["flops_shrunk"] < 0.5 * structured["flops_dense"], "whole rows gone: the dense kernels have less to do"
    assert structured["params_shrunk"] < 0.5 * structured["params_total"]
    timed = {b["name"]: b for b in json.loads((project.path / "bench.json").read_text())["benchmarks"]}
    assert timed["test_case[l1-filter-digits-mlp-x4-seed0]"]["extra_info"]["speedup_measured"] == pytest.approx(structured["speedup_measured"])
    assert timed["test_dense_latency[dense-digits-mlp]"]["group"] == "digits-mlp"

    again = project.runpytest_subprocess(*ARGS)
    again.assert_outcomes(passed=3)
    again.stdout.fnmatch_lines(["*no case reused*"])  # a timed case needs its model: it is run again, never reused


def test_cases_without_the_dense_reference_record_no_measured_speedup(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*ARGS, "-k", "test_case")
    result.assert_outcomes(passed=2, deselected=1)
    for row in only_run(project.path / "results"):
        assert row["latency_ms"] > 0 and row["speedup_measured"] is None and row["latency_dense_ms"] is None


@pytest.mark.parametrize("extra, message", [
    (["-n", "2"], "*--shrink-latency times models with pytest-benchmark, which is off under xdist*run it without -n*"),
    (["--benchmark-disable"], "*--shrink-latency needs pytest-benchmark's timings; drop --benchmark-disable*"),
    (["--shrink-latency-batch=0"], "*--shrink-latency-batch: must be one int >= 1, got '0'*"),
], ids=["xdist", "benchmark disabled", "empty batch"])
def test_latency_refuses_settings_that_cannot_time(project: pytest.Pytester, extra: list[str], message: str) -> None:
    result = project.runpytest_subprocess(*ARGS, *extra)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_model_that_cannot_be_shrunk_is_recorded_not_failed(monkeypatch: pytest.MonkeyPatch, shrink_cache: Path) -> None:
    """Shrinking is the harness's extra measurement: its failure is a warning and a row field, never the method's verdict."""

    def broken(model: object, inputs: object) -> None:
        raise ValueError("cannot cut this graph")

    monkeypatch.setattr(latency, "shrink", broken)
    subject = load_subject("digits-mlp", cache_dir=shrink_cache)
    with pytest.warns(UserWarning, match="could not shrink the pruned model.*ValueError: cannot cut this graph"):
        row = latency.measure_shrunk(None, subject.fresh_model(), subject, 8, dense_seconds=0.001)
    assert row == dict(latency_batch=8, shrink_error="ValueError: cannot cut this graph", latency_ms=None,
                       speedup_measured=None, latency_dense_ms=1.0)


def test_a_2_of_4_case_says_why_its_sparse_kernels_were_not_timed_on_a_cpu(project: pytest.Pytester) -> None:
    """2:4 kernels need CUDA: on a CPU the case keeps its verdict and its dense-kernel latency, and says so."""
    result = project.runpytest_subprocess("--shrink-method=row-magnitude-2of4", "--shrink-suite=digits-mlp", "--shrink-ratios=2",
                                          "--shrink-seeds=0", "--shrink-latency", *QUICK_TIMING, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    (row,) = only_run(project.path / "results")
    assert row["sparsity_pattern"] == "2:4" and row["latency_ms"] > 0
    assert row["sparse_kernel"] == "not timed: 2:4 kernels need a CUDA device (this case ran on cpu)"
    assert row.get("latency_2of4_ms") is None
