"""Language suites: perplexity over the reference protocol's windows, training pinned in steps, calibration from
the training split, and one-shot cases measured once on the prunable basis (pydoc-lm in a tiny configuration)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_shrinkbench as sb
from pytest_shrinkbench.suites import override_suite
from pytest_shrinkbench.suites.gpt import GPT, GPTConfig
from pytest_shrinkbench.suites.pydoc_lm import corpus, pydoc_splits
from pytest_shrinkbench.suites.recipe import StepRecipe
from pytest_shrinkbench.suites.registry import Calibration
from pytest_shrinkbench.suites.tasks import IGNORE, TASKS
from pytest_shrinkbench.suites.text import TrainWindows, held_out_windows
from pytest_shrinkbench.suites.training import fit, measure, optimizer_steps

CPU = torch.device("cpu")
TINY = GPTConfig(context=16, layers=2, heads=2, width=16)


def tiny_model() -> GPT:
    return GPT(TINY)


@pytest.fixture
def tiny_pydoc(tmp_path_factory: pytest.TempPathFactory):
    """pydoc-lm with a 2-layer width-16 model trained for 40 steps, 16 calibration windows of 16 bytes."""
    before = override_suite("pydoc-lm", build_model=tiny_model, load_data=lambda: pydoc_splits(16), input_shape=(16,),
                            base_recipe=StepRecipe("adamw", lr=4e-3, epochs=1, batch_size=8, steps=40),
                            calibration=Calibration(count=16, length=16))
    yield sb.load_subject("pydoc-lm", tmp_path_factory.getbasetemp().parent / "shrinkbench-test-cache")
    sb.suites.SUITES.replace("pydoc-lm", before)


class Uniform(nn.Module):
    """Equal logits over ``vocab`` tokens: perplexity exactly ``vocab``, whatever the text."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.unused = nn.Linear(1, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, self.vocab)


def test_test_windows_are_non_overlapping_with_the_tail_dropped_and_score_their_inner_tokens() -> None:
    windows = held_out_windows(torch.arange(11), 4)
    assert windows.tensors[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # 8, 9, 10: the tail, dropped
    assert windows.tensors[1].tolist() == [[1, 2, 3, IGNORE], [5, 6, 7, IGNORE]]


def test_perplexity_is_the_exponential_of_the_mean_token_nll() -> None:
    windows = held_out_windows(torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(0)), 5)
    result = measure(Uniform(7), windows, TASKS["language"], device=CPU)
    assert result["perplexity"] == pytest.approx(7.0)
    # a model certain of one token: exp(mean NLL) where NLL is 0 on hits and 30 - log(e^30 + 6) on misses
    class Sure(Uniform):
        def forward(self, idx):
            logits = torch.zeros(*idx.shape, self.vocab)
            logits[..., 3] = 30.0
            return logits

    targets = windows.tensors[1]
    hits = int((targets == 3).sum())
    scored = int((targets != IGNORE).sum())
    miss_nll = math.log(math.exp(30) + 6) - 0.0
    hit_nll = math.log(math.exp(30) + 6) - 30.0
    expected = math.exp((hits * hit_nll + (scored - hits) * miss_nll) / scored)
    sure = measure(Sure(7), windows, TASKS["language"], device=CPU)
    assert sure["perplexity"] == pytest.approx(expected) and sure["top1"] == pytest.approx(hits / scored)


def test_a_step_recipe_stops_after_its_steps() -> None:
    data = TrainWindows(torch.arange(200) % 5, 8)
    recipe = StepRecipe("adamw", lr=1e-3, epochs=3, batch_size=16, steps=7)
    steps: list[int] = []
    model = GPT(GPTConfig(vocab=5, context=8, layers=1, heads=1, width=8))
    fit(model, data, recipe, seed=0, device=CPU, on_step=steps.append, loss=TASKS["language"].loss)
    assert steps == list(range(7)) == list(range(optimizer_steps(data, recipe, model)))
    assert recipe.digest() != StepRecipe("adamw", lr=1e-3, epochs=3, batch_size=16, steps=8).digest()


def test_a_step_recipes_warmup_and_cosine_decay_advance_every_optimizer_step() -> None:
    data = TrainWindows(torch.arange(400) % 5, 8)
    recipe = StepRecipe("adamw", lr=1e-2, epochs=1, batch_size=4, steps=10, warmup=4, final_lr=1e-3)
    model = GPT(GPTConfig(vocab=5, context=8, layers=1, heads=1, width=8))
    rates: list[float] = []
    fit(model, data, recipe, seed=0, device=CPU, loss=TASKS["language"].loss,
        on_optimizer=lambda optimizer: rates.append(optimizer), on_step=lambda step: rates.append(rates[0].param_groups[0]["lr"]))
    after = rates[1:]  # the rate set for the next step, after each step
    assert after[:3] == pytest.approx([2.5e-3 * 2, 2.5e-3 * 3, 1e-2])  # warmup: (step + 1) / 4 of lr
    assert after[3] == pytest.approx(1e-2) and after[-1] == pytest.approx(1e-3)  # cosine down to final_lr at step 10
    assert all(a >= b for a, b in zip(after[3:], after[4:]))


