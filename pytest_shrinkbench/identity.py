"""Identity, in one place: what a case is, what its numbers depend on, and the key that names its result.

A stored result is reused only when everything here is equal, so every module that stores, reuses,
merges or compares results (the store, the recorder, the report, the gate) derives identity from
this module and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

# The version of what a case measures and how (invariants, FLOPs accounting, row keys). It is part of
# every result's identity in the store: bump it whenever a change would alter a stored number, so
# old rows are never reused as if measured by the new rules. 2: structured FLOPs accounting.
# 3: gradual methods prune after scheduled optimizer steps, no longer at epoch ends.
# 4: depthwise convs pass removed channels through in the structured FLOPs (and l1-filter's masks).
# 5: methods run in a child process; the harness reseeds torch's RNG with the case's seed before fine-tuning,
#    so a method can no longer advance the RNG that dropout draws from (suites with dropout change).
# 6: an augmenting suite's pruning batch (CIFAR-10's random crops and flips) is drawn with torch's RNG seeded by
#    the case's seed; in 5 it followed whatever the process had drawn before (other cases on the same worker).
# 7: a case's fresh models (the invariant checks') are copies of one built once, so a check in the middle of a
#    gradual method's fine-tuning no longer draws from torch's RNG (its dropout and augmentation draws change).
MEASURE_VERSION = 7

# What makes two results interchangeable: the same method code on the same base weights, recipe,
# ratio and seed, computed by the same software with the same thread count on the same kind of device.
KEY_FIELDS = (
    "method", "method_hash", "suite", "base_sha256", "recipe_hash", "ratio", "seed",
    "measure_version", "torch", "python", "threads", "device",
)
# Fields that join a row's key and setup only when the row has them, after the others, each named: what the numbers
# also depend on for some suites (what a suite keeps out of pruning; a language model's protocol: corpus, context
# length, calibration, ...), while every row of a suite without them keeps exactly the key it always had.
OPTIONAL_KEY_FIELDS = ("prunable_scope", "protocol_hash")
# A row's setup: everything in the key except the case's coordinates (suite, method, ratio, seed).
SETUP_FIELDS = ("method_hash", "base_sha256", "recipe_hash", "measure_version", "torch", "python", "threads", "device")
PROTOCOL_HASH_CHARS = 12


@dataclass(frozen=True)
class CaseSpec:
    """The identity of a case; everything else about it is pinned by the suite."""

    method: str
    suite: str
    ratio: float
    seed: int
    weights: str | None = None  # tag of the base checkpoint when a suite has several (--shrink-weights)

    @property
    def id(self) -> str:
        """Test id, e.g. ``global-magnitude-digits-cnn-x8-seed1`` (``...-seed1-w3f2a9c1d`` with a checkpoint tag)."""
        tag = f"-{self.weights}" if self.weights else ""
        return f"{self.method}-{self.suite}-x{self.ratio:g}-seed{self.seed}{tag}"

    @property
    def label(self) -> str:
        """How failure messages name the case."""
        tag = f" weights={self.weights}" if self.weights else ""
        return f"method={self.method} suite={self.suite} ratio=x{self.ratio:g} seed={self.seed}{tag}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, row: dict[str, Any]) -> CaseSpec:
        """The case a result row belongs to."""
        return cls(row["method"], row["suite"], normal("ratio", row["ratio"]), normal("seed", row["seed"]), row.get("weights"))


def environment(device: torch.device) -> dict[str, Any]:
    """Library versions and hardware recorded with every result (numbers from different stacks differ)."""
    return {
        "measure_version": MEASURE_VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def normal(field: str, value: Any) -> Any:
    """A key field's value in one canonical form (JSON round trips turn 8.0 into 8, tuples into lists)."""
    if value is None:
        return None
    if field == "ratio":
        return float(value)
    if field in ("seed", "threads"):
        return int(value)
    if field == "device":
        return str(value).split(":")[0]  # cuda:0 and cuda:1 give the same numbers; cpu and cuda do not
    return str(value)


def key_fields(row: dict[str, Any]) -> dict[str, Any]:
    """:data:`KEY_FIELDS`, normalized, then those of :data:`OPTIONAL_KEY_FIELDS` the row has."""
    fields = {f: normal(f, row.get(f)) for f in KEY_FIELDS}
    fields.update({f: normal(f, row[f]) for f in OPTIONAL_KEY_FIELDS if row.get(f) is not None})
    return fields


def case_key(row: dict[str, Any]) -> str:
    """The case key of a row (or of a case's identity before it runs): a hash of its :func:`key_fields`, the
    optional ones with their names."""
    fields = key_fields(row)
    values: list[Any] = [fields[f] for f in KEY_FIELDS] + [[f, fields[f]] for f in OPTIONAL_KEY_FIELDS if f in fields]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]


