"""Pinned training recipes: the same fine-tuning for every method is what makes numbers comparable."""

from __future__ import annotations

import hashlib
import json
import math
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

    def schedule_per_step(self) -> bool:
        """Whether :meth:`make_scheduler`'s schedule advances after every optimizer step (else after every epoch)."""
        return False

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
    need be (a language model's base training: 1,100 batches of random windows, a fraction of one epoch), with an
    optional learning-rate schedule per step: ``warmup`` steps of linear warmup, then a cosine decay to ``final_lr``.

    ``steps`` is part of :meth:`digest`, so it never shares a hash with a plain :class:`Recipe`.
    """

    steps: int = 0
    warmup: int = 0  # optimizer steps of linear warmup from 0 to ``lr``
    final_lr: float | None = None  # cosine decay from ``lr`` to this at the last step (None: constant after warmup)

    def step_limit(self) -> int | None:
        return self.steps

    def schedule_per_step(self) -> bool:
        return True

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        if not self.warmup and self.final_lr is None:
            return None
        floor = 1.0 if self.final_lr is None else self.final_lr / self.lr

        def factor(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            progress = (step - self.warmup) / max(1, self.steps - self.warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# One-shot pruning: no fine-tuning at all; the pruned model is the final model and is measured once.
ONE_SHOT = Recipe("sgd", lr=0.0, epochs=0, batch_size=1)
