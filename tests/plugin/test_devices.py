"""Subjects of the vision suites: absent data, given checkpoints, torch hub weights, cache keys; devices; --shrink-weights parsing."""

from __future__ import annotations

import os

import pytest
import torch

from pytest_shrinkbench.plugin import devices


def test_workers_take_gpus_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = ["0", "1", "2"]
    assert [devices.gpu_for_worker(f"gw{k}", gpus) for k in range(5)] == ["0", "1", "2", "0", "1"]
    assert devices.gpu_for_worker("gw4", []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-9a1b")
    assert devices.visible_gpus() == ["3", "GPU-9a1b"], "an outer restriction is respected, entries passed on as given"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == []
    assert devices.pin_worker_gpu({"workerid": "gw3", devices.WORKER_GPUS_KEY: ["4", "6"]}) == "6"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert devices.pin_worker_gpu({"workerid": "gw3"}) is None


def test_device_resolution() -> None:
    assert devices.resolve("cpu") == "cpu"
    assert devices.resolve("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="must be one of auto, cpu, cuda"):
        devices.resolve("gpu")