def test_pydoc_corpus_split_is_pinned_and_disjoint() -> None:
    splits = pydoc_splits(16)
    text = corpus().encode("utf-8")
    assert len(text) > 400_000
    train = bytes(splits.train.stream.tolist())
    test = bytes(splits.test.tensors[0].flatten().tolist())
    assert len(train) + len(test) <= len(text) and len(test) > 40_000
    assert text[:1000] == train[:1000]  # chunk 0 is training text; chunk 9 (the first test chunk) is not
    chunk = len(text) // 100
    assert text[9 * chunk + 100:9 * chunk + 400] in test and text[9 * chunk + 100:9 * chunk + 400] not in train


def test_calibration_is_drawn_from_training_windows_with_the_cases_seed(tiny_pydoc) -> None:
    first, again, other = tiny_pydoc.calibration(0), tiny_pydoc.calibration(0), tiny_pydoc.calibration(1)
    assert first.shape == (16, 16) and torch.equal(first, again) and not torch.equal(first, other)
    train = bytes(tiny_pydoc.data.train.stream.tolist())
    assert all(bytes(window.tolist()) in train for window in first)


def test_a_one_shot_case_is_measured_once_on_the_prunable_basis(tiny_pydoc) -> None:
    result = sb.run_case(sb.CaseSpec("global-magnitude", "pydoc-lm", 4.0, 0), tiny_pydoc)
    assert result["metric"] == "perplexity" and result["compression_basis"] == "prunable"
    assert result["compression_prunable"] == pytest.approx(4.0, rel=0.005)
    assert 1.0 < result["compression"] < result["compression_prunable"]  # embeddings, norms and biases are kept
    assert result["finetune_seconds"] == 0.0
    assert result["perplexity"] == result["perplexity_pre"] != result["perplexity_base"] == tiny_pydoc.base_metrics["perplexity"]
    assert result["top1"] == result["top1_pre"]
    assert result["protocol"] == {
        "corpus": "pydoc_data.topics", "corpus_sha256": __import__("hashlib").sha256(corpus().encode()).hexdigest(),
        "context_length": 16, "stride": 16, "exclude": ["lm_head.weight"], "dtype": "float32",
        "calibration_count": 16, "calibration_length": 16, "calibration_source": "train", "calibration_seed": "the case's seed",
    }


@pytest.mark.parametrize("method", ["row-magnitude", "wanda", "sparsegpt"])
def test_the_language_baselines_prune_half_and_their_2of4_variants_two_of_every_four(tiny_pydoc, method: str) -> None:
    plain = sb.run_case(sb.CaseSpec(method, "pydoc-lm", 2.0, 0), tiny_pydoc)
    assert plain["compression_prunable"] == pytest.approx(2.0, rel=0.005)
    assert (plain["weights_changed"] > 0) == (method == "sparsegpt")
    pattern = sb.run_case(sb.CaseSpec(f"{method}-2of4", "pydoc-lm", 2.0, 0), tiny_pydoc, then=_two_of_four)
    assert pattern["compression_prunable"] == 2.0
    assert "blocks.0.attn.q" in pattern["checked"] and "blocks.1.mlp.proj" in pattern["checked"]


def _two_of_four(model: nn.Module, result: dict) -> None:
    assert (model.lm_head.weight != 0).all()  # excluded, as the papers leave it
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "lm_head":
            nonzero = (module.weight != 0).view(module.weight.shape[0], -1, 4).sum(dim=2)
            assert (nonzero <= 2).all(), name
            result.setdefault("checked", []).append(name)


def test_a_users_own_language_suite_is_ranked_by_perplexity_with_calibration(tmp_path: Path) -> None:
    from pytest_shrinkbench.suites.recipe import ONE_SHOT
    from pytest_shrinkbench.suites.user import suite

    stream = torch.arange(3000) % 7  # a periodic "language": learnable in a few steps

    @suite("tiny-periodic-lm", train=TrainWindows(stream[:2400], 16), test=held_out_windows(stream[2400:], 16),
           finetune=ONE_SHOT, base=StepRecipe("adamw", lr=1e-2, epochs=1, batch_size=8, steps=30), task="language",
           compression_basis="prunable", calibration=Calibration(count=8, length=16), exclude=("lm_head.weight",))
    def periodic() -> GPT:
        return GPT(GPTConfig(vocab=7, context=16, layers=1, heads=1, width=16))

    try:
        subject = sb.load_subject("tiny-periodic-lm", tmp_path)
        result = sb.run_case(sb.CaseSpec("wanda", "tiny-periodic-lm", 2.0, 0), subject)
    finally:
        sb.suites.SUITES.retain(lambda s: s.name != "tiny-periodic-lm")
    assert subject.base_metrics["perplexity"] < 7  # better than uniform over 7 tokens
    assert result["metric"] == "perplexity" and result["compression_prunable"] == pytest.approx(2.0, rel=0.005)
    assert result["protocol"]["calibration_count"] == 8 and "corpus" not in result["protocol"]
