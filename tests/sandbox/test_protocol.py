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


def _record(start: int, size: int) -> dict:
    return {"__tensor__": True, "dtype": "uint8", "shape": [size], "device": "cpu", "start": start, "size": size}


def _answer(records: dict, body: bytes) -> bytes:
    import json

    head = {"__kind__": "Answer", "masks": records, "weights": {}, "error": None, "details": ""}
    return _framed(json.dumps(head).encode(), body)


@pytest.mark.parametrize("records, body, why", [
    ({f"m{i}": _record(0, 1024) for i in range(300)}, bytes(1024), "tensor records overlap at byte 0"),
    ({"a": _record(0, 512), "b": _record(256, 512)}, bytes(768), "tensor records overlap at byte 256"),
    ({"a": _record(0, 256), "b": _record(512, 256)}, bytes(768), "tensor records leave a gap at byte 256"),
    ({"a": _record(0, 256)}, bytes(1024), "tensor records cover 256 of the message's 1024 tensor bytes"),
])
def test_tensor_records_must_tile_the_bytes_received_so_nothing_is_allocated_twice(records: dict, body: bytes, why: str) -> None:
    """The finding: 300 records over one range made the harness allocate 300 times what it received."""
    with pytest.raises(ProtocolError, match=why):
        decode(_answer(records, body))


def test_records_that_tile_the_bytes_in_any_order_decode() -> None:
    answer = decode(_answer({"b": _record(3, 2), "a": _record(0, 3), "empty": _record(5, 0)}, b"abcde"))
    assert bytes(answer.masks["a"].numpy()) == b"abc" and bytes(answer.masks["b"].numpy()) == b"de"
    assert answer.masks["empty"].numel() == 0


def test_a_message_nested_too_deeply_is_a_protocol_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError):
        decode(_framed(b"[" * 200_000 + b"]" * 200_000))


@pytest.mark.parametrize("error", [{"a": 1}, ["x"], 3])
def test_an_answers_error_must_be_text(error: object) -> None:
    import json

    head = {"__kind__": "Answer", "masks": {}, "weights": {}, "error": error, "details": ""}
    with pytest.raises(ProtocolError, match="error must be a str"):
        decode(_framed(json.dumps(head).encode()))


def test_an_answers_text_is_bounded_and_its_control_characters_are_written_out() -> None:
    """Escape codes would reach the terminal (a method could clear it and draw a leaderboard of its own)."""
    from pytest_shrinkbench.sandbox.protocol import MAX_DETAILS_CHARS, MAX_ERROR_CHARS

    fake = "\x1b[2J\x1b[H\u202eleaderboard\r\n"
    answer = decode(encode(Answer(error=fake + "A" * 10**6, details="frame\n" * 10**5 + fake)))
    assert answer.error.startswith("\\x1b[2J\\x1b[H\\u202eleaderboard\\r\\nAAA")
    assert answer.error.endswith(f"[{len(fake) + 10**6} characters in all, cut]")
    assert not any(ord(c) < 32 or c == "\u202e" for c in answer.error)
    assert len(answer.error) <= MAX_ERROR_CHARS and len(answer.details) <= MAX_DETAILS_CHARS
    assert answer.details.endswith("leaderboard\\r\n") and "\x1b" not in answer.details, "tracebacks keep their lines and end"
