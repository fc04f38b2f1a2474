"""The suite registry: a suite is a dataset–model pair with its pinned base-training and fine-tuning recipes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn
from torch.utils.data import Dataset

from ..registry import Registry, origin_of
from .recipe import Recipe
from .tasks import TASKS, Task


@dataclass(frozen=True)
class Splits:
    """A suite's data: ``train`` feeds base training, pruning batches and fine-tuning; ``test`` only evaluation."""

    train: Dataset
    test: Dataset
    # What the data says about itself for a row's protocol (a language suite's corpus name, its files' sha256,
    # the tokenizer's library version): recorded in every row's ``protocol``.
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """The calibration batches a suite hands every method (``ctx.calibration``): ``count`` windows of ``length``
    tokens, drawn with the case's seed from the ``source`` split (only ``train``: held-out data never reaches a method).
    The reference protocol of SparseGPT and Wanda is 128 windows of the model's context length, seed 0."""

    count: int = 128
    length: int = 128
    source: str = "train"

    def as_dict(self) -> dict[str, Any]:
        return {"calibration_count": self.count, "calibration_length": self.length, "calibration_source": self.source}


@dataclass(frozen=True)
class Suite:
    """Everything that must be identical for two methods' numbers to be comparable."""

    name: str
    build_model: Callable[[], nn.Module]
    load_data: Callable[..., Splits]  # () -> Splits; (data root) -> Splits when find_data is set
    input_shape: tuple[int, ...] | None  # one example, without the batch dimension (for FLOPs); None: the first training input's
    base_recipe: Recipe | None  # how the plugin trains the base model when no checkpoint is given (None: never)
    finetune_recipe: Recipe  # what every case gets after pruning
    description: str = ""
    # Suites whose data is on disk under the data root (vision.py). find_data(root) is None when
    # the data is there, else one line saying what is missing and how to provide it (the cases skip).
    find_data: Callable[[Path | None], str | None] | None = None
    # Hash of the data's contents, part of the cache key of a base model the plugin trains.
    data_fingerprint: Callable[[Path], str] | None = None
    # Pretrained weights found on this machine, used when no checkpoint is given: a Path when found,
    # else a str saying what was looked for (e.g. torchvision's file in the local torch hub cache).
    find_weights: Callable[[], Path | str] | None = None
    # Parameters never pruned though they feed a matmul, by name pattern (fnmatch over any of a parameter's
    # names): an LM's ``lm_head.weight``, as SparseGPT and Wanda leave it. Part of every row's identity.
    exclude: tuple[str, ...] = ()
    # Embedding tables are lookups, not FLOPs: counted but never prunable, unless a suite opts them in.
    prune_embeddings: bool = False
    # What the model does ("classification" or "language", see tasks.py): its loss, metrics and ranking metric.
    task: str = "classification"
    # What a requested ratio divides: "model" (all parameters ÷ non-zero ones, ShrinkBench's) or "prunable" (the
    # prunable weights only, as language-model papers state sparsity: x2 is 50% of the pruned linears).
    compression_basis: str = "model"
    calibration: Calibration | None = None  # None: the suite hands methods no calibration batches
    # How base weights given as a path are read (None: a torch state_dict file, see subject.read_state); a
    # Hugging Face suite reads a model directory.
    read_weights: Callable[[Path, Any], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"suite {self.name!r}: task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.compression_basis not in ("model", "prunable"):
            raise ValueError(f"suite {self.name!r}: compression_basis must be 'model' or 'prunable', got {self.compression_basis!r}")
        if self.calibration is not None and self.calibration.source != "train":
            raise ValueError(f"suite {self.name!r}: calibration comes from the training split, not {self.calibration.source!r}")

    @property
    def objective(self) -> Task:
        """The suite's task: its loss, its metrics and the metric that ranks methods."""
        return TASKS[self.task]

    def missing_data(self, root: Path | None) -> str | None:
        """None when the suite's data is available (always, for embedded data); else why not and how to fix it."""
        return self.find_data(root) if self.find_data is not None else None

    def data(self, root: Path | None = None) -> Splits:
        return self.load_data(root) if self.find_data is not None else self.load_data()


SUITES: Registry[Suite] = Registry("suite")
DEFAULT_SUITES = ("digits-cnn", "digits-mlp")


def register_suite(suite: Suite) -> Suite:
    """Make ``suite`` selectable by ``--shrink-suite``; its model builder identifies where it came from."""
    return SUITES.add(suite.name, suite, origin=f"{origin_of(suite.build_model)}#{suite.name}")


def override_suite(name: str, **changes: object) -> Suite:
    """Replace fields of a registered suite (e.g. ``finetune_recipe=Recipe(..., epochs=1)`` for a smoke
    test in a project's ``conftest.py``); return the suite as it was, so a caller can restore it.

    The recipes' hashes are recorded with every result, so rows of an overridden suite never pass
    for rows of the standard one; a new base recipe also gets its own cached base model.
    """
    before = SUITES.get(name)
    SUITES.replace(name, replace(before, **changes))
    return before
