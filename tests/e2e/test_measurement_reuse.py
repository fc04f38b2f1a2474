"""A session measures each pruned model once: the x1 cases of a suite × seed are fine-tuned once, under -n 2 too,
and every row equals what computing it gives (``--shrink-rerun``), but for its timings and ``shared_from``."""

from __future__ import annotations

import pytest

from pytest_shrinkbench.identity import case_key
from tests.helpers import result_rows

# ShrinkBench's baselines and ours at x1 and x2 on digits-mlp, seed 0: the x1 cases of six one-shot methods and a gradual one.
CLASSIC = "global-gradient,global-magnitude,gradual-magnitude,l1-filter,layer-gradient,layer-magnitude,random"
SLICE = [f"--shrink-method={CLASSIC}", "--shrink-suite=digits-mlp", "--shrink-ratios=1,2", "--shrink-seeds=0", "-p", "no:randomly"]
OWN = {"prune_seconds", "finetune_seconds", "duration", "run", "finished", "mac", "shared_from"}


def test_rows_with_and_without_sharing_are_equal_and_x1_is_fine_tuned_once(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*SLICE, "-n", "2", "--shrink-results=shared")
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(["shrinkbench: 5 cases took the measurements of the same pruned model, measured once*"])
    project.runpytest_subprocess(*SLICE, "-n", "2", "--shrink-results=computed", "--shrink-rerun").assert_outcomes(passed=14)
    shared, computed = ({(r["method"], r["ratio"]): r for r in result_rows(project.path / d)} for d in ("shared", "computed"))
    assert shared.keys() == computed.keys() and len(shared) == 14
    for case, row in shared.items():
        assert {k: v for k, v in row.items() if k not in OWN} == {k: v for k, v in computed[case].items() if k not in OWN}, case
    assert not any(r.get("shared_from") for r in computed.values())

    x1 = [r for (m, ratio), r in shared.items() if ratio == 1 and m != "gradual-magnitude"]
    measured = [r for r in x1 if r.get("shared_from") is None]
    assert len(measured) == 1, "the unpruned model of one suite × seed is fine-tuned once, whichever worker meets it"
    assert all(r["shared_from"] == case_key(measured[0]) and r["finetune_seconds"] == 0.0 for r in x1 if r is not measured[0])
    assert len({r["measurement_key"] for r in x1}) == 1
    assert shared[("gradual-magnitude", 1.0)].get("measurement_key") is None  # gradual: never shared
    assert not any(r.get("shared_from") for (m, ratio), r in shared.items() if ratio == 2)


def test_a_new_methods_x1_case_takes_the_stored_measurements(project: pytest.Pytester) -> None:
    """The store lends measurements to later sessions; --shrink-rerun computes them again, to the same numbers."""
    args = ["--shrink-suite=digits-mlp", "--shrink-ratios=1", "--shrink-seeds=0", "--shrink-store=store.sqlite"]
    project.runpytest_subprocess("--shrink-method=global-magnitude", *args, "--shrink-results=first").assert_outcomes(passed=1)
    project.runpytest_subprocess("--shrink-method=random", *args, "--shrink-results=second").assert_outcomes(passed=1)
    project.runpytest_subprocess("--shrink-method=random", *args, "--shrink-results=third", "--shrink-rerun").assert_outcomes(passed=1)
    (first,), (second,), (third,) = (result_rows(project.path / d) for d in ("first", "second", "third"))
    assert second["shared_from"] == case_key(first) and not second["reused"]
    assert third.get("shared_from") is None
    assert {k: v for k, v in second.items() if k not in OWN} == {k: v for k, v in third.items() if k not in OWN}
