"""Planted broken methods: each check of what a method returns fires, on its own case only (the cheats: test_red_team.py)."""

from __future__ import annotations

import pytest

from tests.helpers import result_rows, rows_by_method

BROKEN = '''
import os

import torch
import torch.nn.functional as F

from pytest_shrinkbench import method


def magnitude(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("wrong-shape")
def wrong_shape(ctx):
    masks = magnitude(ctx)
    masks["fc1.weight"] = masks["fc1.weight"][:10]
    return masks


@method("float-mask")
def float_mask(ctx):
    masks = magnitude(ctx)
    masks["fc2.weight"] = masks["fc2.weight"].float() * 0.5
    return masks


@method("nan-weights")
def nan_weights(ctx):
    weight = ctx.model.fc3.weight.detach().clone()
    weight[0, :3] = float("nan")
    return magnitude(ctx), {"fc3.weight": weight}


@method("new-weights")
def new_weights(ctx):
    """Honest: returns new values for kept weights (fc1 negated, so predictions change); the harness must apply them."""
    return magnitude(ctx), {"fc1.weight": -ctx.model.fc1.weight.detach()}


@method("raises")
def raises(ctx):
    raise RuntimeError("planted crash")


@method("under-prunes")
def under_prunes(ctx):
    return {n: torch.ones_like(w, dtype=torch.bool) for n, w in ctx.prunable.items()}


@method("returns-none")
def returns_none(ctx):
    return None


@method("returns-list")
def returns_list(ctx):
    return list(magnitude(ctx).values())


@method("unknown-parameter")
def unknown_parameter(ctx):
    return {**magnitude(ctx), "fc9.weight": torch.ones(3, dtype=torch.bool)}


@method("missing-parameter")
def missing_parameter(ctx):
    masks = magnitude(ctx)
    del masks["fc3.weight"]
    return masks


@method("wrong-device")
def wrong_device(ctx):
    masks = magnitude(ctx)
    masks["fc1.weight"] = masks["fc1.weight"].to("meta")
    return masks


@method("over-prunes")
def over_prunes(ctx):
    masks = magnitude(ctx)
    masks["fc2.weight"] = torch.zeros_like(masks["fc2.weight"])
    return masks


@method("edits-in-place")
def edits_in_place(ctx):
    masks = magnitude(ctx)
    with torch.no_grad():
        ctx.model.fc2.weight.mul_(2.0)  # should have been returned as new weights
    return masks


@method("changes-architecture")
def changes_architecture(ctx):
    ctx.model.fc2 = torch.nn.Linear(300, 50)
    ctx.model.fc3 = torch.nn.Linear(50, 10)
    return magnitude(ctx)


@method("memory-hog")
def memory_hog(ctx):
    """Reserves 64 GiB of address space in 1 GiB blocks, untouched: an address-space limit refuses it; under a
    cgroup's memory cap (which counts memory used, not reserved) it gets as far as returning its blocks."""
    return [torch.empty(2**30, dtype=torch.uint8) for _ in range(64)]


@method("exits")
def exits(ctx):
    os._exit(3)
'''

EXPECTED = {
    "returns-none": "method 'returns-none' returned NoneType; expected a dict of masks or (masks, new_weights)",
    "returns-list": "method 'returns-list' returned list",
    "unknown-parameter": "masks for unknown parameters ['fc9.weight']",
    "missing-parameter": "no mask for prunable parameters ['fc3.weight']",
    "wrong-device": "mask of 'fc1.weight' is on meta, parameter is on cpu",
    "over-prunes": "requested compression x4 but the masks achieve x",
    "edits-in-place": "method 'edits-in-place' modified the model in place (fc2.weight); return masks",
    "changes-architecture": "method 'changes-architecture' changed the architecture (added [], removed [], reshaped ['fc2.bias', 'fc2.weight', 'fc3.weight'])",
    # an address-space limit refuses the reservation; a cgroup's memory cap lets it return what is not masks
    "memory-hog": ("method 'memory-hog' raised RuntimeError", "method 'memory-hog' returned list"),
    "exits": "method 'exits''s process ended before it answered: it exited with code 3",
    "wrong-shape": "mask of 'fc1.weight' has shape (10, 64), parameter has (300, 64)",
    "float-mask": "mask of 'fc2.weight' has dtype torch.float32, expected torch.bool",
    "raises": "method 'raises' raised RuntimeError: planted crash",
    "nan-weights": "new weights of 'fc3.weight' contain 3 NaN or infinite entries",
    "under-prunes": "requested compression x4 but the masks achieve x1 (50610 of 50610 parameters non-zero; 12652 expected)",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_each_broken_method_fails_alone(project: pytest.Pytester, workers: list[str]) -> None:
    project.mkdir("methods").joinpath("broken.py").write_text(BROKEN)
    names = ",".join(["global-magnitude", "new-weights", *EXPECTED])
    result = project.runpytest_subprocess(
        f"--shrink-method={names}", "--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0",
        "--shrink-max-memory=8", *workers,
    )
    result.assert_outcomes(passed=2, failed=len(EXPECTED))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = rows_by_method(project.path / "results")
    assert rows.keys() == {"global-magnitude", "new-weights", *EXPECTED}
    assert rows["global-magnitude"]["status"] == rows["new-weights"]["status"] == "passed"
    assert rows["new-weights"]["top1_pre"] != rows["global-magnitude"]["top1_pre"], "returned weights must be used"
    for name, text in EXPECTED.items():
        row = rows[name]
        assert row["status"] == "failed", name
        assert row["message"].startswith(f"[method={name} suite=digits-mlp ratio=x4 seed=0] "), row["message"]
        assert any(t in row["message"] for t in ((text,) if isinstance(text, str) else text)), (name, row["message"])
    # The honest method is ranked; every broken one is shown failed, never ranked.
    result.stdout.fnmatch_lines(["x4*global-magnitude*[*]1*"])
    for name in EXPECTED:
        result.stdout.fnmatch_lines([f"x4*{name}*FAILED 1/1*"])
    assert rows["global-magnitude"]["threads"] == 1, "cases run with the pinned thread count"


SLOW = '''
import time
from pytest_shrinkbench import method


@method("slow")
def slow(ctx):
    time.sleep(0.5)
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_sigterm_keeps_finished_rows_and_prints_a_partial_leaderboard(project: pytest.Pytester, workers: list[str]) -> None:
    import signal
    import subprocess
    import sys
    import time

    project.mkdir("methods").joinpath("slow.py").write_text(SLOW)
    process = project.popen(
        [sys.executable, "-m", "pytest", "--shrink-method=slow", "--shrink-suite=digits-mlp", "--shrink-ratios=2,4",
         "--shrink-seeds=0,1,2,3,4,5,6,7,8,9", *workers],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    results = project.path / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(len(f.read_text().splitlines()) for f in results.glob("*.jsonl")) < 3:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    rows = result_rows(results)
    assert 3 <= len(rows) < 20 and all(r["status"] == "passed" for r in rows)
    assert rows == sorted(rows, key=lambda r: (r["ratio"], r["seed"])), "the file is finalized (sorted) on the way out"
    assert "shrinkbench leaderboard: digits-mlp" in output and f"{len(rows)} results written to" in output
