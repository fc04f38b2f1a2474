"""Suites: a dataset–model pair with its pinned base-training and fine-tuning recipes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from . import data, models
from .recipe import Recipe
from .registry import Registry, origin_of


@dataclass(frozen=True)
class Suite:
    """Everything that must be identical for two methods' numbers to be comparable."""

    name: str
    build_model: Callable[[], nn.Module]
    load_data: Callable[[], data.Splits]
    input_shape: tuple[int, ...]  # one example, without the batch dimension (for FLOPs)
    base_recipe: Recipe  # how the plugin trains the base model when no checkpoint is given
    finetune_recipe: Recipe  # what every case gets after pruning
    description: str = ""


SUITES: Registry[Suite] = Registry("suite")
DEFAULT_SUITES = ("digits-cnn", "digits-mlp")


def register_suite(suite: Suite) -> Suite:
    """Make ``suite`` selectable by ``--shrink-suite``; its model builder identifies where it came from."""
    return SUITES.add(suite.name, suite, origin=f"{origin_of(suite.build_model)}#{suite.name}")


register_suite(
    Suite(
        name="digits-mlp",
        build_model=models.DigitsMLP,
        load_data=data.digits,
        input_shape=(1, 8, 8),
        base_recipe=Recipe("adam", lr=1e-3, epochs=30, batch_size=32),
        finetune_recipe=Recipe("adam", lr=1e-3, epochs=8, batch_size=32),
        description="LeNet-300-100 on scikit-learn's 8x8 digits",
    ),
)
register_suite(
    Suite(
        name="digits-cnn",
        build_model=models.DigitsCNN,
        load_data=data.digits,
        input_shape=(1, 8, 8),
        base_recipe=Recipe("adam", lr=1e-3, epochs=20, batch_size=32),
        finetune_recipe=Recipe("adam", lr=1e-3, epochs=8, batch_size=32),
        description="3-block conv net with batch norm on scikit-learn's 8x8 digits",
    ),
)
