"""Failures and skips read as reasons: a broken method's 36 identical messages become one line naming its cases."""

from __future__ import annotations

from pytest_shrinkbench.results import failures
from tests.helpers import row

SHAPE = "mask of 'features.0.0.weight' has shape (16,), parameter has (16, 1, 3, 3)"


def failed(method: str, ratio: float, seed: int, reason: str, **extra) -> dict:
    label = f"[method={method} suite=digits-cnn ratio=x{ratio:g} seed={seed}] "
    return row(method, ratio, seed, status="failed", suite="digits-cnn", message=label + reason, **extra)


def test_a_method_failing_every_case_for_one_reason_is_one_line() -> None:
    rows = [failed("bad", r, s, SHAPE) for r in (2, 4, 8) for s in (0, 1, 2)] + [row("good", 2, 0, 0.9, suite="digits-cnn")]
    (group,) = failures.group(rows)
    assert (group.suite, group.method, group.reason) == ("digits-cnn", "bad", SHAPE), "the case label is taken off"
    assert group.where == "x2 x4 x8 · seeds 0 1 2"
    assert failures.failure_lines(rows, "digits-cnn") == [f"  bad (x2 x4 x8 · seeds 0 1 2): {SHAPE}"]
    assert failures.failure_lines(rows, "digits-mlp") == []


def test_different_reasons_and_uneven_seeds_stay_apart() -> None:
    rows = [failed("bad", 2, 0, SHAPE), failed("bad", 4, 0, SHAPE), failed("bad", 4, 1, SHAPE),
            failed("bad", 8, 0, "timed out after 20 s (--shrink-timeout)"), failed("worse", 2, 0, "line one\n  line two")]
    groups = failures.group(rows)
    assert [(g.method, g.where, g.reason) for g in groups] == [
        ("bad", "x2 · seed 0; x4 · seeds 0 1", SHAPE),
        ("bad", "x8 · seed 0", "timed out after 20 s (--shrink-timeout)"),
        ("worse", "x2 · seed 0", "line one line two"),  # one line, whatever the message held
    ]


def test_checkpoints_of_a_suite_are_told_apart() -> None:
    rows = [failed("bad", 2, 0, SHAPE, weights="wa"), failed("bad", 2, 0, SHAPE, weights="wb")]
    assert [g.suite for g in failures.group(rows)] == ["digits-cnn [wa]", "digits-cnn [wb]"]


def test_a_skipped_suite_is_one_line_saying_how_to_provide_its_data() -> None:
    reason = "suite cifar10-resnet56: CIFAR-10 not found under /data: no cifar-10-batches-py/ folder; provide it"
    rows = [row(m, r, 0, status="skipped", suite="cifar10-resnet56", message=reason) for m in ("a", "b") for r in (2, 4)]
    rows.append(row("a", 2, 0, 0.9))
    assert failures.skip_lines(rows) == [f"shrinkbench: 4 cases skipped: {reason}"]
    assert failures.skip_lines(rows[:1]) == [f"shrinkbench: 1 case skipped: {reason}"]
