"""What crosses the trust boundary, both ways, and the one way it is encoded.

The measuring process and a method's child process exchange length-prefixed messages over pipes.
A message is plain data only: JSON (str, int, float, bool, None, lists, dicts with str keys) in
which each tensor is replaced by a small record (dtype, shape, device, byte range), followed by
the tensors' raw bytes. Decoding parses JSON and copies bytes into fresh, plain ``torch.Tensor``
objects: there is no unpickling at all, so nothing a child sends can run code, name a class
or smuggle a tensor subclass. What a method returns is checked again on the harness's side
(:mod:`pytest_shrinkbench.run.masks`) before any of it touches the harness's own model.

A message is hostile input to the harness. The tensor records must tile the tensor bytes exactly
(disjoint ranges, in order, covering every byte): what the harness allocates is the bytes it
received, once, never a range counted twice. Text a child sends (an answer's ``error`` and
``details``) is bounded and its control characters are written out as escapes (:func:`printable`)
before it can reach a row or a terminal.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch
from torch import Tensor

# The most one message may hold: far more than any model's masks and weights, far less than the machine.
MAX_MESSAGE_BYTES = 16 * 2**30
_HEADER = struct.Struct("<QQ")  # JSON length, tensor bytes length
# How much text of a child's reaches the harness: an answer's one-line error, and its traceback.
MAX_ERROR_CHARS = 2000
MAX_DETAILS_CHARS = 20000
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
    imported itself, so every child inherits it). ``broken`` says why its cases cannot run (its file
    failed to import, or another file claims the same name): each of them fails with that line.
    """

    name: str
    origin: str
    source_hash: str
    baseline: bool = False
    steps: int = 1
    regrowth: bool = False
    pattern: str | None = None
    calibrated: bool = False
    broken: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discover:
    """Harness → a discovery child: import this one ``file:<path>`` or ``module:<name>`` and name its methods."""

    target: str


@dataclass
class Ready:
    """Child → harness, once per case: the method's module is imported (the import has its own deadline)."""


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

    def __post_init__(self) -> None:
        """Whoever built it (a child's reply is decoded through here): the right types, and text that is safe
        to print and store."""
        if not isinstance(self.masks, dict) or not isinstance(self.weights, dict):
            raise TypeError("masks and weights must be dicts")
        if self.error is not None and not isinstance(self.error, str) or not isinstance(self.details, str):
            raise TypeError("error must be a str or None, details a str")
        if self.error is not None:
            self.error = printable(self.error, MAX_ERROR_CHARS)
        self.details = printable(self.details, MAX_DETAILS_CHARS, lines=True, keep="end")


_KINDS = {cls.__name__: cls for cls in (MethodInfo, Discover, Ready, Setup, Call, Answer)}


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
    """A message from bytes: JSON and raw tensor bytes, checked field by field, the tensor records first."""
    if len(data) < _HEADER.size:
        raise ProtocolError("a torn message")
    head_size, body_size = _HEADER.unpack_from(data)
    if _HEADER.size + head_size + body_size != len(data):
        raise ProtocolError("a message whose parts do not add up")
    body = memoryview(data)[_HEADER.size + head_size:]
    try:
        tree = json.loads(bytes(data[_HEADER.size:_HEADER.size + head_size]))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not a plain-data message ({type(exc).__name__})") from None
    try:
        records = [_record(r) for r in _tensor_records(tree)]
        _check_tiling(records, len(body))
        return _typed(tree, lambda record: _tensor(_record(record), body))
    except RecursionError:
        raise ProtocolError("a message nested too deeply") from None


def _tensor_records(value: Any) -> Any:
    """Every tensor record of a decoded JSON tree (iteratively: a tree may be as deep as the parser allowed)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("__tensor__") is True:
                yield item
            else:
                stack.extend(item.values())


@dataclass(frozen=True)
class _Record:
    dtype: torch.dtype
    shape: list[int]
    device: torch.device
    start: int
    size: int


def _record(record: dict[str, Any]) -> _Record:
    """A tensor record, checked: a known dtype, a shape whose bytes are the record's size."""
    try:
        dtype, shape, device = _DTYPES[record["dtype"]], [int(n) for n in record["shape"]], torch.device(record["device"])
        start, size = int(record["start"]), int(record["size"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ProtocolError(f"a malformed tensor record ({exc})") from None
    if any(n < 0 for n in shape):
        raise ProtocolError("a tensor of negative size")
    if device.type == "meta":
        return _Record(dtype, shape, device, 0, 0)
    expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if size != expected or start < 0:
        raise ProtocolError(f"a tensor of shape {shape} and dtype {dtype} with {size} bytes")
    return _Record(dtype, shape, device, start, size)


def _check_tiling(records: list[_Record], body_size: int) -> None:
    """The records' byte ranges follow each other without gap or overlap and cover the body exactly, so
    decoding allocates what was received, once (an empty tensor takes no bytes, wherever it points)."""
    end = 0
    for record in sorted((r for r in records if r.size), key=lambda r: r.start):
        if record.start != end:
            raise ProtocolError(f"tensor records {'overlap' if record.start < end else 'leave a gap'} at byte {min(record.start, end)}")
        end += record.size
    if end != body_size or any(r.start > body_size for r in records):
        raise ProtocolError(f"tensor records cover {end} of the message's {body_size} tensor bytes")


def _tensor(record: _Record, body: memoryview) -> Tensor:
    dtype, shape, device, start, size = record.dtype, record.shape, record.device, record.start, record.size
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
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


def read_exactly(fd: int, size: int, deadline: float | None = None) -> bytes:
    """``size`` bytes from ``fd``; raises EOFError when the other side closed the pipe first, TimeoutError when
    ``deadline`` (a ``time.monotonic()`` instant) passes first."""
    chunks, left = [], size
    while left:
        if deadline is not None:
            _wait_readable(fd, deadline)
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _wait_readable(fd: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if poller.poll(min(left, 3600) * 1000):
            return


def receive(fd: int, limit: int = MAX_MESSAGE_BYTES, deadline: float | None = None) -> Any:
    """The next message on ``fd`` (at most ``limit`` bytes: a child cannot make the harness allocate more;
    before ``deadline``, a ``time.monotonic()`` instant, if one is given)."""
    (size,) = struct.unpack("<Q", read_exactly(fd, 8, deadline))
    if size > limit:
        raise ProtocolError(f"a message of {size} bytes (the limit is {limit})")
    return decode(read_exactly(fd, size, deadline))


# Characters written out as escapes: control characters (ANSI escape sequences start with one), format characters
# (bidirectional overrides that reorder what a terminal shows), surrogates, private-use and unassigned ones.
_UNSAFE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def printable(text: str, limit: int, lines: bool = False, keep: str = "start") -> str:
    """``text`` safe for a terminal, a row and a log: every control or format character written out as an
    escape (``\\x1b``; newlines too unless ``lines``), at most ``limit`` characters in all (the start kept, or
    the ``end`` for a traceback) with a note of the original length where cut. Applying it twice changes nothing."""
    raw = text[:limit] if keep == "start" else text[-limit:]  # an escape only lengthens: nothing beyond survives
    safe = raw if raw.isascii() and raw.isprintable() else "".join(
        ch if (lines and ch == "\n") or unicodedata.category(ch) not in _UNSAFE else ascii(ch)[1:-1] for ch in raw)
    if len(text) <= limit and len(safe) <= limit:
        return safe
    note, room = f"[{len(text)} characters in all, cut]", max(limit - 48, 0)
    return f"{safe[:room]} {note}" if keep == "start" else f"{note} {safe[-room:]}"
