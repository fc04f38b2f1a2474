"""Gradual (iterative) methods: called several times within the one fine-tuning budget, masks only shrink."""

from __future__ import annotations

import json

import pytest

from pytest_shrinkbench.case import gradual_schedule
from pytest_shrinkbench.errors import CaseFailure


def test_cubic_schedule_reaches_the_ratio_within_the_first_half() -> None:
    compressions, epochs = gradual_schedule(8.0, 4, 8)
    # sparsity s_k = 7/8 * (1 - (1 - k/4)^3): 0.5332, 0.7656, 0.8613, 0.875
    assert [round(c, 3) for c in compressions] == [round(1 / (1 - 0.875 * (1 - (1 - k / 4) ** 3)), 3) for k in (1, 2, 3)] + [8.0]
    assert compressions == sorted(compressions)
    assert epochs == [1, 2, 3]  # after epochs 2, 3 and 4 of 8: the last 4 epochs fine-tune the final masks
    assert gradual_schedule(1.0, 4, 8)[0] == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(CaseFailure, match="needs at least 4 fine-tuning epochs"):
        gradual_schedule(8.0, 4, 3)


GRADUAL = '''
import torch
from pytest_shrinkbench import method

calls = []


@method("regrows", steps=3)
def regrows(ctx):
    # prunes by |w| at step 0, then keeps random weights: revives pruned (zero) ones, which then train
    if ctx.step == 0:
        return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
    return ctx.keep_top({n: torch.rand(w.shape, generator=ctx.generator) for n, w in ctx.prunable.items()})


@method("regrows-declared", steps=3, regrowth=True)
def regrows_declared(ctx):
    return regrows(ctx)


@method("log-steps", steps=3)
def log_steps(ctx):
    with open("steps.log", "a") as f:
        f.write(f"{ctx.step} {ctx.steps} {ctx.compression:.4f}\\n")
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("stops-early", steps=3)
def stops_early(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()}) if ctx.step == 0 else {
        n: w.detach() != 0 for n, w in ctx.prunable.items()}
'''


def test_gradual_methods_end_to_end(project: pytest.Pytester) -> None:
    project.makeconftest(GRADUAL)
    result = project.runpytest_subprocess(
        "--shrink-method=gradual-magnitude,global-magnitude,regrows,regrows-declared,log-steps,stops-early",
        "--shrink-suite=digits-mlp", "--shrink-ratios=8", "--shrink-seeds=0", "--shrink-store=none", "-p", "no:randomly",
    )
    result.assert_outcomes(passed=4, failed=2)
    rows = {r["method"]: r for f in (project.path / "results").glob("*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    gmp = rows["gradual-magnitude"]
    assert gmp["status"] == "passed" and gmp["compression"] == pytest.approx(8, rel=0.005)
    assert gmp["params_nonzero"] == round(50610 / 8) and gmp["top1"] > 0.9
    assert rows["regrows"]["status"] == "failed"
    assert "revived" in rows["regrows"]["message"] and "regrowth=True" in rows["regrows"]["message"]
    assert rows["regrows-declared"]["status"] == "passed"
    assert rows["stops-early"]["status"] == "failed"
    assert "requested compression x" in rows["stops-early"]["message"] and "step 2 of 3" in rows["stops-early"]["message"]
    # The harness called the method 3 times, with rising targets ending at the requested ratio.
    logged = [line.split() for line in (project.path / "steps.log").read_text().splitlines()]
    assert [(int(a), int(b)) for a, b, _ in logged] == [(0, 3), (1, 3), (2, 3)]
    targets = [float(c) for _, _, c in logged]
    assert targets == sorted(targets) and targets[-1] == pytest.approx(8.0)