def prunable_scope(exclude: tuple[str, ...], embeddings: bool) -> str | None:
    """What a suite keeps out of (or lets into) pruning beyond the default, as a short hash; None for the default
    (nothing excluded, embeddings not pruned), so rows of suites that change nothing keep their keys."""
    if not exclude and not embeddings:
        return None
    blob = json.dumps({"exclude": sorted(exclude), "embeddings": embeddings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def setup_of(row: dict[str, Any]) -> tuple:
    """A row's setup (:data:`SETUP_FIELDS` and the optional key fields it has, normalized): rows of one setup come
    from the same code and base model, measured by the same protocol."""
    fields = key_fields(row)
    return tuple(fields[f] for f in (*SETUP_FIELDS, *OPTIONAL_KEY_FIELDS) if f in fields)


def protocol_hash(protocol: Mapping[str, Any] | None) -> str | None:
    """The short identity of a measuring protocol (the ``protocol`` row field): a hash of its canonical JSON
    (sorted keys, so the order a suite lists them in does not matter); ``None`` for a suite without one.
    Its values must be plain JSON (str, int, float, bool, None, lists, dicts), as the row stores them: anything
    else raises ``TypeError`` rather than hashing a text form the stored row would not have."""
    if protocol is None:
        return None
    blob = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:PROTOCOL_HASH_CHARS]


_ABSENT = object()  # a protocol field one of two protocols lacks


def protocol_differences(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """The protocol fields whose values differ between ``a`` and ``b`` (a field one lacks differs), sorted."""
    a, b = a or {}, b or {}
    return sorted(name for name in a.keys() | b.keys() if a.get(name, _ABSENT) != b.get(name, _ABSENT))



def coordinates(row: dict[str, Any]) -> tuple:
    """Where a row sits in the grid: suite, method, ratio, seed."""
    return (row.get("suite"), row.get("method"), normal("ratio", row.get("ratio")), normal("seed", row.get("seed")))


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A model's identity: sha256 (hex) of its tensors' names, dtypes, shapes and bytes, in sorted-name order.

    Never a file's bytes: ``torch.save`` writes the archive under a folder named after the file, so the
    same weights saved under two names (or through a temporary file named by process id) hash apart,
    and a fresh cache, a CI runner or a cluster node would reuse nothing. Hashing the tensors gives the
    same identity to the same weights wherever and however they were saved. Each tensor is framed by a
    header that states its byte count, so no two different states can share a byte stream. Bytes are
    taken as the machine stores them (little-endian on every platform torch ships for).
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.layout != torch.strided:
            raise ValueError(f"state entry {name!r} is a {tensor.layout} tensor: only dense tensors have an identity here")
        flat = tensor.to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), len(data)])
        digest.update(header.encode() + b"\n")
        digest.update(data)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes: the integrity check of downloaded files whose names carry a hash (torch hub).
    Never a model's identity (see :func:`state_digest`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- Content-addressed measurement (issue 25) ----
# What a one-shot case's measurements after pruning are a function of: the subject (suite and base weights),
# the recipe, the seed, the model exactly as the method's answer left it (``answer_sha256``: its masks and every
# tensor of its state after the answer was applied, see :func:`answer_digest`), MEASURE_VERSION and the
# environment fields of the case key. Not the method, not the ratio: two cases equal in all of these fine-tune
# and evaluate the same tensors with the same data order, so they are one computation.
MEASUREMENT_FIELDS = (
    "suite", "base_sha256", "recipe_hash", "seed", "answer_sha256", "measure_version", "torch", "python", "threads", "device",
)


def answer_digest(masks: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """The identity of a pruned model: its masks and its whole state (new weights, zeros and buffers included).
    Both count: a kept weight that is zero trains, a masked one does not."""
    return state_digest({**{f"mask:{n}": m for n, m in masks.items()}, **{f"state:{n}": t for n, t in state.items()}})


def measurement_key(fields: Mapping[str, Any]) -> str:
    """The measurement key of a one-shot case (:data:`MEASUREMENT_FIELDS`, and the :data:`OPTIONAL_KEY_FIELDS` it has,
    such as a language model's protocol: its context length changes the perplexity; normalized like the case key)."""
    missing = [f for f in MEASUREMENT_FIELDS if fields.get(f) is None]
    if missing:
        raise ValueError(f"a measurement key needs {missing}")
    values: list[Any] = ["measurement"] + [normal(f, fields[f]) for f in MEASUREMENT_FIELDS]
    values += [[f, normal(f, fields[f])] for f in OPTIONAL_KEY_FIELDS if fields.get(f) is not None]  # e.g. a protocol
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]
