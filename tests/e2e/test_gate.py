"""Regression gates: baselines saved and compared, one-sided tolerances, the session's exit status, JUnit properties."""

from __future__ import annotations

import json
import sqlite3

import pytest


def test_gate_end_to_end(project: pytest.Pytester) -> None:
    """Save a baseline; re-run unchanged (passes; rows replaced, not duplicated); plant a higher expectation (fails)."""
    args = ["--shrink-method=global-magnitude", "--shrink-suite=digits-mlp", "--shrink-ratios=2,4", "--shrink-seeds=0", "-p", "no:randomly"]
    first = project.runpytest_subprocess(*args, "--shrink-save-baseline=base.json")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["shrinkbench: baseline of 2 entries written to *base.json"])
    baseline = json.loads((project.path / "base.json").read_text())
    assert [(e["method"], e["ratio"], e["n"]) for e in baseline["entries"]] == [("global-magnitude", 2.0, 1), ("global-magnitude", 4.0, 1)]

    # An unchanged re-run (really re-run) passes the gate; its rows replace the stored ones.
    again = project.runpytest_subprocess(*args, "--shrink-rerun", "--shrink-baseline=base.json")
    again.assert_outcomes(passed=2)
    assert again.ret == pytest.ExitCode.OK
    again.stdout.fnmatch_lines(["*shrinkbench gate passed: 0 regression(s), 2 unchanged, 0 improved, 0 missing, 0 new*"])
    store = sqlite3.connect(project.path / "results" / "store.sqlite")
    runs = [json.loads(r)["run"] for (r,) in store.execute("SELECT row FROM results")]
    assert len(runs) == 2 and len(set(runs)) == 1 and runs[0] in again.stdout.str(), "the re-run's rows replaced the first run's"

    # A planted regression at x4 (expected 2 pp more), an improvement at x2, an entry this run lacks.
    x2, x4 = baseline["entries"]
    x4["top1"] += 0.02
    x2["top1"] -= 0.02
    baseline["entries"].append({**x2, "method": "ghost"})
    (project.path / "base.json").write_text(json.dumps(baseline))
    gated = project.runpytest_subprocess(*args, "--shrink-baseline=base.json", "--shrink-report=report")
    assert gated.parseoutcomes()["reused"] == 2
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    gated.stdout.fnmatch_lines([
        "*shrinkbench gate: *base.json*",
        "regressions (mean top-1 fell by more than the tolerance, cases failed, or methods ran unverified):",
        "suite*method*ratio*baseline top-1 %*this run top-1 %*change (pp)*allowed (pp)*verdict",
        "digits-mlp*global-magnitude*x4*-2.00*-1.00*REGRESSION",
        "improvements (reported, never failing):",
        "*",
        "digits-mlp*global-magnitude*x2*+2.00*-1.00*improved",
        "missing from this run (in the baseline; not compared):",
        "*",
        "digits-mlp*ghost*x2*",
        "shrinkbench gate FAILED: 1 regression(s), 0 unchanged, 1 improved, 1 missing, 0 new*",
    ])
    # --shrink-report: the session's report, reused rows included, written by the same code as the command's.
    report = project.path / "report"
    assert {p.name for p in report.iterdir()} >= {"leaderboard.md", "leaderboard.html", "digits-mlp-top1-vs-compression.png"}
    assert "| x4 | global-magnitude | *1 |" in (report / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shrink-baseline=bad.json"], "*--shrink-baseline: cannot read baseline*bad.json*"),
        (["--shrink-baseline=none.json"], "*--shrink-baseline: no such file*none.json (write one with --shrink-save-baseline)"),
        (["--shrink-tolerance=-1"], "*--shrink-tolerance: must be one float >= 0, got '-1'"),
    ],
    ids=["unreadable", "absent", "negative-tolerance"],
)
def test_gate_usage_errors(project: pytest.Pytester, args: list[str], message: str) -> None:
    (project.path / "bad.json").write_text("{not json")
    result = project.runpytest_inprocess("--shrink-method=random", "--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
