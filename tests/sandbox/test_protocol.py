"""What crosses the boundary is plain data: tensors come back as fresh plain tensors, nothing else gets through."""

from __future__ import annotations

import struct

import pytest
import torch

from pytest_shrinkbench.sandbox.protocol import (
    Answer,
    Call,
    MethodInfo,
    ProtocolError,
    Setup,
    decode,
    encode,
    receive,
    send,
)


def test_messages_round_trip_with_every_tensor_a_fresh_plain_copy() -> None:
    state = {"w": torch.randn(3, 4), "n": torch.tensor(7), "h": torch.randn(2).to(torch.bfloat16), "e": torch.zeros(0, 5)}
    setup = Setup(MethodInfo("mine", "file:/m.py", "abc"), "digits-cnn", "b" * 64, 3, "cpu", 1, torch.randn(5, 1, 8, 8),
                  torch.arange(5), state)
    back = decode(encode(setup))
    assert isinstance(back, Setup) and back.method == setup.method and back.seed == 3
    for name, tensor in state.items():
        assert type(back.state[name]) is torch.Tensor and back.state[name].dtype == tensor.dtype
        assert torch.equal(back.state[name], tensor) and (not tensor.numel() or back.state[name].data_ptr() != tensor.data_ptr())
    assert decode(encode(Call(8.0, 2, None))) == Call(8.0, 2, None)


def test_a_meta_tensor_keeps_its_device_so_the_harness_can_name_it() -> None:
    answer = decode(encode(Answer(masks={"fc1.weight": torch.ones(3, 2, dtype=torch.bool, device="meta")})))
    assert answer.masks["fc1.weight"].device.type == "meta" and answer.masks["fc1.weight"].shape == (3, 2)


class Lying(torch.Tensor):
    pass


@pytest.mark.parametrize("bad", [torch.ones(2).as_subclass(Lying), object(), float("nan"), {1: "not a str key"}])
def test_anything_but_plain_data_is_refused_by_the_sender(bad: object) -> None:
    with pytest.raises(TypeError):
        encode(Answer(masks={"x": bad}))


def _framed(head: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<QQ", len(head), len(body)) + head + body


@pytest.mark.parametrize("data", [
    b"short",
    _framed(b"{not json"),
    _framed(b'{"__kind__": "Popen", "args": "rm -rf /"}'),
    _framed(b'{"__kind__": "Answer", "shell": true}'),
    _framed(b'{"__tensor__": true, "dtype": "float32", "shape": [1000000], "device": "cpu", "start": 0, "size": 4}', b"abcd"),
    _framed(b'{"__tensor__": true, "dtype": "object", "shape": [1], "device": "cpu", "start": 0, "size": 8}', b"12345678"),
    _framed(b'{"__tensor__": true, "dtype": "float32", "shape": [-1], "device": "cpu", "start": 0, "size": 4}', b"abcd"),
    _framed(b"{}", b"trailing bytes the header does not account for") + b"x",
])
def test_a_malformed_or_hostile_message_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


def test_a_child_cannot_make_the_harness_allocate_more_than_the_limit() -> None:
    import os

    read, write = os.pipe()
    os.write(write, struct.pack("<Q", 10**12))
    with pytest.raises(ProtocolError, match="a message of 1000000000000 bytes"):
        receive(read, limit=10**6)
    os.close(read)
    os.close(write)


def test_send_and_receive_frame_messages_on_a_pipe() -> None:
    import os

    read, write = os.pipe()
    send(write, Answer(error="method 'x' raised ValueError: no"))
    os.close(write)
    assert receive(read).error == "method 'x' raised ValueError: no"
    with pytest.raises(EOFError):
        receive(read)
    os.close(read)
