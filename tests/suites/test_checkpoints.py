"""Subjects of the vision suites: absent data, given checkpoints, torch hub weights, cache keys; devices; --shrink-weights parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench.identity import file_sha256 as sha256_of
from pytest_shrinkbench.suites.checkpoints import parse_weights
from pytest_shrinkbench.suites.registry import SUITES


def test_parse_weights(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    resolve = lambda text: tmp_path / text  # noqa: E731
    single = parse_weights(["cifar10-resnet56=a.pt"], resolve, SUITES)
    assert [(c.path, c.tag) for c in single["cifar10-resnet56"]] == [(a, None)], "one checkpoint: no axis, no tag"
    both = parse_weights(["cifar10-resnet56=b.pt", "cifar10-resnet56 = a.pt"], resolve, SUITES)["cifar10-resnet56"]
    assert [c.tag for c in both] == [f"w{sha256_of(b)[:8]}", f"w{sha256_of(a)[:8]}"]
    assert [c.sha256 for c in both] == [sha256_of(b), sha256_of(a)]
    (tmp_path / "a-copy.pt").write_bytes(b"A")
    with pytest.raises(ValueError, match="are the same checkpoint"):
        parse_weights(["cifar10-resnet56=a.pt", "cifar10-resnet56=a-copy.pt"], resolve, SUITES)
