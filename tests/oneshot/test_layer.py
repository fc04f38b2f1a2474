"""One layer's one-shot mathematics, checked on cases small enough to work out by hand."""

from __future__ import annotations

import pytest
import torch

from pytest_shrinkbench.oneshot import Inputs, keep_per_row, sparsegpt, wanda_scores


def test_inputs_gather_squared_norms_and_the_hessian() -> None:
    inputs = Inputs(2, hessian=True)
    inputs.add(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    inputs.add(torch.tensor([[[0.0, 2.0]]]))  # any leading dimensions: (batch, tokens, features)
    assert inputs.tokens == 3
    assert inputs.norms().tolist() == pytest.approx([10 ** 0.5, 8 ** 0.5])
    assert torch.allclose(inputs.hessian(), torch.tensor([[10 / 3, 2 / 3], [2 / 3, 8 / 3]]))


def test_wanda_scores_weigh_magnitudes_by_their_inputs_norms() -> None:
    inputs = Inputs(3)
    inputs.add(torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]]))  # ‖X_j‖ = 5, 0, 1
    weight = torch.tensor([[1.0, -9.0, 2.0], [-0.5, 1.0, -4.0]])
    assert wanda_scores(weight, inputs).tolist() == [[5.0, 0.0, 2.0], [2.5, 0.0, 4.0]]


def test_keep_per_row_keeps_each_rows_best_and_exactly_n_of_every_m() -> None:
    scores = torch.tensor([[1.0, 5.0, 3.0, 2.0, 9.0, 0.0, 4.0, 8.0], [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    rows = keep_per_row(scores, 0.25)
    assert rows.tolist() == [[False, False, False, False, True, False, False, True], [True, True] + [False] * 6]
    two_of_four = keep_per_row(scores, 0.5, (2, 4))
    assert two_of_four.tolist() == [[False, True, True, False, True, False, False, True],
                                    [True, True, False, False, True, True, False, False]]
    assert (two_of_four.view(2, 2, 4).sum(dim=2) == 2).all()
    assert keep_per_row(torch.rand(3, 6), 0.5, (2, 4)).all()  # 6 inputs: no whole groups of 4, left dense


def test_sparsegpt_with_uncorrelated_inputs_is_magnitude_pruning_per_block() -> None:
    # H = I: [H⁻¹]_jj is the same for every j and its off-diagonal is zero, so the scores are w² and no
    # kept weight moves: within each block of 4 columns, the smallest half of the weights goes.
    weight = torch.tensor([[4.0, -1.0, 3.0, 2.0, 0.5, -6.0, 1.5, 7.0], [-2.0, 8.0, 0.1, 5.0, 3.0, 2.0, -1.0, 0.2]])
    mask, new = sparsegpt(weight, torch.eye(8), 0.5, block=4)
    expected = torch.zeros_like(mask)
    for start in (0, 4):
        block = weight[:, start:start + 4].abs()
        expected[:, start:start + 4] = block > block.flatten().kthvalue(4).values
    assert mask.tolist() == expected.tolist()
    assert torch.equal(new, weight * mask)


def test_sparsegpt_reconstructs_a_layers_output_better_than_masking_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(16, 16, generator=generator)
    x = torch.randn(512, 16, generator=generator) @ mixing  # correlated inputs: where the update pays
    weight = torch.randn(8, 16, generator=generator)
    inputs = Inputs(16, hessian=True)
    inputs.add(x)
    mask, new = sparsegpt(weight, inputs.hessian(), 0.5)
    assert int(mask.sum()) == 64 and torch.equal(new[~mask], torch.zeros(64))

    def error(w: torch.Tensor) -> float:
        return float((x @ weight.T - x @ w.T).norm())

    magnitude = keep_per_row(weight.abs(), 0.5)
    assert error(new) < error(weight * mask)  # the same mask, without the update
    assert error(new) < error(weight * magnitude)  # magnitude's own mask


def test_sparsegpt_2of4_keeps_exactly_two_of_every_four_and_prunes_dead_inputs_first() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=generator)
    x[:, 2] = 0.0  # an input never seen: H_22 = 0
    inputs = Inputs(8, hessian=True)
    inputs.add(x)
    weight = torch.randn(6, 8, generator=generator) + 10.0  # input 2's weights are among the largest
    mask, new = sparsegpt(weight, inputs.hessian(), 0.5, (2, 4))
    assert (mask.view(6, 2, 4).sum(dim=2) == 2).all()
    assert not mask[:, 2].any() and (new[:, 2] == 0).all()
    assert torch.equal(new[~mask], torch.zeros(24))


def test_sparsegpt_keeping_everything_changes_nothing() -> None:
    inputs = Inputs(4, hessian=True)
    inputs.add(torch.randn(32, 4, generator=torch.Generator().manual_seed(2)))
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(3))
    mask, new = sparsegpt(weight, inputs.hessian(), 1.0)
    assert mask.all() and torch.allclose(new, weight)
