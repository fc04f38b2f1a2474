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
# A row's setup: everything in the key except the case's coordinates (suite, method, ratio, seed).
SETUP_FIELDS = ("method_hash", "base_sha256", "recipe_hash", "measure_version", "torch", "python", "threads", "device")


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
    return {f: normal(f, row.get(f)) for f in KEY_FIELDS}


def case_key(row: dict[str, Any]) -> str:
    """The case key of a row (or of a case's identity before it runs): a hash of :data:`KEY_FIELDS`."""
    blob = json.dumps([key_fields(row)[f] for f in KEY_FIELDS])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def setup_of(row: dict[str, Any]) -> tuple:
    """A row's setup (:data:`SETUP_FIELDS`, normalized): rows of one setup come from the same code and base model."""
    return tuple(key_fields(row)[f] for f in SETUP_FIELDS)


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
    """The measurement key of a one-shot case (:data:`MEASUREMENT_FIELDS`, normalized like the case key)."""
    missing = [f for f in MEASUREMENT_FIELDS if fields.get(f) is None]
    if missing:
        raise ValueError(f"a measurement key needs {missing}")
    blob = json.dumps(["measurement"] + [normal(f, fields[f]) for f in MEASUREMENT_FIELDS])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
