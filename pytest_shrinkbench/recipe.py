"""Pinned training recipes: the same fine-tuning for every method is what makes numbers comparable."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule of one training run (base training or per-case fine-tuning)."""

    optimizer: str  # "sgd" or "adam"
    lr: float
    epochs: int
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 0.0

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"unknown optimizer {self.optimizer!r} (expected 'sgd' or 'adam')")

    def digest(self) -> str:
        """A short stable hash recorded with every result, so different recipes never share a row."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
