"""The whole case of a 125M-parameter language model, and the harness's own share of it.

Why: one-shot methods on language models hand large answers back (SparseGPT returns new values for every
prunable weight: 85M floats on GPT-2 small) and cases measure a large model, so the harness's own work (the
child, building and copying models, the Setup and the answer crossing the boundary, validating and applying
masks, the invariant checks, FLOPs) must stay small beside the method's computation and the evaluation,
which any harness pays. Target: the harness's share ≤ 10% of the case.

The script saves a randomly initialised GPT-2-shaped model (12 layers, width 768, 12 heads, vocabulary 50,257:
124M parameters, transformers' own GPT2LMHeadModel) with a word-level tokenizer in a temporary folder, writes
WikiText-2-format files (about 3,000 test and 20,000 training words), and registers it as a Hugging Face suite
with SparseGPT's calibration of 16 windows of 128 tokens. Then, on one thread:

* the bare method: ``sparsegpt`` called directly on a context holding the same model and calibration;
* the bare evaluation: the perplexity of the model on the test windows, once (a one-shot case measures once);
* the case: ``run_case`` through the sandbox (a walled child), from Setup to row;
* the answer's crossing: the SparseGPT answer (masks and new weights) encoded, sent through a pipe, received
  and decoded, as a child's answer crosses.

harness share = (case - bare method - bare evaluation) / case. Needs the [llm] extra. Run::

    python benchmarks/bench_lm_case.py

Not a test: pytest collects only ``test_*.py`` from ``benchmarks/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from pytest_shrinkbench.identity import CaseSpec
from pytest_shrinkbench.run.case import run_case
from pytest_shrinkbench.sandbox.context import PruneContext
from pytest_shrinkbench.sandbox.methods import METHODS, load_installed
from pytest_shrinkbench.sandbox.protocol import Answer, receive, send
from pytest_shrinkbench.sandbox.runner import default_sandbox
from pytest_shrinkbench.suites.hf_lm import hf_causal_lm
from pytest_shrinkbench.suites.subject import load_subject
from pytest_shrinkbench.suites.training import measure

TARGET = 0.10


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="bench-lm-"))
    try:
        _measure(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(folder: Path) -> None:
    _write_model(folder / "gpt2-125m")
    _write_wikitext(folder / "data")
    hf_causal_lm("gpt2-125m-random", folder / "gpt2-125m", context=128, calibration=16)
    sandbox = default_sandbox()  # its fork server forks before any model is loaded here
    load_installed()

    start = time.perf_counter()
    subject = load_subject("gpt2-125m-random", folder / "cache", data_root=folder / "data")
    print(f"subject (once per session, not part of the case): {time.perf_counter() - start:.1f} s; "
          f"{subject.params_total / 1e6:.1f}M parameters, "
          f"{len(subject.trace.prunable)} prunable weights, {len(subject.data.test)} test windows of 128 tokens")

    inputs, targets = subject.batch(0)
    ctx = PruneContext(subject.fresh_model(), 2.0, inputs, targets, seed=0, prunable_names=subject.trace.prunable,
                       input_dims=subject.trace.input_dim, calibration=subject.calibration(0), basis="prunable")
    start = time.perf_counter()
    masks, weights = METHODS.get("sparsegpt").fn(ctx)  # the method's own computation, nothing of the harness's
    method = time.perf_counter() - start
    answer = Answer(masks=masks, weights=weights)
    start = time.perf_counter()
    measure(subject.fresh_model(), subject.data.test, subject.suite.objective, device=subject.device)
    evaluation = time.perf_counter() - start

    crossing = _crossing(answer)
    size = sum(t.numel() * t.element_size() for part in (answer.masks, answer.weights) for t in part.values())

    start = time.perf_counter()
    row = run_case(CaseSpec("sparsegpt", "gpt2-125m-random", 2.0, 0), subject, sandbox=sandbox)
    case = time.perf_counter() - start
    share = (case - method - evaluation) / case
    print(f"bare method (sparsegpt, 16 x 128 calibration tokens): {method:.1f} s")
    print(f"bare evaluation (perplexity, once):                   {evaluation:.1f} s")
    print(f"the case (run_case through the {sandbox.level} sandbox): {case:.1f} s "
          f"(the method's calls in its child: {row['prune_seconds']:.1f} s); perplexity {row['perplexity']:.1f}")
    print(f"the answer's crossing ({size / 2**20:.0f} MiB: masks and new weights) encode + pipe + decode: {crossing:.2f} s")
    verdict = "within target" if share <= TARGET else "ABOVE TARGET"
    print(f"harness share: ({case:.1f} - {method:.1f} - {evaluation:.1f}) / {case:.1f} = {share:.1%} ({verdict}: <= {TARGET:.0%})")
    sandbox.close()


def _crossing(answer: Answer) -> float:
    """Seconds to send ``answer`` through a pipe and decode it on the other end, as a child's answer crosses."""
    read, write = os.pipe()
    received = []
    start = time.perf_counter()
    reader = threading.Thread(target=lambda: received.append(receive(read)))
    reader.start()
    send(write, answer)
    reader.join()
    seconds = time.perf_counter() - start
    os.close(read)
    os.close(write)
    assert set(received[0].weights) == set(answer.weights)
    return seconds


def _write_model(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", *_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(folder)


_WORDS = [f"w{i}" for i in range(500)]


def _write_wikitext(root: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    (root / "wikitext-2-raw").mkdir(parents=True, exist_ok=True)
    for split, words in (("train", 20_000), ("valid", 1_000), ("test", 3_000)):
        ids = torch.randint(0, len(_WORDS), (words,), generator=generator).tolist()
        lines = [" " + " ".join(_WORDS[i] for i in ids[k:k + 20]) + " \n" for k in range(0, words, 20)]
        (root / "wikitext-2-raw" / f"wiki.{split}.raw").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
