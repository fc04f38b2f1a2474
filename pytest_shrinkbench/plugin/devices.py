"""Devices: ``--shrink-device auto|cpu|cuda``, and one GPU per xdist worker.

Under ``-n N`` on a machine with G visible GPUs, worker ``gwK`` uses GPU ``K mod G``: the
controller lists the visible GPUs (respecting an outer ``CUDA_VISIBLE_DEVICES``) and hands the
list to each worker, which narrows its own ``CUDA_VISIBLE_DEVICES`` to one entry in its
``pytest_configure``, before anything in it initializes CUDA (the driver reads the variable once).
"""

from __future__ import annotations

import os
import warnings

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
WORKER_GPUS_KEY = "shrinkbench_gpus"
# cuBLAS is deterministic only with a fixed workspace; the variable must be set before CUDA initializes.
CUBLAS_WORKSPACE = ":4096:8"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs).

    An outer ``CUDA_VISIBLE_DEVICES`` is respected as given (its entries are passed on unchanged);
    otherwise every GPU torch sees. Initializes CUDA in this process: call it on the controller.
    """
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer is not None:
        return [entry.strip() for entry in outer.split(",") if entry.strip()]
    if not torch.cuda.is_available():
        return []
    return [str(index) for index in range(torch.cuda.device_count())]


def worker_index(worker_id: str) -> int:
    """``gw3`` → 3."""
    digits = worker_id.removeprefix("gw")
    if not digits.isdigit():
        raise ValueError(f"unexpected xdist worker id {worker_id!r}")
    return int(digits)


def gpu_for_worker(worker_id: str, gpus: list[str]) -> str | None:
    """The GPU worker ``worker_id`` uses: worker k gets GPU k mod G (None without GPUs)."""
    return gpus[worker_index(worker_id) % len(gpus)] if gpus else None


def pin_worker_gpu(workerinput: dict) -> str | None:
    """In an xdist worker: narrow ``CUDA_VISIBLE_DEVICES`` to this worker's GPU; return it (None: no GPU list).

    Must run before CUDA initializes in the worker; if something initialized it already, the
    variable can no longer take effect, and a warning says so.
    """
    gpu = gpu_for_worker(workerinput.get("workerid", "gw0"), list(workerinput.get(WORKER_GPUS_KEY) or []))
    if gpu is None:
        return None
    if torch.cuda.is_initialized():
        warnings.warn(f"shrinkbench: CUDA was initialized before worker {workerinput.get('workerid')} could pin GPU {gpu}")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def resolve(requested: str) -> str:
    """``auto`` → ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is an error."""
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"--shrink-device must be one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise ValueError("--shrink-device=cuda, but torch sees no usable CUDA device")
        return "cpu"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts, after this
    # Same seed, same numbers: deterministic cuDNN convolutions (forward passes are then bit-repeatable,
    # which invariants 4 and 5 compare), and no autotuning that could pick a different kernel per run.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return "cuda"
