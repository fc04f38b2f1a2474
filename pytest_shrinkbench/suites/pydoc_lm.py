"""The embedded language suite ``pydoc-lm``: a byte-level GPT on CPython's own ``pydoc_data.topics`` text (no download).

The corpus (about 466 k bytes of English documentation) ships with every CPython; its sha256 is in every
row's protocol, so rows of two Python versions whose corpora differ are never compared. It is cut into 100
contiguous chunks; every 10th (chunks 9, 19, ..., 99) is the test split, the rest the training stream. The
model is trained once with a recipe pinned in steps (not time) and cached; cases prune it one-shot, from
128 calibration windows of the context length (the reference protocol's count), on the prunable basis.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .gpt import GPT, GPTConfig
from .recipe import ONE_SHOT, StepRecipe
from .registry import Calibration, Splits, Suite, register_suite
from .text import TrainWindows, sha256_text, held_out_windows

CHUNKS = 100
TEST_EVERY = 10  # chunk k is test when k % TEST_EVERY == TEST_EVERY - 1
CONFIG = GPTConfig(vocab=256, context=128, layers=4, heads=4, width=128)


@lru_cache(maxsize=1)
def corpus() -> str:
    """Every pydoc topic's text, in sorted topic order, joined with blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


@lru_cache(maxsize=None)
def pydoc_splits(context: int = CONFIG.context) -> Splits:
    """Training windows of ``context`` bytes from 90 chunks; test windows (non-overlapping) from the other 10."""
    stream = torch.tensor(list(corpus().encode("utf-8")), dtype=torch.long)
    chunks = stream.tensor_split(CHUNKS)
    test = [c for k, c in enumerate(chunks) if k % TEST_EVERY == TEST_EVERY - 1]
    train = [c for k, c in enumerate(chunks) if k % TEST_EVERY != TEST_EVERY - 1]
    return Splits(TrainWindows(torch.cat(train), context), held_out_windows(torch.cat(test), context),
                  {"corpus": "pydoc_data.topics", "corpus_sha256": sha256_text(corpus())})


def pydoc_model() -> GPT:
    return GPT(CONFIG)


register_suite(
    Suite(
        name="pydoc-lm",
        build_model=pydoc_model,
        load_data=pydoc_splits,
        input_shape=(CONFIG.context,),
        base_recipe=StepRecipe("adamw", lr=4e-3, epochs=1, batch_size=32, steps=1100, warmup=100, final_lr=4e-4),
        finetune_recipe=ONE_SHOT,
        description="a 4-layer byte-level GPT (0.87M parameters) on CPython's pydoc topics, pruned one-shot",
        data_fingerprint=lambda _root: sha256_text(corpus())[:16],
        task="language",
        compression_basis="prunable",
        calibration=Calibration(count=128, length=CONFIG.context),
        exclude=("lm_head.weight",),
    )
)
