"""Hugging Face causal language models from a local directory, evaluated on WikiText-2 with the reference protocol.

Needs the ``llm`` extra (``pip install pytest-shrinkbench[llm]``: ``transformers``), imported only when such a
suite is built; nothing is ever downloaded (``local_files_only``). Register one from a ``conftest.py``::

    from pytest_shrinkbench.suites.hf_lm import hf_causal_lm
    hf_causal_lm("llama2-7b", "/models/Llama-2-7b-hf")          # context: the model's own

The protocol (SparseGPT's and Wanda's): the raw WikiText-2 test split (``wikitext-2-raw/wiki.test.raw`` under
``--shrink-data-root``; its lines as the ``datasets`` library gives them, joined with ``"\\n\\n"``) tokenized once,
cut into non-overlapping windows of the context length, tail dropped; calibration: 128 random windows of the
same length from the training split, drawn with the case's seed; ``lm_head`` and embeddings never pruned. The
corpus files' sha256, the context length, the ``transformers`` version and the rest are in every row's protocol.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .recipe import ONE_SHOT
from .registry import Calibration, Splits, Suite, register_suite
from .text import TrainWindows, held_out_windows

WIKITEXT = "wikitext-2-raw"
FILES = {"train": "wiki.train.raw", "test": "wiki.test.raw"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError("Hugging Face suites need transformers: pip install 'pytest-shrinkbench[llm]'") from None
    return transformers


class CausalLM(nn.Module):
    """A transformers causal LM as the harness's models are: token indices in, next-token logits out."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.model = _transformers().AutoModelForCausalLM.from_config(config)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


def context_of(config: Any) -> int:
    """The model's own context length (``max_position_embeddings``; GPT-2 calls it ``n_positions``)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"{type(config).__name__} states no context length: pass context=")


def wikitext_text(file: Path) -> str:
    """A raw WikiText file as the reference protocol sees it: its lines (blank ones empty), joined with blank lines."""
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    return "\n\n".join(line if line.strip() else "" for line in lines)


def hf_causal_lm(name: str, path: str | Path, *, context: int | None = None, calibration: int = 128,
                 exclude: tuple[str, ...] = ("*lm_head.weight",), description: str = "") -> Suite:
    """Register the causal LM saved in the directory ``path`` (``save_pretrained``: config, weights, tokenizer) as
    the suite ``name``: one-shot, on the prunable basis, ``calibration`` windows of ``context`` tokens (default:
    the model's context length) from WikiText-2's training split, evaluated on its test split."""
    folder = Path(path).expanduser().resolve()

    def build() -> nn.Module:
        return CausalLM(_transformers().AutoConfig.from_pretrained(folder, local_files_only=True))

    length = context or context_of(_transformers().AutoConfig.from_pretrained(folder, local_files_only=True))

    def read_weights(found: Path, device: torch.device | str) -> dict[str, Tensor]:
        loaded = _transformers().AutoModelForCausalLM.from_pretrained(found, local_files_only=True, dtype=torch.float32)
        return {f"model.{k}": v.to(device) for k, v in loaded.state_dict().items()}

    return register_suite(Suite(
        name=name,
        build_model=build,
        load_data=lambda root: _wikitext(folder, Path(root), length),
        input_shape=(length,),
        base_recipe=None,
        finetune_recipe=ONE_SHOT,
        description=description or f"{folder.name} (Hugging Face, local) on WikiText-2, context {length}",
        find_data=_missing,
        data_fingerprint=lambda root: _files_sha256(Path(root))[:16],
        find_weights=lambda: folder if (folder / "config.json").is_file() else f"a Hugging Face model directory {folder}",
        read_weights=read_weights,
        task="language",
        compression_basis="prunable",
        calibration=Calibration(count=calibration, length=length),
        exclude=exclude,
    ))


def _missing(root: Path | None) -> str | None:
    if root is None:
        return f"no --shrink-data-root: it must hold {WIKITEXT}/{FILES['train']} and {WIKITEXT}/{FILES['test']}"
    absent = [f"{WIKITEXT}/{f}" for f in FILES.values() if not (Path(root) / WIKITEXT / f).is_file()]
    return f"{', '.join(absent)} missing under {root} (WikiText-2 raw, as distributed)" if absent else None


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _files_sha256(root: Path) -> str:
    return hashlib.sha256("".join(_sha256(root / WIKITEXT / f) for f in FILES.values()).encode()).hexdigest()


@lru_cache(maxsize=4)
def _wikitext(folder: Path, root: Path, length: int) -> Splits:
    """The model's tokenizer over WikiText-2's training and test text, each tokenized once as one string."""
    tokenizer = _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def stream(split: str) -> Tensor:
        ids = tokenizer(wikitext_text(root / WIKITEXT / FILES[split]), return_tensors="pt").input_ids
        return ids.reshape(-1).long()

    protocol = {"corpus": WIKITEXT, "corpus_sha256": _sha256(root / WIKITEXT / FILES["test"]),
                "train_sha256": _sha256(root / WIKITEXT / FILES["train"]), "model": folder.name,
                "transformers": _transformers().__version__}
    return Splits(TrainWindows(stream("train"), length), held_out_windows(stream("test"), length), protocol)
