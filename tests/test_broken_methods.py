"""Planted broken and cheating methods: each invariant check must fire, on its own case only."""

from __future__ import annotations

import json

import pytest

BROKEN = '''
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


@method("revives-in-training")
def revives_in_training(ctx):
    """A forward pre-hook that writes into masked weights, only while fine-tuning (invariant 3)."""
    masks = magnitude(ctx)
    removed = ~masks["fc1.weight"]

    def revive(module, inputs):
        if module.training:
            with torch.no_grad():
                module.weight[removed] = 0.01

    ctx.model.fc1.register_forward_pre_hook(revive)
    return masks


@method("hidden-dense-copy")
def hidden_dense_copy(ctx):
    """A forward hook computing fc1 from a dense copy kept outside the state_dict (invariant 5)."""
    dense = ctx.model.fc1.weight.detach().clone()
    ctx.model.fc1.register_forward_hook(lambda module, inputs, out: F.linear(inputs[0], dense, module.bias))
    return magnitude(ctx)


@method("dense-copy-buffer")
def dense_copy_buffer(ctx):
    """The same cheat with the copy in a registered buffer: the state_dict no longer fits the model."""
    ctx.model.fc2.register_buffer("secret", ctx.model.fc2.weight.detach().clone())
    ctx.model.fc2.register_forward_hook(lambda module, inputs, out: F.linear(inputs[0], module.secret, module.bias))
    return magnitude(ctx)
'''

EXPECTED = {
    "wrong-shape": "mask of 'fc1.weight' has shape (10, 64), parameter has (300, 64)",
    "float-mask": "mask of 'fc2.weight' has dtype torch.float32, expected torch.bool",
    "raises": "method 'raises' raised RuntimeError: planted crash",
    "nan-weights": "new weights of 'fc3.weight' contain 3 NaN or infinite entries",
    "under-prunes": "requested compression x4 but the masks achieve x1 (50610 of 50610 parameters non-zero; 12652 expected)",
    "revives-in-training": "invariant 3 (fine-tuning epoch 1): 'fc1.weight' had",
    "hidden-dense-copy": "invariant 5 (after pruning): a fresh model loaded with the pruned state_dict gives different logits",
    "dense-copy-buffer": "invariant 5 (after pruning): the pruned model's state_dict does not fit a fresh model (missing [], unexpected ['fc2.secret'])",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_each_broken_method_fails_alone(project: pytest.Pytester, workers: list[str]) -> None:
    project.mkdir("methods").joinpath("broken.py").write_text(BROKEN)
    names = ",".join(["global-magnitude", "new-weights", *EXPECTED])
    result = project.runpytest_subprocess(
        f"--shrink-method={names}", "--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0", *workers
    )
    result.assert_outcomes(passed=2, failed=len(EXPECTED))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = {r["method"]: r for f in (project.path / "results").glob("*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    assert rows.keys() == {"global-magnitude", "new-weights", *EXPECTED}
    assert rows["global-magnitude"]["status"] == rows["new-weights"]["status"] == "passed"
    assert rows["new-weights"]["top1_pre"] != rows["global-magnitude"]["top1_pre"], "returned weights must be used"
    for name, text in EXPECTED.items():
        row = rows[name]
        assert row["status"] == "failed", name
        assert row["message"].startswith(f"[method={name} suite=digits-mlp ratio=x4 seed=0] "), row["message"]
        assert text in row["message"], (name, row["message"])
    assert "masked entries non-zero after optimizer steps" in rows["revives-in-training"]["message"]
    # The honest method is ranked; every broken one is shown failed, never ranked.
    result.stdout.fnmatch_lines(["x4*global-magnitude*[*]1*"])
    for name in EXPECTED:
        result.stdout.fnmatch_lines([f"x4*{name}*FAILED 1/1*"])
