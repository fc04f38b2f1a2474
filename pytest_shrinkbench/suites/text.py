"""A token stream as a language suite's datasets: random training windows, and the reference protocol's test windows.

The reference protocol (SparseGPT, Wanda) evaluates non-overlapping windows of the context length with the
tail dropped, each window scoring the tokens it predicts from inside itself (``length - 1`` per window).
Every language suite here uses that one definition, so their perplexities are computed alike.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .tasks import IGNORE


class TrainWindows(Dataset):
    """Every window of ``length`` tokens of a training stream, with its next tokens as targets (all scored).

    Item ``i`` is ``(stream[i : i + length], stream[i + 1 : i + length + 1])``: training draws random windows
    (a shuffled order), calibration draws ``count`` of them with the case's seed."""

    def __init__(self, stream: Tensor, length: int) -> None:
        if stream.dim() != 1 or len(stream) <= length:
            raise ValueError(f"a training stream of {tuple(stream.shape)} tokens has no window of {length}")
        self.stream, self.length = stream, length

    def __len__(self) -> int:
        return len(self.stream) - self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        window = self.stream[index:index + self.length + 1]
        return window[:-1], window[1:]


def held_out_windows(stream: Tensor, length: int) -> TensorDataset:
    """Non-overlapping windows of ``length`` tokens, the tail dropped; each scores its ``length - 1`` inner
    predictions (the last position's target is :data:`~.tasks.IGNORE`)."""
    count = len(stream) // length
    if count == 0:
        raise ValueError(f"a test stream of {len(stream)} tokens has no window of {length}")
    inputs = stream[:count * length].view(count, length).clone()
    targets = torch.full_like(inputs, IGNORE)
    targets[:, :-1] = inputs[:, 1:]
    return TensorDataset(inputs, targets)


def sha256_text(text: str) -> str:
    """The corpus's identity as recorded in a row's protocol: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
