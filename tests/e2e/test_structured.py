"""Structured masks: removed output channels, their consumers found by torch.fx, and the FLOPs they save."""

from __future__ import annotations

import pytest

from tests.helpers import result_rows, rows_by_method


@pytest.mark.parametrize("suite", ["digits-cnn"])
def test_structured_accounting_is_recorded_end_to_end(project: pytest.Pytester, suite: str) -> None:
    project.makeconftest(
        "import torch\nfrom pytest_shrinkbench import method\n\n"
        "@method('drop-filters')\n"
        "def drop_filters(ctx):\n"
        "    # remove the first 8 of 16 filters of the first conv, then global magnitude for the rest\n"
        "    scores = {n: w.detach().abs() for n, w in ctx.prunable.items()}\n"
        "    scores['features.0.0.weight'] = scores['features.0.0.weight'].clone()\n"
        "    scores['features.0.0.weight'][:8] = -1.0\n"
        "    return ctx.keep_top(scores)\n"
    )
    result = project.runpytest_subprocess("--shrink-method=drop-filters", f"--shrink-suite={suite}", "--shrink-ratios=2",
                                          "--shrink-seeds=0", "--shrink-store=none", "-p", "no:randomly")
    result.assert_outcomes(passed=1)

    (row,) = result_rows(project.path / "results")
    assert row["flops_accounting"] == "structured"
    assert row["channels_removed"] >= 8


def test_l1_filter_beside_global_magnitude_end_to_end(project: pytest.Pytester) -> None:
    """At equal compression, whole filters buy more theoretical speedup than scattered weights."""

    result = project.runpytest_subprocess("--shrink-method=l1-filter,global-magnitude", "--shrink-suite=digits-cnn",
                                          "--shrink-ratios=4", "--shrink-seeds=0", "--shrink-store=none", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*shrinkbench leaderboard: digits-cnn*", "x4*"])
    rows = rows_by_method(project.path / "results")
    l1, gm = rows["l1-filter"], rows["global-magnitude"]
    assert l1["compression"] == pytest.approx(4, rel=0.005) and l1["flops_accounting"] == "structured"
    assert l1["channels_removed"] > 50
    assert l1["speedup"] > gm["speedup"]
    assert l1["top1"] > 0.5, "fine-tuned, a quarter of the filters still classifies digits"
