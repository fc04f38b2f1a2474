"""A tiny randomly initialised GPT-2 saved locally with a word-level tokenizer, and WikiText-2-format raw files:
what the Hugging Face suites read, written by the tests (transformers needed; nothing downloaded)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(60)] + ["the", "of", "=", ",", "."]


def write_wikitext(root: Path, seed: int = 0) -> Path:
    """``root/wikitext-2-raw/wiki.{train,valid,test}.raw`` in WikiText's layout: headings, blank lines, text lines."""
    rng = random.Random(seed)
    folder = root / "wikitext-2-raw"
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 400), ("valid", 40), ("test", 100)):
        text = []
        for i in range(lines):
            if i % 10 == 0:
                text.append(" = Heading = \n")
            elif i % 10 == 1:
                text.append(" \n")
            else:
                text.append(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + " \n")
        (folder / f"wiki.{split}.raw").write_text("".join(text), encoding="utf-8")
    return root


def write_tiny_gpt2(folder: Path, context: int = 32) -> Path:
    """A 2-layer width-32 GPT-2 (random weights, seed 0) and its tokenizer, saved with ``save_pretrained``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=context, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(folder)
    return folder
