"""A researcher's view of a case, one part at a time: each part gives what the benchmark's case gives."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from pytest_shrinkbench import CaseFailure, CaseSpec, MaskError, ShrinkMethod, ShrinkSubject, load_subject, method, run_case
from pytest_shrinkbench.identity import state_digest
from pytest_shrinkbench.prunable import prunable_parameters
from pytest_shrinkbench.run.gradual import gradual_schedule
from pytest_shrinkbench.sandbox.methods import METHODS, Method
from pytest_shrinkbench.suites.training import optimizer_steps


@pytest.fixture(scope="module")
def cnn(shrink_cache: Path) -> ShrinkSubject:
    return ShrinkSubject(load_subject("digits-cnn", cache_dir=shrink_cache))


def magnitude(ctx):
    return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})


def seeded_random(ctx):
    """Scores drawn from the context's generator: masks that depend on the seed alone."""
    return ctx.keep_top({name: torch.rand(w.shape, generator=ctx.generator) for name, w in ctx.prunable.items()})


def called(fn: Callable, steps: int = 1) -> ShrinkMethod:
    return ShrinkMethod(Method(fn.__name__, fn, steps=steps))


@pytest.fixture
def registered_random() -> Iterator[ShrinkMethod]:
    """``seeded_random`` registered, so that the benchmark's own case can run it too."""
    method("testkit-random")(seeded_random)
    yield ShrinkMethod(METHODS.get("testkit-random"))
    METHODS.retain(lambda m: m.fn is not seeded_random)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """As the benchmark pins a case (--shrink-threads): more threads than free cores make fine-tuning crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_model_is_a_new_copy_of_the_verified_base_weights_each_call(cnn: ShrinkSubject) -> None:
    first = cnn.model()
    with torch.no_grad():
        for param in first.parameters():
            param.zero_()
    second = cnn.model()
    assert second is not first and second.training
    assert all(torch.equal(value, cnn.subject.state[name]) for name, value in second.state_dict().items())
    assert cnn.identity == {"suite": "digits-cnn", "base_sha256": state_digest(cnn.subject.state),
                            "recipe_hash": cnn.suite.finetune_recipe.digest()}
    assert cnn.recipe is cnn.suite.finetune_recipe and cnn.name == "digits-cnn"
    assert (len(cnn.train), len(cnn.test)) == (1438, 359)


def test_the_method_sees_what_a_case_gives_it(cnn: ShrinkSubject) -> None:
    """The same batch for the seed, the seed in the context and in torch's global generator, the requested ratio."""
    seen = {}

    def spy(ctx):
        seen.update(inputs=ctx.inputs, targets=ctx.targets, seed=ctx.seed, compression=ctx.compression,
                    global_seed=torch.initial_seed(), training=ctx.model.training)
        return magnitude(ctx)

    called(spy)(cnn, 4, seed=7)
    inputs, targets = cnn.batch(7)
    assert torch.equal(seen["inputs"], inputs) and torch.equal(seen["targets"], targets)
    assert not torch.equal(cnn.batch(8)[0], inputs), "another seed, another batch"
    assert (seen["seed"], seen["global_seed"], seen["compression"], seen["training"]) == (7, 7, 4.0, True)


def test_pruned_model_measures_like_the_case_of_the_same_method_ratio_and_seed(
    cnn: ShrinkSubject, registered_random: ShrinkMethod, one_thread: None
) -> None:
    pruned = registered_random(cnn, 4, seed=1)
    row = run_case(CaseSpec("testkit-random", "digits-cnn", 4.0, 1), cnn.subject)
    assert cnn.evaluate(pruned.model) == {"top1": row["top1_pre"], "top5": row["top5_pre"]}
    measured = cnn.measure(pruned.model)
    assert measured == {name: row[name] for name in measured}
    assert measured["flops_accounting"] == "structured" and measured["compression"] == pytest.approx(4, rel=0.005)
    assert not torch.equal(registered_random(cnn, 4, seed=2).masks["classifier.weight"], pruned.masks["classifier.weight"])


def test_evaluate_gives_the_base_metrics_on_the_base_model(cnn: ShrinkSubject) -> None:
    assert cnn.evaluate(cnn.model()) == cnn.base
    assert cnn.base["top1"] > 0.95


