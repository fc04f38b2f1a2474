"""The leaderboard as a reader takes it in: no false winner at x1, ratios as ratios, gradual methods explained."""

from __future__ import annotations

from pytest_shrinkbench.results import leaderboard
from pytest_shrinkbench.results.formats import _html_table
from tests.helpers import row


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
