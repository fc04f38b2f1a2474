"""The training loop: batches by index over tensors follow exactly the per-sample DataLoader's order."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from pytest_shrinkbench.suites.recipe import Recipe
from pytest_shrinkbench.suites.training import evaluate, fit, optimizer_steps, recipe_hash

CPU = torch.device("cpu")


class PerSample(Dataset):
    """The same tensors behind a plain map-style dataset: the DataLoader fetches and collates sample by sample."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]


class Recorder(nn.Module):
    """A linear model that remembers which samples (their first feature is their index) each step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x[:, 0].long().tolist())
        return self.linear(x)


def test_batches_by_index_follow_the_per_sample_order_in_every_epoch() -> None:
    count = 23  # batches of 5: the last one short
    features = torch.cat([torch.arange(count, dtype=torch.float32)[:, None], torch.randn(count, 2)], dim=1)
    tensors = TensorDataset(features, torch.arange(count) % 4)
    recipe = Recipe("sgd", lr=0.1, epochs=3, batch_size=5)
    runs = []
    for data in (tensors, PerSample(tensors)):
        torch.manual_seed(0)
        model = Recorder()
        fit(model, data, recipe, seed=11, device=CPU)
        runs.append((model.seen, model.state_dict()))
    (order, state), (expected, expected_state) = runs
    assert order == expected and len(order) == optimizer_steps(tensors, recipe, model) == 15
    assert sorted(i for batch in order[:5] for i in batch) == list(range(count)), "each epoch sees every sample once"
    assert order[:5] != order[5:10], "and reshuffles"
    assert all(torch.equal(state[k], expected_state[k]) for k in state)


def test_evaluation_by_slices_counts_like_the_per_sample_loader() -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = TensorDataset(torch.randn(1100, 3, generator=generator), torch.randint(0, 4, (1100,), generator=generator))
    model = nn.Linear(3, 4)
    assert evaluate(model, tensors, device=CPU) == evaluate(model, PerSample(tensors), device=CPU)


def test_a_last_batch_of_one_is_dropped_only_for_batch_norm_and_recorded_in_the_recipe_hash() -> None:
    """33 examples in batches of 32 leave one: training-mode batch norm cannot normalise it (it used to crash)."""
    data = TensorDataset(torch.randn(33, 4), torch.randint(0, 3, (33,)))
    recipe = Recipe("sgd", lr=0.1, epochs=2, batch_size=32)
    with_norm = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    fit(with_norm, data, recipe, seed=0, device=CPU)  # no "Expected more than 1 value per channel"
    assert optimizer_steps(data, recipe, with_norm) == 2 and optimizer_steps(data, recipe, plain) == 4
    assert recipe_hash(recipe, plain, data) == recipe.digest(), "where nothing is dropped the hash is the recipe's"
    assert recipe_hash(recipe, with_norm, data) != recipe.digest()
    even = TensorDataset(torch.randn(34, 4), torch.randint(0, 3, (34,)))
    assert recipe_hash(recipe, with_norm, even) == recipe.digest() and optimizer_steps(even, recipe, with_norm) == 4
