"""Gradual (iterative) methods: called several times within the one fine-tuning budget, after scheduled
optimizer steps in its first half; masks only shrink unless the method declares regrowth."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import TensorDataset

from pytest_shrinkbench import CaseSpec, load_subject, method, run_case
from pytest_shrinkbench.errors import CaseFailure
from pytest_shrinkbench.run.gradual import gradual_schedule
from pytest_shrinkbench.sandbox.methods import METHODS, load_installed
from pytest_shrinkbench.sandbox.runner import Sandbox
from pytest_shrinkbench.suites.recipe import Recipe
from pytest_shrinkbench.suites.training import fit, optimizer_steps

load_installed()  # registers the baselines


def test_cubic_schedule_reaches_the_ratio_within_the_first_half() -> None:
    compressions, after = gradual_schedule(8.0, 4, 360)
    # sparsity s_k = 7/8 * (1 - (1 - k/4)^3): 0.5332, 0.7656, 0.8613, 0.875
    assert [round(c, 3) for c in compressions] == [round(1 / (1 - 0.875 * (1 - (1 - k / 4) ** 3)), 3) for k in (1, 2, 3)] + [8.0]
    assert compressions == sorted(compressions)
    assert after == [59, 119, 179]  # every 60 steps: the last 180 of 360 fine-tune the final masks
    assert gradual_schedule(1.0, 4, 360)[0] == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("steps", [2, 3, 4, 7])
@pytest.mark.parametrize("extra", [0, 1, 2, 5, 13, 300])
def test_schedule_steps_increase_and_leave_training_after_the_last_call(steps: int, extra: int) -> None:
    total = steps + extra
    after = gradual_schedule(8.0, steps, total)[1]
    assert len(after) == steps - 1 and after[0] >= 0
    assert all(a < b for a, b in zip(after, after[1:])), after
    assert after[-1] <= total - 2, "at least one optimizer step follows the last call"
    if total // 2 >= steps - 1:
        assert after[-1] == total // 2 - 1, "the last call ends the first half"


def test_too_few_optimizer_steps_fail_clearly() -> None:
    assert gradual_schedule(8.0, 4, 4)[1] == [0, 1, 2]
    with pytest.raises(CaseFailure, match=r"a method of 4 steps needs at least 4 fine-tuning optimizer steps .* has 3"):
        gradual_schedule(8.0, 4, 3)


def test_fit_calls_on_step_after_each_optimizer_step() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    data = TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10,)))
    recipe = Recipe("adam", lr=1e-2, epochs=2, batch_size=4)
    events: list[tuple[str, int]] = []
    optimizers: list[torch.optim.Optimizer] = []

    def on_step(index: int) -> None:
        # Adam counts its steps: after step ``index`` has run, it has made index + 1 of them
        events.append(("step", index, int(optimizers[0].state[model.weight]["step"])))

    fit(model, data, recipe, seed=0, device=torch.device("cpu"), on_optimizer=optimizers.append, on_step=on_step,
        on_epoch_end=lambda epoch: events.append(("epoch", epoch)))
    assert optimizer_steps(data, recipe, model) == 6  # 2 epochs x 3 batches (the last one short)
    assert events == [("step", 0, 1), ("step", 1, 2), ("step", 2, 3), ("epoch", 0),
                      ("step", 3, 4), ("step", 4, 5), ("step", 5, 6), ("epoch", 1)]


def test_method_is_called_after_the_scheduled_steps_without_disturbing_training(shrink_cache: Path) -> None:
    """Called 4 times, after optimizer steps 60, 120 and 180 of 360, with rising targets and the weights
    fine-tuning made; a method that runs its own backward pass and leaves its model in eval mode disturbs
    nothing. (In-process, so the test sees the calls: in a child it would be the same code.)"""
    subject = load_subject("digits-cnn", cache_dir=shrink_cache)
    taken = [0]
    calls: list[dict] = []

    def record(ctx):
        grads = ctx.gradients()
        calls.append(dict(step=ctx.step, steps=ctx.steps, compression=ctx.compression, training=ctx.model.training,
                          after=taken[0], grad=float(sum(g.abs().sum() for g in grads.values()))))
        ctx.model.eval()
        nn.functional.cross_entropy(ctx.model(ctx.inputs), ctx.targets).backward()  # leaves .grad behind
        return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})

    def count(optimizer, args, kwargs) -> None:
        taken[0] += 1

    method("test-records-calls", steps=4)(record)
    handle = register_optimizer_step_post_hook(count)
    sandbox = Sandbox("in-process")
    sandbox.discover([])
    try:
        row = run_case(CaseSpec("test-records-calls", "digits-cnn", 8.0, 0), subject, sandbox=sandbox)
    finally:
        handle.remove()
        METHODS.retain(lambda m: m.name != "test-records-calls")
    assert [(c["step"], c["steps"], c["after"]) for c in calls] == [(0, 4, 0), (1, 4, 60), (2, 4, 120), (3, 4, 180)]
    assert [c["compression"] for c in calls] == pytest.approx(gradual_schedule(8.0, 4, 360)[0])
    assert all(c["training"] for c in calls), "every call sees the model in training mode"
    assert len({c["grad"] for c in calls}) == 4, "gradients are recomputed at every call, not cached from the first"
    assert taken[0] == 360, "fine-tuning ran all its steps"
    assert row["compression"] == pytest.approx(8.0, rel=0.005) and row["top1"] > 0.9


