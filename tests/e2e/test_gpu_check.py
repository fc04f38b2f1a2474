"""The GPU check rehearsed on the CPU at its tiny size, so the one command a lent GPU gets has run before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_every_step_on_the_cpu_and_prints_one_table(shrink_cache: Path, tmp_path: Path) -> None:
    shrink_cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--cache", str(shrink_cache), "--budget", "400"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| step", "| ---"))}
    assert list(rows) == ["cuda-path", "cifar10-resnet20", "latency", "semi-structured"]
    assert all(device == "cpu" for device, *_ in rows.values())
    assert [status for _, status, *_ in rows.values()][:3] == ["ok", "ok", "ok"]
    assert "probe saw its model on cpu in its child" in rows["cuda-path"][3]
    assert "fine-tune" in rows["cifar10-resnet20"][3] and "l1-filter x4" in rows["latency"][3]
    if not torch.cuda.is_available():  # 2:4 kernels need CUDA: the table says so instead of a number
        assert rows["semi-structured"][1] == "unsupported" and "cpu" in rows["semi-structured"][3]
    assert not list(tmp_path.iterdir()), "the check leaves nothing behind where it runs"
