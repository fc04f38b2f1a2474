"""What crosses the trust boundary, both ways, and the one way it is encoded.

The measuring process and a method's child process exchange length-prefixed messages over pipes.
A message is plain data only: JSON (str, int, float, bool, None, lists, dicts with str keys) in
which each tensor is replaced by a small record (dtype, shape, device, byte range), followed by
the tensors' raw bytes. Decoding parses JSON and copies bytes into fresh, plain ``torch.Tensor``
objects: there is no unpickling at all, so nothing a child sends can run code, name a class
or smuggle a tensor subclass. What a method returns is checked again on the harness's side
(:mod:`pytest_shrinkbench.run.masks`) before any of it touches the harness's own model.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch
from torch import Tensor

# The most one message may hold: far more than any model's masks and weights, far less than the machine.
MAX_MESSAGE_BYTES = 16 * 2**30
_HEADER = struct.Struct("<QQ")  # JSON length, tensor bytes length
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
)}


class ProtocolError(Exception):
    """A message that is not what the protocol allows (torn, too large, or of the wrong shape)."""


@dataclass(frozen=True)
class MethodInfo:
    """A method as the harness knows it without importing it: found by discovery in a child process.

    ``origin`` says where the child finds it: ``module:<name>`` (an installed package's module),
    ``file:<path>`` (a method file), or ``registered`` (defined in a ``conftest.py``, which pytest
    imported itself, so every child inherits it).
    """

    name: str
    origin: str
    source_hash: str
    baseline: bool = False
    steps: int = 1
    regrowth: bool = False
    pattern: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discover:
    """Harness → a discovery child: import the method packages and these folders' method files."""

    folders: list[str]


@dataclass
class Setup:
    """Once per case, harness → child: which method, on which suite's model, with which data."""

    method: MethodInfo
    suite: str
    base: str  # the base weights' identity: the fork server may hold this model built already
    seed: int
    device: str
    threads: int
    inputs: Tensor  # the case's batch of training data
    targets: Tensor
    state: dict[str, Tensor] | None = None  # the base weights, when the child must build the model itself
    prunable: list[str] | None = None  # the harness's traced prunable weights, with the suite's exclusions
    input_dims: dict[str, int] | None = None  # each one's input dimension (N:M groups run along it)
    calibration: Tensor | None = None  # the suite's calibration windows for this case's seed (ctx.calibration)
    basis: str = "model"  # what the requested compression divides: "model" or "prunable" (the suite's)


@dataclass
class Call:
    """Each time the method is called, harness → child: the target and, after the first call, the
    model's current weights (a gradual method sees what fine-tuning made of them)."""

    compression: float
    step: int
    state: dict[str, Tensor] | None = None


@dataclass
class Answer:
    """Child → harness: the method's masks and new weights, or why it produced none."""

    masks: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # one line: the method raised, returned something else, or broke a rule
    details: str = ""  # the method's traceback, for the person debugging it


_KINDS = {cls.__name__: cls for cls in (MethodInfo, Discover, Setup, Call, Answer)}


def encode(message: Any) -> bytes:
    """``message`` as bytes; raises TypeError on anything but plain data and plain tensors."""
    chunks: list[bytes] = []
    offset = [0]

    def plain(value: Any) -> Any:
        if type(value).__name__ in _KINDS and type(value) is _KINDS[type(value).__name__]:
            return {"__kind__": type(value).__name__, **{f.name: plain(getattr(value, f.name)) for f in fields(value)}}
        if isinstance(value, Tensor):
            if type(value) not in (Tensor, torch.nn.Parameter):
                raise TypeError(f"a {type(value).__name__} is not a plain tensor")
            record = {"__tensor__": True, "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                      "device": str(value.device), "start": offset[0], "size": 0}
            if value.device.type != "meta":
                data = value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
                chunks.append(data)
                record["size"] = len(data)
                offset[0] += len(data)
            return record
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError("dict keys must be str")
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
            return value
        raise TypeError(f"a {type(value).__name__} is not plain data")

    head = json.dumps(plain(message), separators=(",", ":")).encode()
    body = b"".join(chunks)
    return _HEADER.pack(len(head), len(body)) + head + body


def decode(data: bytes) -> Any:
    """A message from bytes: JSON and raw tensor bytes, checked field by field."""
    if len(data) < _HEADER.size:
        raise ProtocolError("a torn message")
    head_size, body_size = _HEADER.unpack_from(data)
    if _HEADER.size + head_size + body_size != len(data):
        raise ProtocolError("a message whose parts do not add up")
    body = memoryview(data)[_HEADER.size + head_size:]
    try:
        tree = json.loads(bytes(data[_HEADER.size:_HEADER.size + head_size]))
    except ValueError as exc:
        raise ProtocolError(f"not a plain-data message ({exc})") from None
    return _typed(tree, lambda record: _tensor(record, body))


def _tensor(record: dict[str, Any], body: memoryview) -> Tensor:
    try:
        dtype, shape, device = _DTYPES[record["dtype"]], [int(n) for n in record["shape"]], torch.device(record["device"])
        start, size = int(record["start"]), int(record["size"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ProtocolError(f"a malformed tensor record ({exc})") from None
    if any(n < 0 for n in shape):
        raise ProtocolError("a tensor of negative size")
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if size != expected or start < 0 or start + size > len(body):
        raise ProtocolError(f"a tensor of shape {shape} and dtype {dtype} with {size} bytes")
    flat = torch.frombuffer(bytearray(body[start:start + size]), dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
    try:
        return flat.view(dtype).reshape(shape).to(device)
    except RuntimeError as exc:  # a device this process does not have
        raise ProtocolError(f"a tensor on {device} ({str(exc).splitlines()[0]})") from None


def _typed(value: Any, tensor: Callable[[dict[str, Any]], Tensor]) -> Any:
    if isinstance(value, list):
        return [_typed(v, tensor) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("__tensor__") is True:
        return tensor(value)
    members = {k: _typed(v, tensor) for k, v in value.items() if k != "__kind__"}
    kind = value.get("__kind__")
    if kind is None:
        return members
    if kind not in _KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    try:
        return _KINDS[kind](**members)
    except TypeError as exc:
        raise ProtocolError(f"malformed {kind}: {exc}") from None


def send(fd: int, message: Any) -> None:
    data = encode(message)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; raises EOFError when the other side closed the pipe first."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """The next message on ``fd`` (at most ``limit`` bytes: a child cannot make the harness allocate more)."""
    (size,) = struct.unpack("<Q", read_exactly(fd, 8))
    if size > limit:
        raise ProtocolError(f"a message of {size} bytes (the limit is {limit})")
    return decode(read_exactly(fd, size))
