"""A dataset decoded once into tensors: whole batches are one gather, on the device, instead of a
Python call per sample per epoch. :mod:`.decoding` decides which datasets may be decoded and does it."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset, default_collate


class Replayed(Protocol):
    """A random transform of the source dataset, replayed on decoded batches: the same draws, the same pixels."""

    def draw(self) -> Any:
        """One sample's random parameters, drawn exactly as the source transform draws them."""

    def apply(self, batch: Tensor, params: Sequence[Any]) -> Tensor:
        """The transform of each sample of ``batch`` (N×C×H×W) with its parameters."""


class Decoded(TensorDataset):
    """Inputs and targets decoded once, and the random transforms (if any) that came before the decoding, replayed.

    Indexing gives what the source dataset gives — a sample for an int, the collated batch for a list
    or slice — with the same draws from the global generator, in the same order.
    """

    def __init__(self, inputs: Tensor, targets: Tensor, replay: Sequence[Replayed] = ()) -> None:
        super().__init__(inputs, targets)
        self.replay = tuple(replay)

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor]:
        inputs, targets = self.tensors[0][index], self.tensors[1][index]
        if not self.replay:
            return inputs, targets
        single = inputs.dim() < self.tensors[0].dim()
        batch = inputs.unsqueeze(0) if single else inputs
        params = [[op.draw() for op in self.replay] for _ in range(len(batch))]  # sample by sample, as the source does
        for k, op in enumerate(self.replay):
            batch = op.apply(batch, [drawn[k] for drawn in params])
        return (batch[0] if single else batch), targets

    def to(self, device: torch.device) -> Decoded:
        return Decoded(self.tensors[0].to(device), self.tensors[1].to(device), self.replay)


def take(data: Dataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """The samples at ``indices``, collated: one gather for tensors, else sample by sample."""
    if isinstance(data, TensorDataset):
        return data[indices]
    return default_collate([data[i] for i in indices])
