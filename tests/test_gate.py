"""Regression gates: baselines saved and compared, one-sided tolerances, the session's exit status, JUnit properties."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pytest_shrinkbench import gate
from pytest_shrinkbench.cli import main
from pytest_shrinkbench.leaderboard import aggregate
from synthetic import row


def entries(values: dict[tuple[str, float], list[float]], failed: tuple = ()) -> list:
    rows = [row(m, r, s, v) for (m, r), vs in values.items() for s, v in enumerate(vs)]
    rows += [row(m, r, 9, status="failed") for m, r in failed]
    return aggregate(rows)


def verdicts(result: gate.GateResult) -> dict[tuple[str, float], str]:
    return {(c.method, c.ratio): c.verdict for c in result.comparisons}


def test_one_sided_tolerance_max_of_points_and_stds(tmp_path: Path) -> None:
    base = entries({("a", 2): [0.90, 0.90], ("a", 4): [0.80, 0.90], ("b", 2): [0.90, 0.90], ("c", 2): [0.5, 0.5], ("gone", 2): [0.9, 0.9]})
    gate.save_baseline(tmp_path / "base.json", base)
    expected, _ = gate.load_baseline(tmp_path / "base.json")
    assert {(x.method, x.ratio): (x.top1, x.n) for x in expected}[("a", 4)] == (pytest.approx(0.85), 2)
    now = entries(
        {
            ("a", 2): [0.885, 0.885],  # -1.5 pp, std 0: beyond the 1 pp floor
            ("a", 4): [0.75, 0.75],  # -10 pp, but the baseline's std is 7.1 pp: 2 std = 14 pp allowed
            ("b", 2): [0.895, 0.895],  # -0.5 pp: within 1 pp
            ("c", 2): [0.9, 0.9],  # +40 pp: an improvement, never a failure
            ("new", 2): [0.9, 0.9],
        },
        failed=[("c", 2)],
    )
    result = gate.compare(now, expected)
    assert verdicts(result) == {("a", 2.0): "regression", ("a", 4.0): "unchanged", ("b", 2.0): "unchanged",
                                ("c", 2.0): "failed", ("gone", 2.0): "missing", ("new", 2.0): "new"}
    assert result.failed and [c.method for c in result.regressions] == ["a", "c"]
    assert result.comparisons[0].change == pytest.approx(-0.015) and result.comparisons[0].allowed == pytest.approx(0.01)
    # the same drops with a looser floor: only the failed case fails
    loose = gate.compare(now, expected, points=2.0)
    assert verdicts(loose)[("a", 2.0)] == "unchanged" and [c.method for c in loose.regressions] == ["c"]
    # improvements alone never fail
    better = gate.compare(entries({("a", 2): [0.95, 0.95], ("a", 4): [1.0, 1.0]}), expected)
    assert not better.failed and set(verdicts(better).values()) == {"improved", "missing"}
    text = gate.render(result)
    assert "regressions (mean top-1 fell by more than the tolerance, or cases failed):" in text
    assert "shrinkbench gate FAILED: 2 regression(s), 2 unchanged, 0 improved, 1 missing, 1 new (tolerance: max(1 pp, 2 std))" in text


def test_bad_baseline_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"entries": []}')
    with pytest.raises(ValueError, match="is not a pytest-shrinkbench baseline file"):
        gate.load_baseline(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": gate.BASELINE_FORMAT, "entries": [{"suite": "s"}]}))
    with pytest.raises(ValueError, match="malformed baseline entry"):
        gate.load_baseline(tmp_path / "y.json")


def test_report_command_gates_too(tmp_path: Path, capsys) -> None:
    rows = [row("a", r, s, 0.9) for r in (2, 4) for s in (0, 1)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["report", str(tmp_path / "r.jsonl"), "-o", str(tmp_path / "out"), "--no-plots", "-q"]
    assert main([*args, "--save-baseline", str(tmp_path / "base.json")]) == 0
    assert main([*args, "--baseline", str(tmp_path / "base.json")]) == 0
    document = json.loads((tmp_path / "base.json").read_text())
    document["entries"][0]["top1"] = 0.95
    (tmp_path / "base.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main([*args, "--baseline", str(tmp_path / "base.json")]) == 1
    assert "shrinkbench gate FAILED: 1 regression(s)" in capsys.readouterr().out


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
        "regressions (mean top-1 fell by more than the tolerance, or cases failed):",
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
        (["--shrink-tolerance=-1"], "*--shrink-tolerance must be one float >= 0, got '-1'"),
    ],
    ids=["unreadable", "absent", "negative-tolerance"],
)
def test_gate_usage_errors(project: pytest.Pytester, args: list[str], message: str) -> None:
    (project.path / "bad.json").write_text("{not json")
    result = project.runpytest_inprocess("--shrink-method=random", "--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
