"""Gradual (iterative) methods: called several times within the one fine-tuning budget, after scheduled
optimizer steps in its first half; masks only shrink unless the method declares regrowth."""

from __future__ import annotations

import pytest

from pytest_shrinkbench.identity import MEASURE_VERSION
from pytest_shrinkbench.sandbox.methods import load_installed
from tests.helpers import rows_by_method

load_installed()  # registers the baselines


def test_gradual_methods_end_to_end(project: pytest.Pytester) -> None:
    # log-steps writes what it was called with into the project: a walled child could not (no Landlock here)
    project.makeconftest(GRADUAL.replace("STEPS_LOG", str(project.path / "steps.log")))
    result = project.runpytest_subprocess("--shrink-sandbox=process",
        "--shrink-method=gradual-magnitude,global-magnitude,regrows,regrows-declared,log-steps,stops-early,too-many-steps",
        "--shrink-suite=digits-mlp", "--shrink-ratios=8", "--shrink-seeds=0", "--shrink-store=none", "-p", "no:randomly",
    )
    result.assert_outcomes(passed=4, failed=3)
    # Its top-1 (pruned) is measured after the first, mild call: marked, and the mark explained under the table.
    result.stdout.fnmatch_lines(["x8*gradual-magnitude*± * †*", "† gradual method*measured after the first, mild call*"])
    rows = rows_by_method(project.path / "results")
    gmp = rows["gradual-magnitude"]
    assert gmp["status"] == "passed" and gmp["compression"] == pytest.approx(8, rel=0.005)
    assert gmp["params_nonzero"] == round(50610 / 8) and gmp["top1"] > 0.9
    assert gmp["measure_version"] == MEASURE_VERSION
    # 3 calls over 360 optimizer steps: before fine-tuning, after steps 90 and 180
    assert rows["regrows"]["status"] == "failed"
    assert "revived" in rows["regrows"]["message"] and "regrowth=True" in rows["regrows"]["message"]
    assert "(step 2 of 3, after optimizer step 90 of 360)" in rows["regrows"]["message"]
    assert rows["regrows-declared"]["status"] == "passed"
    assert rows["stops-early"]["status"] == "failed"
    assert "requested compression x" in rows["stops-early"]["message"] and "step 2 of 3" in rows["stops-early"]["message"]
    assert rows["too-many-steps"]["status"] == "failed"
    assert "a method of 361 steps needs at least 361 fine-tuning optimizer steps" in rows["too-many-steps"]["message"]
    assert "the suite's recipe has 360" in rows["too-many-steps"]["message"]
    # The harness called the method 3 times, with rising targets ending at the requested ratio.
    logged = [line.split() for line in (project.path / "steps.log").read_text().splitlines()]
    assert [(int(a), int(b)) for a, b, _ in logged] == [(0, 3), (1, 3), (2, 3)]
    targets = [float(c) for _, _, c in logged]
    assert targets == sorted(targets) and targets[-1] == pytest.approx(8.0)


GRADUAL = '''
import torch
from pytest_shrinkbench import method


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
    with open("STEPS_LOG", "a") as f:
        f.write(f"{ctx.step} {ctx.steps} {ctx.compression:.4f}\\n")
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("stops-early", steps=3)
def stops_early(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()}) if ctx.step == 0 else {
        n: w.detach() != 0 for n, w in ctx.prunable.items()}


@method("too-many-steps", steps=361)
def too_many_steps(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''
