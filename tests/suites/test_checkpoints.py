"""Subjects of the vision suites: absent data, given checkpoints, torch hub weights, cache keys; devices; --shrink-weights parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.identity import state_digest
from pytest_shrinkbench.suites.checkpoints import parse_weights
from pytest_shrinkbench.suites.registry import SUITES
from pytest_shrinkbench.suites.vision_models import LeNet5


def test_parse_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = LeNet5().state_dict(), LeNet5().state_dict()
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    resolve = lambda text: tmp_path / text  # noqa: E731
    single = parse_weights(["mnist-lenet5=a.pt"], resolve, SUITES)
    assert [(c.path, c.tag) for c in single["mnist-lenet5"]] == [(tmp_path / "a.pt", None)], "one checkpoint: no axis, no tag"
    both = parse_weights(["mnist-lenet5=b.pt", "mnist-lenet5 = a.pt"], resolve, SUITES)["mnist-lenet5"]
    assert [c.sha256 for c in both] == [state_digest(b), state_digest(a)], "identified by their tensors"
    assert [c.tag for c in both] == [f"w{state_digest(b)[:8]}", f"w{state_digest(a)[:8]}"]
    # The same weights saved elsewhere, nested as a training script saves them: the same checkpoint.
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in a.items()}}, tmp_path / "a-copy.pth")
    with pytest.raises(ValueError, match="a-copy.pth and .*a.pt are the same checkpoint"):
        parse_weights(["mnist-lenet5=a.pt", "mnist-lenet5=a-copy.pth"], resolve, SUITES)


def test_a_file_torch_refuses_is_tagged_by_its_bytes_and_fails_later(tmp_path: Path) -> None:
    """Not a usage error: the suite's cases fail with the reason when they load it; other suites still run."""
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (checkpoint,) = parse_weights(["mnist-lenet5=junk.pt"], lambda text: tmp_path / text, SUITES)["mnist-lenet5"]
    assert checkpoint.sha256 == sha256_of(tmp_path / "junk.pt")
