"""Regression gates: baselines saved and compared, one-sided tolerances, the session's exit status, JUnit properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import main
from pytest_shrinkbench.results import gate
from pytest_shrinkbench.results.leaderboard import aggregate
from tests.helpers import row


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
    assert {(x.method, x.ratio): (x.value, x.n) for x in expected}[("a", 4)] == (pytest.approx(0.85), 2)
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
    assert "regressions (mean top-1 fell by more than the tolerance, cases failed, or methods ran unverified):" in text
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
