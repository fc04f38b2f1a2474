"""PyTorch's fused attention fast path (eval mode, no grad, real device) holds every weight of an encoder layer in one op:
a pruned transformer must evaluate, and pass the invariants and mask checks, the same on either path."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import TensorDataset

from pytest_shrinkbench import prune
from pytest_shrinkbench.errors import InvariantViolation
from pytest_shrinkbench.prunable import prunable_parameters
from pytest_shrinkbench.run.invariants import check_pruned
from pytest_shrinkbench.run.masks import apply_masks
from pytest_shrinkbench.sandbox.methods import load_installed
from pytest_shrinkbench.suites.digits import DigitsTransformer
from pytest_shrinkbench.suites.training import evaluate

FUSED = "aten._transformer_encoder_layer_fwd.default"


class Ops(TorchDispatchMode):
    """The ops a forward pass dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.seen.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def fast_path():
    """Switches the fast path on or off for one test, and back as it was."""
    before = torch.backends.mha.get_fastpath_enabled()
    yield torch.backends.mha.set_fastpath_enabled
    torch.backends.mha.set_fastpath_enabled(before)


def pruned_transformer():
    load_installed()
    torch.manual_seed(0)
    model = DigitsTransformer()
    inputs, targets = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    masks = prune(model, "global-magnitude", 4, batch=(inputs, targets), seed=0)
    prunable = prunable_parameters(model, masks)
    apply_masks(prunable, masks, {})
    return model, prunable, masks, inputs, targets


def test_either_path_evaluates_the_same_and_keeps_the_invariants(fast_path) -> None:
    model, prunable, masks, inputs, targets = pruned_transformer()
    assert "encoder.layers.0.self_attn.in_proj_weight" in masks
    fresh = lambda: copy.deepcopy(model)  # noqa: E731
    results = {}
    for enabled in (True, False):
        fast_path(enabled)
        ops = Ops()
        with torch.no_grad(), ops:
            model.eval()(inputs[:4])
        assert (FUSED in ops.seen) == enabled, "the fused op is taken exactly when the fast path is on"
        results[enabled] = (evaluate(model, TensorDataset(inputs, targets), device=torch.device("cpu")),
                            model.eval()(inputs).detach())
        check_pruned(model, prunable, masks, inputs[:16], fresh, f"fast path {'on' if enabled else 'off'}")
    assert results[True][0] == results[False][0]
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-5, atol=1e-5)


def test_a_masked_weight_is_caught_on_the_fused_path_too(fast_path) -> None:
    model, prunable, masks, inputs, _ = pruned_transformer()
    fast_path(True)
    with torch.no_grad():
        weight = prunable["encoder.layers.1.self_attn.in_proj_weight"]
        weight[~masks["encoder.layers.1.self_attn.in_proj_weight"]] = 0.5
    with pytest.raises(InvariantViolation, match=r"invariant 2 .*in_proj_weight"):
        check_pruned(model, prunable, masks, inputs[:16], lambda: copy.deepcopy(model), "fused")
