"""A model's identity is the hash of its tensors: the same weights, however saved or ordered, have one identity."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.identity import file_sha256, state_digest
from tests.helpers import ConvNet


def test_the_same_weights_saved_under_two_names_have_one_identity(tmp_path: Path) -> None:
    """torch.save names the archive after the file: the bytes differ, the identity must not."""
    torch.manual_seed(0)
    state = ConvNet().state_dict()
    torch.save(state, tmp_path / "one.pt")
    torch.save(state, tmp_path / "two.pt")
    assert file_sha256(tmp_path / "one.pt") != file_sha256(tmp_path / "two.pt")
    loaded = [torch.load(tmp_path / name, weights_only=True) for name in ("one.pt", "two.pt")]
    assert state_digest(loaded[0]) == state_digest(loaded[1]) == state_digest(state)


def test_identity_ignores_order_and_memory_layout_but_not_content() -> None:
    torch.manual_seed(0)
    state = ConvNet().state_dict()
    reference = state_digest(state)
    assert len(reference) == 64 and int(reference, 16) >= 0
    assert state_digest(dict(reversed(list(state.items())))) == reference, "canonical (sorted-name) order"
    transposed = {**state, "classifier.weight": state["classifier.weight"].t().contiguous().t()}
    assert not transposed["classifier.weight"].is_contiguous() and state_digest(transposed) == reference
    changed = {
        "a value": {**state, "conv.bias": state["conv.bias"] + 1},
        "a name": {("head.weight" if k == "classifier.weight" else k): v for k, v in state.items()},
        "a dtype": {**state, "conv.bias": state["conv.bias"].double()},
        "a shape": {**state, "conv.bias": state["conv.bias"].reshape(2, 2)},
        "an entry": {k: v for k, v in state.items() if k != "bn.num_batches_tracked"},
    }
    for what, other in changed.items():
        assert state_digest(other) != reference, what


def test_framing_keeps_neighbouring_tensors_apart() -> None:
    """Moving bytes from one tensor to the next changes the identity (each tensor states its byte count)."""
    a = {"a": torch.tensor([1, 2], dtype=torch.uint8), "b": torch.tensor([3], dtype=torch.uint8)}
    b = {"a": torch.tensor([1], dtype=torch.uint8), "b": torch.tensor([2, 3], dtype=torch.uint8)}
    assert state_digest(a) != state_digest(b)
    assert state_digest({"x": torch.tensor(1.0)}) != state_digest({"x": torch.tensor([1.0])}), "0-d is not 1-d"
    assert len({state_digest({"x": torch.zeros(0, dtype=d)}) for d in (torch.float32, torch.bfloat16, torch.bool)}) == 3


def test_a_sparse_tensor_has_no_identity_here() -> None:
    with pytest.raises(ValueError, match="state entry 'w' is a torch.sparse_coo tensor"):
        state_digest({"w": torch.eye(2).to_sparse()})


def test_saving_through_a_buffer_gives_the_same_bytes() -> None:
    state = ConvNet().state_dict()
    first, second = io.BytesIO(), io.BytesIO()
    torch.save(state, first)
    torch.save(state, second)
    assert first.getvalue() == second.getvalue()