def test_check_masks_raises_what_a_case_raises(cnn: ShrinkSubject) -> None:
    model = cnn.model()
    masks = called(magnitude)(cnn, 8).masks
    cnn.check_masks(model, masks, 8)
    with pytest.raises(CaseFailure, match=r"^requested compression x16 but the masks achieve x8\.001 \(3247 of 25978 parameters non-zero; 1624 expected\)$"):
        cnn.check_masks(model, masks, 16)
    with pytest.raises(MaskError, match=r"^mask of 'classifier.weight' has dtype torch.float32, expected torch.bool \(True = keep\)$"):
        cnn.check_masks(model, {**masks, "classifier.weight": masks["classifier.weight"].float()}, 8)
    with pytest.raises(MaskError, match=r"^no mask for prunable parameters \['classifier.weight'\]$"):
        cnn.check_masks(model, {n: m for n, m in masks.items() if n != "classifier.weight"}, 8)
    assert all(torch.equal(value, cnn.subject.state[name]) for name, value in model.state_dict().items()), "model left as it is"


def test_measure_counts_masks_on_a_copy_and_credits_removed_channels(cnn: ShrinkSubject) -> None:
    model = cnn.model()
    dense = cnn.measure(model)
    assert dense["compression"] == 1 and dense["speedup"] == 1 and dense["flops_dense"] == 1203200
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in prunable_parameters(model, cnn.subject.trace.prunable).items()}
    masks["features.0.0.weight"][:8] = False  # half the first conv's filters: their consumers' input work goes too
    pruned = cnn.measure(model, masks)
    assert pruned["channels_removed"] == 8 and pruned["flops_accounting"] == "structured"
    assert pruned["params_nonzero"] == dense["params_nonzero"] - 8 * 9
    first_conv, second_conv = 2 * 64 * 16 * 9, 2 * 64 * 32 * 16 * 9
    assert pruned["flops_sparse"] == dense["flops_dense"] - first_conv // 2 - second_conv // 2
    assert cnn.measure(model) == dense, "the model itself is not masked"


def test_measure_refuses_a_model_of_another_suite(cnn: ShrinkSubject, shrink_cache: Path) -> None:
    mlp = load_subject("digits-mlp", cache_dir=shrink_cache).fresh_model()
    with pytest.raises(ValueError, match=r"^the model is not suite 'digits-cnn''s: its parameters differ in \[\('classifier.bias'"):
        cnn.measure(mlp)


def test_a_broken_method_fails_with_the_cases_messages(cnn: ShrinkSubject) -> None:
    def crashes(ctx):
        raise RuntimeError("planted crash")

    def edits_in_place(ctx):
        with torch.no_grad():
            ctx.model.classifier.bias.add_(1)
        return magnitude(ctx)

    def float_masks(ctx):
        return {name: mask.float() for name, mask in magnitude(ctx).items()}

    with pytest.raises(CaseFailure, match=r"^method 'crashes' raised RuntimeError: planted crash$"):
        called(crashes)(cnn, 2)
    with pytest.raises(CaseFailure, match=r"^method 'edits_in_place' modified the model in place \(classifier.bias\)"):
        called(edits_in_place)(cnn, 2)
    with pytest.raises(MaskError, match=r"^mask of 'features.0.0.weight' has dtype torch.float32, expected torch.bool"):
        called(float_masks)(cnn, 2)


def test_an_under_pruning_method_can_still_be_inspected(cnn: ShrinkSubject) -> None:
    """The compression is check_masks' verdict, not the call's: a test may look at any method's masks."""
    pruned = called(lambda ctx: {n: torch.ones_like(w, dtype=torch.bool) for n, w in ctx.prunable.items()})(cnn, 8)
    assert all(bool(mask.all()) for mask in pruned.masks.values())
    with pytest.raises(CaseFailure, match="requested compression x8 but the masks achieve x1 "):
        cnn.check_masks(pruned.model, pruned.masks, 8)


def test_a_method_cannot_leave_global_state_behind(cnn: ShrinkSubject) -> None:
    def switches_grad_off(ctx):
        torch.set_grad_enabled(False)
        return magnitude(ctx)

    called(switches_grad_off)(cnn, 2)
    assert torch.is_grad_enabled()


def test_a_gradual_method_makes_its_first_call(cnn: ShrinkSubject) -> None:
    pruned = called(magnitude, steps=4)(cnn, 8, seed=0)
    first = gradual_schedule(8, 4, optimizer_steps(cnn.train, cnn.recipe, cnn.model()))[0][0]
    assert pruned.compression == first < 8 and pruned.ratio == 8
    cnn.check_masks(pruned.model, pruned.masks, first)


@pytest.mark.parametrize("ratio", [0.5, "8", True, float("nan"), float("inf")])
def test_a_ratio_that_is_not_a_finite_number_of_at_least_one_is_refused(cnn: ShrinkSubject, ratio: object) -> None:
    with pytest.raises(ValueError, match=r"^ratio must be a finite number >= 1, got "):
        called(magnitude)(cnn, ratio)
