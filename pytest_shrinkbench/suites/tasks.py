"""What a suite's model is trained to do: its loss, its metrics, and the metric that ranks it.

Two tasks: ``classification`` (cross-entropy; top-1/top-5, ranked by top-1) and ``language``
(next-token cross-entropy; ``perplexity`` = exp of the mean token negative log-likelihood over the
test windows, ranked by it, with next-token top-1/top-5 beside it). A language suite's test split is
``(window, next tokens)`` pairs: non-overlapping windows of the context length, tail dropped, a
target of ``IGNORE`` where a window's next token is not scored (the reference protocol scores the
``length - 1`` tokens a window predicts from inside itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

IGNORE = -100  # F.cross_entropy's ignore_index: a position whose next token is not scored


@dataclass(frozen=True)
class Task:
    """A loss for training and the metrics a case reports; ``metric`` is the one that ranks methods."""

    name: str
    metric: str
    loss: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[..., dict[str, float]]  # (model, data, *, device, batch_size) -> {metric: value}
    eval_batch: int  # examples per forward pass when evaluating


def slices(data: Dataset, size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """Consecutive batches of ``size`` in order: slices of tensors, or collated samples."""
    if isinstance(data, TensorDataset):
        return (data[start:start + size] for start in range(0, len(data), size))
    return DataLoader(data, batch_size=size)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, *, device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """Top-1 and top-5 accuracy of ``model`` on ``data`` (eval mode)."""
    model.eval()
    top1 = top5 = total = 0
    for inputs, targets in slices(data, batch_size):
        logits = model(inputs.to(device))
        targets = targets.to(device)
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == targets).sum().item()
        top5 += (best == targets[:, None]).any(dim=1).sum().item()
        total += len(targets)
    return {"top1": top1 / total, "top5": top5 / total}


def token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the scored positions of a batch of windows."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def perplexity(model: nn.Module, data: Dataset, *, device: torch.device, batch_size: int = 8) -> dict[str, float]:
    """Perplexity (exp of the mean token NLL, summed in float64) and next-token top-1/top-5 of ``model`` on
    ``data``'s windows (eval mode)."""
    model.eval()
    nll, top1, top5, tokens = 0.0, 0, 0, 0
    for inputs, targets in slices(data, batch_size):
        logits = model(inputs.to(device)).flatten(0, -2).float()
        targets = targets.to(device).flatten()
        scored = targets != IGNORE
        logits, targets = logits[scored], targets[scored]
        nll += F.cross_entropy(logits, targets, reduction="sum").double().item()
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == targets).sum().item()
        top5 += (best == targets[:, None]).any(dim=1).sum().item()
        tokens += len(targets)
    return {"perplexity": math.exp(nll / tokens), "top1": top1 / tokens, "top5": top5 / tokens}


TASKS = {
    "classification": Task("classification", "top1", F.cross_entropy, accuracy, 512),
    "language": Task("language", "perplexity", token_loss, perplexity, 8),
}
