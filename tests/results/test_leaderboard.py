"""The leaderboard as a reader takes it in: no false winner at x1, ratios as ratios, gradual methods explained."""

from __future__ import annotations

import pytest

from pytest_shrinkbench.identity import protocol_hash
from pytest_shrinkbench.results import leaderboard
from pytest_shrinkbench.results.formats import _html_table
from tests.helpers import PROTOCOL, lm_row, row


def test_at_x1_every_method_ties_and_none_is_starred_or_bolded() -> None:
    """At x1 every method is the unpruned model: a star (and the HTML's bold row) would crown one by name order."""
    rows = [row(m, r, s, 0.97 if r == 1 else top1) for m, top1 in (("a", 0.95), ("b", 0.93)) for r in (1, 4) for s in (0, 1)]
    entries = leaderboard.aggregate(rows)
    status = {(e.ratio, e.method): e.status for e in entries}
    assert status == {(1.0, "a"): "tied", (1.0, "b"): "tied", (4.0, "a"): "*1", (4.0, "b"): "2"}
    assert [e.rank for e in entries if e.ratio == 1] == [1, 1], "the rank itself stays: both are first"
    headers, cells = leaderboard.table(entries)
    page = _html_table(headers, cells, [e.status for e in entries], 2)
    assert page.count("class=\"best\"") == 1, "only x4's winner is bold"
    assert any(note.startswith("tied:") for note in leaderboard.footnotes(entries))
    rendered = leaderboard.render(entries)["digits-mlp"]
    assert "*1" in rendered.splitlines()[2 + 2], "x4's best is starred"  # header, rule, x1 a, x1 b, x4 a
    assert "*1" not in "".join(rendered.splitlines()[2:4])


def test_one_method_alone_or_a_real_tie_for_first_keeps_its_star() -> None:
    alone = leaderboard.aggregate([row("a", 1, 0, 0.97)])
    assert alone[0].status == "*1"
    shared = leaderboard.aggregate([row(m, 4, 0, t) for m, t in (("a", 0.9), ("b", 0.9), ("c", 0.8))])
    assert [e.status for e in shared] == ["*1", "*1", "3"], "two co-best of three are both best, not 'tied'"


def test_achieved_compression_reads_as_the_ratio_to_one_decimal() -> None:
    """31.99 is x32 within the harness's 0.5% check: it reads x32.0, and a spread only shows when it is visible."""
    assert leaderboard.compression_text([31.99, 31.99, 31.995]) == "x32.0"
    assert leaderboard.compression_text([7.9, 8.3]) == "x8.1 ± 0.3"
    assert leaderboard.compression_text([]) == "-"
    entry = leaderboard.aggregate([row("a", 32, s, 0.9, compression=31.99) for s in (0, 1)])[0]
    assert leaderboard.table([entry])[1][0][5] == "x32.0"


def test_a_gradual_methods_pruned_top1_is_marked_and_explained() -> None:
    """A gradual method's top-1 (pruned) is after its first, mild call: above its fine-tuned top-1, it needs a word."""
    rows = [row("gradual", 32, 0, 0.915, top1_pre=0.972, prune_steps=4), row("one-shot", 32, 0, 0.93, prune_steps=1),
            row("old-row", 32, 0, 0.92)]  # rows stored before prune_steps existed: no mark
    entries = {e.method: e for e in leaderboard.aggregate(rows)}
    headers, cells = leaderboard.table(list(entries.values()))
    pruned = {line[1]: line[headers.index("top-1 (pruned)")] for line in cells}
    assert pruned == {"gradual": "0.972 ± 0.000 †", "one-shot": "0.830 ± 0.000", "old-row": "0.820 ± 0.000"}
    assert leaderboard.footnotes(list(entries.values())) == [leaderboard.GRADUAL_NOTE]
    assert "after the first, mild call" in leaderboard.GRADUAL_NOTE
    assert leaderboard.footnotes([entries["one-shot"]]) == []


# -- metrics with a direction, the compression basis, the protocol (language models) --------------

PAPER = {"sparsegpt": 3.28, "wanda": 3.67, "row-magnitude": 3.77}  # pydoc-lm at 50%, as measured for issue 24


def test_a_language_model_is_ranked_by_perplexity_lowest_first() -> None:
    rows = [lm_row(m, 2, s, p + 0.01 * s) for m, p in PAPER.items() for s in (0, 1)]
    entries = leaderboard.aggregate(rows)
    assert [(e.method, e.status) for e in entries] == [("sparsegpt", "*1"), ("wanda", "2"), ("row-magnitude", "3")]
    headers, cells = leaderboard.table(entries)
    assert headers == ["ratio", "method", "rank", "perplexity (final)", "perplexity (pruned)", "top-1 (final)",
                       "compression (prunable)", "compression (model)", "speedup", "seeds"]
    assert cells[0][3] == "3.285 ± 0.007" and cells[0][6:8] == ["x2.0", "x1.7"], "x2 of the prunable weights is x1.7 of the model"
    summary = leaderboard.summarize(entries)
    assert [(s.method, s.status) for s in summary] == [("sparsegpt", "*1"), ("wanda", "2"), ("row-magnitude", "3")]
    assert "mean perplexity over log2 compression (area)" in leaderboard.render_summary(summary)[entries[0].suite]


