"""The walk over a model's blocks: layers pruned in order, each seeing what the pruned layers before it produce."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_shrinkbench.oneshot import keep_fraction, keep_per_row, prune_in_order, wanda_scores
from pytest_shrinkbench.sandbox.context import PruneContext


class Toy(nn.Module):
    """Two blocks of one bias-free linear each, and a head outside the blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)])
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.blocks[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
            self.blocks[1].weight.copy_(torch.tensor([[1.45, 1.0], [2.0, -1.0]]))
            self.head.weight.copy_(torch.tensor([[2.0, -1.0], [1.0, 3.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def context(model: nn.Module, calibration: torch.Tensor | None, features: int = 2) -> PruneContext:
    return PruneContext(model, 2.0, torch.zeros(1, features), torch.zeros(1), calibration=calibration, basis="prunable")


def wanda_rule(ctx: PruneContext):
    keep = keep_fraction(ctx)
    return lambda weight, inputs: (keep_per_row(wanda_scores(weight, inputs), keep), None)


def test_wanda_on_a_two_layer_toy_scores_the_second_layer_by_the_pruned_first_layers_outputs() -> None:
    model = Toy()
    ctx = context(model, torch.eye(2))  # two calibration "tokens": ‖X_j‖ = 1 for both inputs of the first layer
    masks, weights = prune_in_order(ctx, wanda_rule(ctx))
    # first layer: scores |W| → rows keep [_, 2] and [3, _]; its pruned outputs on the calibration are
    # [[0, 3], [2, 0]]: the second layer's input norms are (2, 3), so its scores are [[2.9, 3], [4, 3]].
    # (Dense outputs [[1, 3], [2, -1]] would give norms (√5, √10) and scores [[3.24, 3.16], ...]: row 0 would
    # keep its first weight instead.)
    assert masks["blocks.0.weight"].tolist() == [[False, True], [True, False]]
    assert masks["blocks.1.weight"].tolist() == [[False, True], [True, False]]
    # the head, outside the blocks, last: its inputs are the pruned blocks' outputs [[3, 0], [0, 4]] → norms (3, 4),
    # scores [[6, 4], [3, 12]]
    assert masks["head.weight"].tolist() == [[True, False], [False, True]]
    assert torch.equal(weights["blocks.0.weight"], torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    assert torch.equal(model.blocks[0].weight, torch.tensor([[1.0, 2.0], [3.0, -1.0]]))  # the context's model untouched


def test_a_model_without_blocks_is_one_block() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    ctx = context(model, torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), features=4)
    masks, _ = prune_in_order(ctx, wanda_rule(ctx))
    assert set(masks) == {"0.weight", "2.weight"}
    assert [int(m.sum()) for m in masks.values()] == [6, 3]


def test_the_walk_needs_calibration_windows() -> None:
    ctx = context(Toy(), None)
    with pytest.raises(ValueError, match="needs calibration windows"):
        prune_in_order(ctx, wanda_rule(ctx))
