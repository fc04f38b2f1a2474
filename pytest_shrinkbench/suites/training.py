"""The one training loop (base models and fine-tuning) and evaluation."""

from __future__ import annotations

import hashlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset

from .recipe import Recipe
from .tasks import Task, accuracy


def fit(
    model: nn.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> None:
    """Train ``model`` in place with ``recipe`` and ``loss`` (the suite's task's); the seed fixes the data order.

    ``on_optimizer`` lets the harness attach its step hooks to the fresh optimizer, and
    ``on_epoch_end`` lets it check invariants without a per-step synchronisation. ``on_step(i)`` runs
    after optimizer step ``i`` (0 .. :func:`optimizer_steps` - 1, counted across epochs) has returned,
    outside the optimizer's own hooks, so it may swap them (a gradual method's mask change); the
    gradients are zeroed before every backward, so whatever it leaves in ``.grad`` is never applied.
    A recipe with a step limit (:class:`~.recipe.StepRecipe`) stops after that many steps, mid-epoch if need be
    (that epoch still ends: its scheduler step and ``on_epoch_end`` run).
    """
    optimizer = recipe.make_optimizer(model.parameters())
    scheduler = recipe.make_scheduler(optimizer)
    if on_optimizer is not None:
        on_optimizer(optimizer)
    loader = _loader(data, recipe, seed, drops_single_batch(model, data, recipe))
    step, limit = 0, optimizer_steps(data, recipe, model)
    per_step = recipe.schedule_per_step()
    model.train()
    for epoch in range(recipe.epochs):
        if step == limit:
            break
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss(model(inputs), targets).backward()
            optimizer.step()
            if scheduler is not None and per_step:
                scheduler.step()
            if on_step is not None:
                on_step(step)
            step += 1
            if step == limit:
                break
        if scheduler is not None and not per_step:
            scheduler.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch)


def optimizer_steps(data: Dataset, recipe: Recipe, model: nn.Module) -> int:
    """How many optimizer steps :func:`fit` takes on ``data`` with ``recipe`` for ``model``: epochs × batches per
    epoch, or the recipe's step limit if that comes first (0: a one-shot suite, whose pruned model is its final model)."""
    steps = recipe.epochs * len(_loader(data, recipe, 0, drops_single_batch(model, data, recipe))) if recipe.epochs else 0
    limit = recipe.step_limit()
    return steps if limit is None else min(steps, limit)


def drops_single_batch(model: nn.Module, data: Dataset, recipe: Recipe) -> bool:
    """Whether training drops a last batch of one example: only where the model has batch norm, which cannot
    normalise a single example in training mode (a crash). Everywhere else the last batch is kept, even if short."""
    return len(data) % recipe.batch_size == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recipe_hash(recipe: Recipe, model: nn.Module, data: Dataset) -> str:
    """The hash a row records for training ``model`` on ``data`` with ``recipe``: the recipe's own, except where
    :func:`drops_single_batch` changes what it does (then the rule is part of the hash)."""
    if not drops_single_batch(model, data, recipe):
        return recipe.digest()
    return hashlib.sha256(f"{recipe.digest()}+drop-last-batch-of-one".encode()).hexdigest()[:12]


def _loader(data: Dataset, recipe: Recipe, seed: int, drop_single: bool) -> DataLoader:
    """The training batches: shuffled by ``seed``, the last batch kept even if short unless ``drop_single`` drops a
    last batch of one (one definition, so :func:`optimizer_steps` always agrees with :func:`fit`).

    Tensors (decoded datasets) are indexed a whole batch at a time. The order is the same either way:
    ``shuffle=True`` is this very ``BatchSampler(RandomSampler(data, generator))``, and the loader draws
    its base seed from the same generator at the start of every epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    if isinstance(data, TensorDataset):
        batches = BatchSampler(RandomSampler(data, generator=generator), recipe.batch_size, drop_last=drop_single)
        return DataLoader(data, batch_size=None, sampler=batches, generator=generator)
    return DataLoader(data, batch_size=recipe.batch_size, shuffle=True, generator=generator, drop_last=drop_single)


def evaluate(model: nn.Module, data: Dataset, *, device: torch.device, batch_size: int = 512) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of ``model`` on ``data`` (eval mode)."""
    result = accuracy(model, data, device=device, batch_size=batch_size)
    return result["top1"], result["top5"]


def measure(model: nn.Module, data: Dataset, task: Task, *, device: torch.device) -> dict[str, float]:
    """The metrics of ``task`` for ``model`` on ``data`` (eval mode): what every case and base model reports."""
    return task.evaluate(model, data, device=device, batch_size=task.eval_batch)
