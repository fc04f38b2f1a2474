"""Bring your own suite: the ``@suite`` decorator, its entry-point group, and forgetting a session's suites.

A user suite is a model builder plus train and evaluation datasets, a fine-tuning recipe and either
a base-training recipe or a checkpoint (or both: the checkpoint when its file exists, else the plugin
trains). Registered from a ``conftest.py``, a file in ``methods/`` (or any ``shrink_method_dirs``
folder), or an installed package's module listed under the ``pytest_shrinkbench.suites`` entry-point
group, it runs with ``--shrink-suite=NAME`` exactly like a built-in suite: base weights trained once
under the cache lock (or loaded from the checkpoint), the same invariants, the same metrics.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable, Union

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from ..registry import load_entry_points
from .decoded import Decoded
from .decoding import decoded
from .recipe import Recipe
from .registry import SUITES, Calibration, Splits, Suite, register_suite

ENTRY_POINT_GROUP = "pytest_shrinkbench.suites"
# Datasets other than TensorDataset are fingerprinted by their length and this many evenly spaced samples.
FINGERPRINT_SAMPLES = 256

DataSource = Union[Dataset, Callable[[], Dataset]]

_installed_modules: set[str] = set()


def suite(
    name: str,
    *,
    train: DataSource,
    test: DataSource,
    finetune: Recipe,
    base: Recipe | None = None,
    checkpoint: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    description: str = "",
    exclude: tuple[str, ...] = (),
    prune_embeddings: bool = False,
    task: str = "classification",
    compression_basis: str = "model",
    calibration: Calibration | None = None,
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register the decorated model builder (``() -> nn.Module``) as the suite ``name``.

    ``train`` and ``test`` are datasets of ``(input, class index)`` pairs, or zero-argument callables
    returning one (called once, when a session first needs the suite). ``finetune`` is what every case
    gets after pruning. Base weights: ``checkpoint`` (a state_dict file; a relative path is taken from
    the folder of the file defining the builder) when it exists, else the model trained with ``base``
    and cached. ``input_shape`` (one example, no batch dimension; for FLOPs) defaults to the shape of
    the first training input. Every weight that feeds a matmul or a conv is prunable, except those matching a
    name pattern of ``exclude`` (``("lm_head.weight",)``); embedding tables only with ``prune_embeddings``.
    A language model: ``task="language"`` (datasets of ``(window, next tokens)`` pairs, the tokens not scored set
    to -100; ranked by perplexity), usually with ``compression_basis="prunable"``, ``calibration=Calibration(...)``
    and ``finetune=ONE_SHOT`` (see docs/suites.md, Language models).
    """
    if not isinstance(finetune, Recipe):
        raise TypeError(f"suite {name!r}: finetune must be a Recipe, got {type(finetune).__name__}")
    if base is not None and not isinstance(base, Recipe):
        raise TypeError(f"suite {name!r}: base must be a Recipe or None, got {type(base).__name__}")
    if base is None and checkpoint is None:
        raise ValueError(f"suite {name!r}: give a base-training recipe (base=Recipe(...)) or a checkpoint path, or both")

    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        splits: list[Splits] = []

        def load_data() -> Splits:
            if not splits:
                splits.append(Splits(_dataset(train, "train"), _dataset(test, "test")))
            return splits[0]

        find_weights = None
        if checkpoint is not None:
            path = Path(checkpoint).expanduser()
            if not path.is_absolute():
                path = Path(inspect.getsourcefile(build) or ".").resolve().parent / path
            find_weights = lambda: path if path.is_file() else f"the checkpoint {path}"  # noqa: E731

        register_suite(
            Suite(
                name=name,
                build_model=build,
                load_data=load_data,
                input_shape=tuple(input_shape) if input_shape is not None else None,
                base_recipe=base,
                finetune_recipe=finetune,
                description=description or (build.__doc__ or "").strip().split("\n")[0],
                # Decoded once here (and remembered for the subject): sampling decoded tensors is cheap.
                data_fingerprint=lambda _root: fingerprint(Splits(decoded(load_data().train), decoded(load_data().test))),
                find_weights=find_weights,
                exclude=tuple(exclude),
                prune_embeddings=prune_embeddings,
                task=task,
                compression_basis=compression_basis,
                calibration=calibration,
            )
        )
        return build

    def _dataset(source: DataSource, which: str) -> Dataset:
        data = source() if callable(source) and not isinstance(source, Dataset) else source
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__") or len(data) == 0:
            raise ValueError(f"suite {name!r}: the {which} data must be a non-empty map-style dataset, got {type(data).__name__}")
        return data

    return register


def fingerprint(splits: Splits) -> str:
    """Hash of a user suite's data, part of the cache key of its trained base model.

    A ``TensorDataset`` is hashed whole; any other dataset by its length and
    ``FINGERPRINT_SAMPLES`` evenly spaced samples (hashing every sample of a large dataset on
    each session start would cost more than it protects). A :class:`Decoded` dataset gives the
    samples of the dataset it was decoded from, so it is sampled too: its fingerprint, and the
    cached base model it keys, stay those of the user's dataset.
    """
    digest = hashlib.sha256()
    for data in (splits.train, splits.test):
        digest.update(str(len(data)).encode())
        if isinstance(data, TensorDataset) and not isinstance(data, Decoded):
            for tensor in data.tensors:
                _update(digest, tensor)
            continue
        step = max(1, len(data) // FINGERPRINT_SAMPLES)
        for index in range(0, len(data), step):
            for item in data[index]:
                _update(digest, item if isinstance(item, Tensor) else torch.as_tensor(item))
    return digest.hexdigest()[:16]


def _update(digest: "hashlib._Hash", tensor: Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def discover() -> None:
    """Import the modules installed packages list under ``pytest_shrinkbench.suites`` (importing registers)."""
    _installed_modules.update(load_entry_points(ENTRY_POINT_GROUP))


def forget_session_suites() -> None:
    """Drop suites registered by a session's conftests and files; keep built-in and installed ones."""

    def kept(s: Suite) -> bool:
        module = getattr(s.build_model, "__module__", "") or ""
        return module.split(".")[0] == "pytest_shrinkbench" or any(
            module == mod or module.startswith(mod + ".") for mod in _installed_modules
        )

    SUITES.retain(kept)
