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

    optimizer: str  # "sgd", "adam" or "adamw" (decoupled weight decay)
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
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"unknown optimizer {self.optimizer!r} (expected 'sgd', 'adam' or 'adamw')")

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A per-epoch learning-rate schedule, or None for a constant rate."""
        return None

    def step_limit(self) -> int | None:
        """The most optimizer steps a run takes (None: every batch of every epoch)."""
        return None

    def digest(self) -> str:
        """A short stable hash recorded with every result, so different recipes never share a row."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ScheduledRecipe(Recipe):
    """A recipe with Nesterov momentum and a step schedule: the learning rate is multiplied by
    ``gamma`` at the start of each epoch listed in ``milestones`` (``torch.optim.lr_scheduler.MultiStepLR``).

    Its extra fields are part of :meth:`digest`, so it never shares a hash with a plain :class:`Recipe`.
    """

    nesterov: bool = False
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov
            )
        return super().make_optimizer(params)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        if not self.milestones:
            return None
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(self.milestones), gamma=self.gamma)


@dataclass(frozen=True)
class StepRecipe(Recipe):
    """A recipe pinned in optimizer steps rather than epochs: training stops after ``steps`` batches, mid-epoch if
    need be (a language model's base training: 1,100 batches of random windows, a fraction of one epoch).

    ``steps`` is part of :meth:`digest`, so it never shares a hash with a plain :class:`Recipe`.
    """

    steps: int = 0

    def step_limit(self) -> int | None:
        return self.steps


# One-shot pruning: no fine-tuning at all; the pruned model is the final model and is measured once.
ONE_SHOT = Recipe("sgd", lr=0.0, epochs=0, batch_size=1)
