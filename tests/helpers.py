"""Shared test helpers: synthetic result rows (no torch, no training), reading a run's rows, small models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytest_shrinkbench.identity import protocol_hash, state_digest
from pytest_shrinkbench.measure.structured import Link, channel_links, weight_links
from pytest_shrinkbench.prunable import Trace, trace_model

SETUP = {
    "base_sha256": "b" * 64, "recipe_hash": "r" * 12, "torch": "2.14.1", "python": "3.11.7",
    "threads": 1, "device": "cpu", "platform": "Linux",
}


def row(method: str, ratio: float, seed: int, top1: float | None = None, status: str = "passed", suite: str = "digits-mlp", **extra: Any) -> dict[str, Any]:
    """A complete row as the plugin writes it; metrics derived from ``top1`` unless given."""
    r: dict[str, Any] = {
        **SETUP, "method": method, "suite": suite, "ratio": float(ratio), "seed": seed, "status": status,
        "method_hash": f"{method}-v1", "message": None if status == "passed" else f"[method={method}] planted failure",
        "top1_base": 0.97, "top5_base": 1.0, "params_total": 50610, "reused": False,
    }
    if status == "passed":
        r.update(
            top1=top1, top5=min(1.0, top1 + 0.02), top1_pre=top1 - 0.1, top5_pre=top1,
            params_nonzero=round(50610 / ratio), compression=float(ratio), flops_dense=100400,
            flops_sparse=100400 / ratio, speedup=float(ratio) * 1.05 if ratio > 1 else 1.0,
        )
    r.update(extra)
    return r


# A language model's protocol as a suite records it (the field names are the suite's; the harness only hashes and shows them).
PROTOCOL = {
    "corpus_sha256": "c0ffee" + "5" * 58, "context_length": 128, "stride": 128, "calibration_count": 128,
    "calibration_length": 128, "calibration_source": "train", "calibration_seed": 0, "exclude": ["lm_head"],
    "dtype": "float32", "transformers": None,
}
PRUNABLE_SHARE = 0.8  # of a language model's parameters: embeddings and lm_head are the rest


def lm_row(method: str, ratio: float, seed: int, perplexity: float | None = None, status: str = "passed",
           protocol: dict[str, Any] | None = PROTOCOL, **extra: Any) -> dict[str, Any]:
    """A language-model row: ranked by perplexity, its ratio counted on the prunable weights, measured by ``protocol``."""
    r = row(method, ratio, seed, None if perplexity is None else round(0.6 - perplexity / 20, 6), status, suite="pydoc-lm",
            metric="perplexity", compression_basis="prunable", protocol=protocol, protocol_hash=protocol_hash(protocol),
            perplexity_base=3.05)
    if status == "passed":
        r.update(perplexity=perplexity, perplexity_pre=perplexity, compression_prunable=float(ratio),
                 compression=1 / (1 - PRUNABLE_SHARE * (1 - 1 / ratio)))
    r.update(extra)
    return r


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU())
        self.classifier = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.classifier(self.body(F.adaptive_avg_pool2d(x, 4)))


def tensors_sha256(path: Path) -> str:
    """The identity the plugin gives a checkpoint file: the hash of the tensors it holds, not of its bytes."""
    return state_digest(torch.load(path, weights_only=True))


def run_files(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of each run file (``run-*.jsonl``) in a results folder, by file name, in the order written."""
    return {f.name: [json.loads(line) for line in f.read_text().splitlines()] for f in sorted(Path(folder).glob("*.jsonl"))}


def only_run(folder: Path) -> list[dict[str, Any]]:
    """The rows of the one run file a results folder must hold (a session that ran once)."""
    files = run_files(folder)
    assert len(files) == 1, list(files)
    return next(iter(files.values()))


def result_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of every run file in a results folder."""
    return [row for rows in run_files(folder).values() for row in rows]


def rows_by_method(folder: Path) -> dict[str, dict[str, Any]]:
    """The rows of a results folder by method name (for sessions with one case per method)."""
    return {row["method"]: row for row in result_rows(folder)}


def traced(model: nn.Module, shape: tuple[int, ...]) -> tuple[Trace, dict[str, torch.Tensor], dict[str, Link] | None]:
    """What a subject computes of a model once: its trace on one input of ``shape``, its parameters by name, and its
    channel links by weight name (None where torch.fx cannot trace it)."""
    links = channel_links(model)
    return (trace_model(model, torch.zeros(1, *shape)), dict(model.named_parameters()),
            weight_links(model, links) if links is not None else None)


# Method code that searches its own process's memory for a secret (a signing key), knowing only its first bytes and
# its hash (SHRINKBENCH_TEST_NEEDLE, or needle.json beside the method file): the secret itself is never handed to the
# process searched.
MEMORY_SEARCH = '''
import hashlib, json, os

def holds_the_secret():
    needle = os.environ.get("SHRINKBENCH_TEST_NEEDLE")
    if needle is None:  # a walled child gets an allow-listed environment: the test leaves the needle beside the method
        with open(os.path.join(os.path.dirname(__file__), "needle.json")) as handle:
            needle = handle.read()
    needle = json.loads(needle)
    prefix, digest = bytes.fromhex(needle["prefix"]), needle["digest"]
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            for pattern, size, raw in ((prefix, 32, lambda b: b), (prefix.hex().encode(), 64, lambda b: bytes.fromhex(b.decode()))):
                at = data.find(pattern)
                while at >= 0:
                    try:
                        if hashlib.sha256(raw(data[at:at + size])).hexdigest() == digest:
                            return True
                    except ValueError:
                        pass
                    at = data.find(pattern, at + 1)
    return False
'''


def needle(secret: bytes) -> str:
    """What MEMORY_SEARCH is told of ``secret``: its first four bytes and its sha256 (JSON)."""
    return json.dumps({"prefix": secret[:4].hex(), "digest": hashlib.sha256(secret).hexdigest()})
