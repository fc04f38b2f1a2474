"""My method's own tests, on the benchmark's pinned subjects (docs/testing.md)."""

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.shrink_suite("digits-cnn")  # every test here runs on digits-cnn, unless it says otherwise


@pytest.fixture(scope="session")
def mine(shrink_method):
    return shrink_method("mine")  # methods/mine.py, found as the benchmark finds it


def test_reaches_x8(shrink_subject, mine):
    pruned = mine(shrink_subject, 8)
    shrink_subject.check_masks(pruned.model, pruned.masks, 8)  # the benchmark's own check, with its message
    assert shrink_subject.measure(pruned.model)["speedup"] > 4


def test_masks_are_2_of_4(shrink_subject, mine):
    for name, mask in mine(shrink_subject, 8).masks.items():
        rows = mask.flatten(1)
        groups = F.pad(rows, (0, -rows.shape[1] % 4)).view(rows.shape[0], -1, 4)
        assert groups.sum(dim=2).max() <= 2, name


@pytest.mark.shrink_suite("digits-cnn", "digits-mlp")
def test_top1_before_finetuning_is_above_half(shrink_subject, mine):
    pruned = mine(shrink_subject, 2, seed=0)
    assert shrink_subject.evaluate(pruned.model)["top1"] > 0.5


def test_masks_are_deterministic_for_a_seed(shrink_subject, mine):
    first, again = mine(shrink_subject, 8, seed=1), mine(shrink_subject, 8, seed=1)
    assert all(torch.equal(first.masks[name], again.masks[name]) for name in first.masks)


def test_pruned_model_agrees_with_the_dense_one(shrink_subject, mine):
    """A metric of my own: how often the pruned model predicts what the dense base model predicts."""
    inputs = torch.stack([image for image, _ in shrink_subject.test]).to(shrink_subject.device)
    dense, pruned = shrink_subject.model().eval(), mine(shrink_subject, 2).model.eval()
    with torch.no_grad():
        agreement = (dense(inputs).argmax(1) == pruned(inputs).argmax(1)).float().mean().item()
    assert agreement > 0.6
