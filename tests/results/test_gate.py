"""Regression gates: baselines saved and compared, one-sided tolerances, the session's exit status, JUnit properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_shrinkbench.cli import main
from pytest_shrinkbench.identity import protocol_hash
from pytest_shrinkbench.results import gate
from pytest_shrinkbench.results.leaderboard import aggregate
from tests.helpers import PROTOCOL, lm_row, row


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


# -- perplexity: lower is better, a tolerance in percent of the baseline; protocols ---------------


def lm_baseline(tmp_path: Path, perplexities: dict[str, float], **extra) -> list[gate.Expected]:
    rows = [lm_row(m, 2, s, p, **extra) for m, p in perplexities.items() for s in (0, 1)]
    gate.save_baseline(tmp_path / "base.json", aggregate(rows), rows)
    return gate.load_baseline(tmp_path / "base.json")[0]


def test_a_perplexity_rise_beyond_the_tolerance_fails_the_gate_and_a_fall_passes(tmp_path: Path) -> None:
    """The default tolerance, 1, means 1% of the baseline's perplexity: 3.28 -> 3.35 (+2.1%) is a regression,
    3.28 -> 3.30 (+0.6%) is within it, and 3.28 -> 3.10 (-5.5%) is an improvement that never fails."""
    expected = lm_baseline(tmp_path, {"sparsegpt": 3.28, "wanda": 3.67})
    assert {(x.method, x.metric, x.value) for x in expected} == {("sparsegpt", "perplexity", 3.28), ("wanda", "perplexity", 3.67)}
    rose = gate.compare(aggregate([lm_row("sparsegpt", 2, s, 3.35) for s in (0, 1)] + [lm_row("wanda", 2, s, 3.69) for s in (0, 1)]), expected)
    assert verdicts(rose) == {("sparsegpt", 2.0): "regression", ("wanda", 2.0): "unchanged"} and rose.failed
    assert rose.comparisons[0].change == pytest.approx(0.07 / 3.28) and rose.comparisons[0].allowed == pytest.approx(0.01)
    text = gate.render(rose)
    assert "regressions (mean perplexity rose by more than the tolerance, cases failed, or methods ran unverified):" in text
    assert "baseline perplexity    this run perplexity    change (%)    allowed (%)" in text
    assert "3.280 ± 0.000 (n=2)" in text and "+2.13" in text and "+1.00" in text and "REGRESSION" in text
    assert text.endswith("(tolerance: max(1%, 2 std) of perplexity)")
    fell = gate.compare(aggregate([lm_row(m, 2, s, 3.10) for m in ("sparsegpt", "wanda") for s in (0, 1)]), expected)
    assert set(verdicts(fell).values()) == {"improved"} and not fell.failed
    assert gate.render(fell).startswith("improvements (reported, never failing):")


def test_a_noisy_perplexity_needs_a_bigger_rise_to_count(tmp_path: Path) -> None:
    """Seeds at 3.0 and 3.4 (std 0.28, 8.8% of 3.2): 2 std allow a rise of 17.7%; +10% passes, +25% does not."""
    rows = [lm_row("wanda", 2, 0, 3.0), lm_row("wanda", 2, 1, 3.4)]
    gate.save_baseline(tmp_path / "base.json", aggregate(rows), rows)
    expected, _ = gate.load_baseline(tmp_path / "base.json")
    within = gate.compare(aggregate([lm_row("wanda", 2, s, 3.52) for s in (0, 1)]), expected)
    assert verdicts(within) == {("wanda", 2.0): "unchanged"} and within.comparisons[0].allowed == pytest.approx(2 * 0.2828 / 3.2, rel=1e-3)
    beyond = gate.compare(aggregate([lm_row("wanda", 2, s, 4.0) for s in (0, 1)]), expected)
    assert verdicts(beyond) == {("wanda", 2.0): "regression"}


def test_a_gate_refuses_a_baseline_of_another_protocol_and_names_the_field(tmp_path: Path) -> None:
    """The baseline was measured with 128-token windows, this run with 256: its numbers are not comparable."""
    expected = lm_baseline(tmp_path, {"wanda": 3.67})
    longer = {**PROTOCOL, "context_length": 256}
    run = [lm_row("wanda", 2, s, 3.0, protocol=longer) for s in (0, 1)]
    result = gate.compare(aggregate(run), expected, rows=run)
    (refused,) = result.comparisons
    assert refused.verdict == "refused" and result.failed, "a gate that compared nothing must not pass"
    assert refused.reason == "measured by another protocol than the baseline's: context_length (baseline 128, this run 256)"
    text = gate.render(result)
    assert f"refused: pydoc-lm [protocol {protocol_hash(longer)}]: measured by another protocol than the baseline's: " \
           "context_length (baseline 128, this run 256)" in text
    assert "shrinkbench gate FAILED: 1 regression(s), 0 unchanged, 0 improved, 0 missing, 0 new, " \
           "1 refused (not comparable with the baseline)" in text
    same = gate.compare(aggregate([lm_row("wanda", 2, s, 3.0) for s in (0, 1)]), expected)
    assert verdicts(same) == {("wanda", 2.0): "improved"}, "the same protocol is compared as usual"


def test_a_baseline_of_top1_entries_is_written_and_read_as_before(tmp_path: Path) -> None:
    """Old baseline files hold top1 entries with no metric or protocol: they load, and new CNN baselines are the same."""
    rows = [row("a", 2, s, 0.9) for s in (0, 1)]
    document = gate.baseline_document(aggregate(rows), rows)
    assert document["entries"] == [{"suite": "digits-mlp", "method": "a", "ratio": 2.0, "top1": 0.9, "std": 0.0, "n": 2}]
    assert "protocols" not in document
    (tmp_path / "old.json").write_text(json.dumps(document))
    (expected,) = gate.load_baseline(tmp_path / "old.json")[0]
    assert (expected.metric, expected.value, expected.protocol_hash) == ("top1", 0.9, None)


def test_a_gate_refuses_to_compare_a_suite_that_changed_its_ranking_metric(tmp_path: Path) -> None:
    """A user suite once ranked by top-1 now ranks by perplexity: a perplexity is no top-1, nothing is compared."""
    rows = [row("a", 2, s, 0.9) for s in (0, 1)]
    gate.save_baseline(tmp_path / "base.json", aggregate(rows), rows)
    expected, _ = gate.load_baseline(tmp_path / "base.json")
    now = [row("a", 2, s, 0.5, metric="perplexity", perplexity=3.3, perplexity_pre=3.3) for s in (0, 1)]
    result = gate.compare(aggregate(now), expected)
    assert verdicts(result) == {("a", 2.0): "refused"} and result.failed
    assert result.comparisons[0].reason == "the baseline is ranked by top1, this run by perplexity"
    assert "90.00 ± 0.00 (n=2)  3.300 ± 0.000 (n=2)" in gate.render(result), "each side shown in its own metric"
