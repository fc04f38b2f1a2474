"""Metrics with a direction: one table says which way is better, and every comparison asks it."""

from __future__ import annotations

import pytest

from pytest_shrinkbench import metrics


def test_top1_rises_to_be_better_and_perplexity_falls() -> None:
    assert metrics.direction("top1") == metrics.direction("top5") == "higher"
    assert metrics.direction("perplexity") == "lower"
    assert metrics.better(0.91, 0.90, "top1") and not metrics.better(0.90, 0.91, "top1")
    assert metrics.better(3.28, 3.67, "perplexity") and not metrics.better(3.67, 3.28, "perplexity")
    assert not metrics.better(3.28, 3.28, "perplexity"), "equal is not better"
    best_first = sorted([3.77, 3.28, 3.67], key=lambda v: metrics.order_key(v, "perplexity"))
    assert best_first == [3.28, 3.67, 3.77]
    assert sorted([0.8, 0.9], key=lambda v: metrics.order_key(v, "top1")) == [0.9, 0.8]


def test_a_row_without_a_metric_is_ranked_by_top1_and_only_perplexity_is_drawn_on_a_log_axis() -> None:
    assert metrics.metric(None).name == metrics.DEFAULT == "top1", "rows recorded before metrics had a name"
    assert [m.name for m in metrics.METRICS.values() if m.log_axis] == ["perplexity"]
    assert all(m.doc and m.label for m in metrics.METRICS.values())


def test_a_suites_ranking_metric_is_the_first_it_declares() -> None:
    assert metrics.ranking_metric(("perplexity", "top1")) == "perplexity"
    assert metrics.ranking_metric(("top1", "top5")) == "top1"
    assert metrics.ranking_metric(()) == "top1"
    with pytest.raises(KeyError, match="unknown metric 'bleu'; known: top1, top5, perplexity"):
        metrics.ranking_metric(("perplexity", "bleu"))


def test_a_tolerance_is_points_of_top1_and_percent_of_the_baselines_perplexity() -> None:
    """A 1 pp top-1 drop is 0.01 whatever the baseline; a perplexity change is relative: 5.12 -> 5.2224 is +2%."""
    assert metrics.change(0.90, 0.885, "top1") == pytest.approx(-0.015)
    assert metrics.change(5.12, 5.2224, "perplexity") == pytest.approx(0.02)
    assert metrics.change(10.0, 9.0, "perplexity") == pytest.approx(-0.10)
    assert metrics.spread(0.02, 0.9, "top1") == 0.02 and metrics.spread(0.05, 5.0, "perplexity") == pytest.approx(0.01)
