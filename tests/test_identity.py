"""A model's identity is the hash of its tensors: the same weights, however saved or ordered, have one identity."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.identity import (
    KEY_FIELDS, MEASURE_VERSION, SETUP_FIELDS, case_key, file_sha256, normal, protocol_differences, protocol_hash, setup_of,
    state_digest,
)
from tests.helpers import ConvNet, row


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


def test_a_row_without_a_protocol_keeps_the_case_key_it_always_had() -> None:
    """The key of a CNN row, computed by the rule of every earlier version (a hash of KEY_FIELDS alone), is unchanged."""
    cnn = row("global-magnitude", 8, 1, 0.95, suite="digits-cnn", measure_version=MEASURE_VERSION)
    before = hashlib.sha256(json.dumps([normal(f, cnn.get(f)) for f in KEY_FIELDS]).encode()).hexdigest()[:32]
    assert case_key(cnn) == before
    assert case_key({**cnn, "protocol_hash": None, "protocol": None, "metric": None}) == before
    assert setup_of(cnn) == tuple(normal(f, cnn.get(f)) for f in SETUP_FIELDS)


def test_two_protocols_give_two_keys_and_two_setups() -> None:
    """Two runs of one language-model case that differ only in context length are two results, never one."""
    protocol = {"corpus_sha256": "c" * 64, "context_length": 128, "stride": 128, "calibration_count": 128}
    longer = {**protocol, "context_length": 256}
    first, second = (row("wanda", 2, 0, 0.5, suite="pydoc-lm", protocol=p, protocol_hash=protocol_hash(p)) for p in (protocol, longer))
    assert protocol_hash(protocol) != protocol_hash(longer) and len(protocol_hash(protocol)) == 12
    assert protocol_hash(dict(reversed(list(protocol.items())))) == protocol_hash(protocol), "key order does not matter"
    assert protocol_hash(None) is None
    with pytest.raises(TypeError):
        protocol_hash({"dtype": torch.float32})  # a row stores plain values: so does its hash
    assert case_key(first) != case_key(second) and setup_of(first) != setup_of(second)
    assert protocol_differences(protocol, longer) == ["context_length"]
    assert protocol_differences(protocol, {k: v for k, v in protocol.items() if k != "stride"}) == ["stride"]
    assert protocol_differences(None, protocol) == sorted(protocol)


def test_measurement_key_names_the_computation_not_the_method() -> None:
    """Two cases with the same subject, recipe, seed, pruned model and environment share a key, whatever the
    method or ratio; any one of those fields changed gives another key."""
    from pytest_shrinkbench.identity import MEASUREMENT_FIELDS, measurement_key

    fields = {"suite": "digits-mlp", "base_sha256": "b" * 64, "recipe_hash": "r1", "seed": 0, "answer_sha256": "a" * 64,
              "measure_version": 7, "torch": "2.14.1", "python": "3.11.7", "threads": 1, "device": "cuda:0"}
    key = measurement_key(fields)
    assert measurement_key({**fields, "method": "random", "ratio": 8.0, "device": "cuda:1", "seed": "0"}) == key
    for name in MEASUREMENT_FIELDS:
        changed = {**fields, name: "other" if name not in ("seed", "threads") else 5}
        assert measurement_key(changed) != key, name
    with pytest.raises(ValueError, match="answer_sha256"):
        measurement_key({k: v for k, v in fields.items() if k != "answer_sha256"})


def test_a_pruned_model_identity_holds_its_masks_and_its_weights() -> None:
    """A kept weight that is zero trains and a masked one does not: the same state with other masks is another model."""
    from pytest_shrinkbench.identity import answer_digest

    torch.manual_seed(0)
    state = ConvNet().state_dict()
    masks = {"conv.weight": torch.ones_like(state["conv.weight"], dtype=torch.bool)}
    other = {"conv.weight": masks["conv.weight"].clone()}
    other["conv.weight"][0, 0, 0, 0] = False
    assert answer_digest(masks, state) == answer_digest({k: v.clone() for k, v in masks.items()}, dict(state))
    assert answer_digest(other, state) != answer_digest(masks, state)
    moved = {**state, "classifier.bias": state["classifier.bias"] + 1}
    assert answer_digest(masks, moved) != answer_digest(masks, state)
