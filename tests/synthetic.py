"""Synthetic result rows for tests of the store, the report and the gate (no torch, no training)."""

from __future__ import annotations

from typing import Any

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