def test_the_area_summary_of_perplexity_ranks_the_lowest_mean_over_the_range_first() -> None:
    """Over x2 and x4, 'steady' averages 4.0 and 'collapsing' 6.0 although it is best at x2: steady wins."""
    rows = [lm_row("steady", 2, 0, 3.5), lm_row("steady", 4, 0, 4.5), lm_row("collapsing", 2, 0, 3.4), lm_row("collapsing", 4, 0, 8.6)]
    summary = {s.method: s for s in leaderboard.summarize(leaderboard.aggregate(rows))}
    assert summary["steady"].auc == [pytest.approx(4.0)] and summary["collapsing"].auc == [pytest.approx(6.0)]
    assert (summary["steady"].status, summary["collapsing"].status) == ("*1", "2")


def test_a_language_models_leaderboard_says_its_metric_basis_and_protocol_above_the_table() -> None:
    entries = leaderboard.aggregate([lm_row("wanda", 2, 0, 3.67)])
    suite = entries[0].suite
    assert suite == f"pydoc-lm [protocol {protocol_hash(PROTOCOL)}]"
    ranked, basis, protocol = leaderboard.heading(entries)
    assert ranked == "ranked by perplexity, lower is better"
    assert basis.startswith("compression basis: the prunable weights (ratio = prunable weights ÷ their non-zero count")
    assert protocol.startswith(f"protocol {protocol_hash(PROTOCOL)}: calibration_count 128 · ")
    assert "context_length 128" in protocol and "corpus_sha256 c0ffee555555… ·" in protocol and "exclude lm_head" in protocol


def test_two_protocols_are_two_leaderboards_never_one() -> None:
    """Two runs that differ only in context length: each its own leaderboard, ranked on its own, its protocol shown."""
    longer = {**PROTOCOL, "context_length": 256}
    rows = [lm_row("wanda", 2, 0, 3.67), lm_row("sparsegpt", 2, 0, 3.28), lm_row("wanda", 2, 0, 3.50, protocol=longer)]
    boards = {e.suite: e for e in leaderboard.aggregate(rows) if e.method == "wanda"}
    assert len(boards) == 2
    by_context = {e.protocol["context_length"]: e for e in boards.values()}
    assert by_context[128].score == [3.67] and by_context[256].score == [3.50], "never averaged together"
    assert (by_context[128].status, by_context[256].status) == ("2", "*1"), "each ranked within its own protocol"
    assert set(leaderboard.render(leaderboard.aggregate(rows))) == set(boards)


def test_rows_recorded_before_metrics_had_a_name_read_exactly_as_before() -> None:
    """A CNN row has no metric, basis or protocol field: its leaderboard is the one it always was, with nothing above it."""
    old = [row(m, r, s, 0.95 - 0.01 * i * r) for i, m in enumerate(("a", "b")) for r in (2, 4) for s in (0, 1)]
    assert not any(key in r for r in old for key in ("metric", "compression_basis", "protocol", "protocol_hash"))
    explicit = [{**r, "metric": "top1", "compression_basis": "model", "protocol": None, "protocol_hash": None} for r in old]
    entries = leaderboard.aggregate(old)
    assert leaderboard.render(entries) == leaderboard.render(leaderboard.aggregate(explicit))
    assert leaderboard.heading(entries) == [] and [e.suite for e in entries] == ["digits-mlp"] * 4
    assert leaderboard.table(entries)[0] == ["ratio", "method", "rank", "top-1 (fine-tuned)", "top-1 (pruned)", "compression", "speedup", "seeds"]
    assert [e.status for e in entries] == ["*1", "2", "*1", "2"], "highest top-1 first"


def test_a_case_that_failed_before_it_was_measured_is_shown_on_its_suites_terms() -> None:
    """A failed row may carry only its case and protocol: its board still ranks by perplexity, lowest first; a passed
    row without a perplexity is not ranked on a guess."""
    failed = {k: v for k, v in lm_row("broken", 2, 0, status="failed").items() if k not in ("metric", "compression_basis", "protocol")}
    rows = [failed, lm_row("wanda", 2, 0, 3.67), lm_row("sparsegpt", 2, 0, 3.28), {**lm_row("unmeasured", 2, 0, 3.0), "perplexity": None}]
    entries = {e.method: e for e in leaderboard.aggregate(rows)}
    assert len({e.suite for e in entries.values()}) == 1
    assert {m: e.status for m, e in entries.items()} == {"sparsegpt": "*1", "wanda": "2", "broken": "FAILED 1/1",
                                                         "unmeasured": "no perplexity"}
    assert all(e.metric == "perplexity" and e.basis == "prunable" and e.protocol == PROTOCOL for e in entries.values())
    summary = {s.method: s.status for s in leaderboard.summarize(list(entries.values()))}
    assert summary == {"sparsegpt": "*1", "wanda": "2", "broken": "FAILED (1 case)", "unmeasured": "incomplete (no x2)"}
