"""PruneContext helpers a method builds on: activations and the seeded batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_shrinkbench import PruneContext


def test_activations_are_per_module_outputs_and_leave_no_trace() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).train()
    inputs = torch.randn(4, 6)
    ctx = PruneContext(model, 2.0, inputs, torch.tensor([0, 1, 2, 0]))
    outputs = ctx.activations()
    assert list(outputs) == ["0", "1", "2"]
    assert torch.equal(outputs["0"], model[0](inputs))
    assert torch.equal(outputs["1"], outputs["0"].relu())
    assert torch.equal(outputs["2"], model(inputs))
    assert model.training, "the model's mode is restored"
    assert not any(m._forward_hooks for m in model.modules()), "the recording hooks are removed"


def test_generator_is_seeded_by_the_case() -> None:
    model = nn.Linear(4, 2)
    draw = lambda seed: torch.rand(5, generator=PruneContext(model, 2.0, torch.zeros(1, 4), torch.zeros(1), seed=seed).generator)
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


def test_advance_moves_to_the_next_step_and_drops_cached_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ctx = PruneContext(model, 2.0, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), steps=2)
    first = ctx.gradients()
    assert ctx.gradients() is first, "cached within a step"
    with torch.no_grad():
        model.weight.mul_(0.5)
    ctx.advance(4.0)
    assert (ctx.step, ctx.compression) == (1, 4.0)
    again = ctx.gradients()
    assert again is not first and not torch.equal(again["weight"], first["weight"]), "recomputed on the new weights"
    with pytest.raises(ValueError, match="step 1 is the last of 2"):
        ctx.advance(8.0)
