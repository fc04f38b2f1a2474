"""Shards: a run's cases split into N deterministic, balanced slices, and the manifest each shard leaves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_shrinkbench.identity import CaseSpec
from pytest_shrinkbench.shards import Shard, manifest_path, plan_digest, read_manifest, write_manifest

METHODS = ("global-magnitude", "layer-magnitude", "global-gradient", "layer-gradient", "random", "l1-filter", "gradual-magnitude")
RATIOS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def cifar_run() -> list[CaseSpec]:
    """The issue's example: CIFAR-10 ResNet-56 x 7 baselines x 6 ratios x 3 seeds = 126 cases, plus a second suite."""
    return [CaseSpec(m, s, r, seed) for s in ("cifar10-resnet56", "digits-cnn") for m in METHODS for r in RATIOS for seed in (0, 1, 2)]


@pytest.mark.parametrize("text, shard", [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3 / 3 ", Shard(3, 3))])
def test_shard_is_k_of_n(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard and str(shard) == text.replace(" ", "")


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "1/0", "a/b", "-1/2", "1/2/3", ""])
def test_a_shard_outside_1_to_n_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be K/N with 1 <= K <= N"):
        Shard.parse(text)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 11, 252, 300])
def test_shards_partition_the_run_in_balanced_slices(count: int) -> None:
    every = cifar_run()
    slices = [Shard(k, count).select(every) for k in range(1, count + 1)]
    assert sorted((c for s in slices for c in s), key=every.index) == every, "every case in exactly one shard"
    sizes = [len(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1 and sizes == [Shard(k, count).size(len(every)) for k in range(1, count + 1)]
    # What a case costs depends on its suite and its method: every shard gets its share of each, within one.
    for group in ({c.suite for c in every}, {(c.suite, c.method) for c in every}):
        for value in group:
            counts = [sum(1 for c in s if value in (c.suite, (c.suite, c.method))) for s in slices]
            assert max(counts) - min(counts) <= 1, (value, counts)


def test_the_slice_ignores_option_and_collection_order() -> None:
    """Machines given the options in another order, or collecting in another order, run the same cases."""
    every = cifar_run()
    shuffled = every[:]
    random.Random(0).shuffle(shuffled)
    for k in (1, 2, 3):
        mine = Shard(k, 3).select(every)
        assert set(Shard(k, 3).select(shuffled)) == set(mine)
        assert Shard(k, 3).select(shuffled) == [c for c in shuffled if c in set(mine)], "the order given is kept"
    assert plan_digest(shuffled) == plan_digest(every) != plan_digest(every[:-1])


def test_the_manifest_records_the_shard_and_the_plan(tmp_path: Path) -> None:
    every = cifar_run()
    path = write_manifest(tmp_path / "shard-2", Shard(2, 3), every)
    assert path == manifest_path(tmp_path / "shard-2", Shard(2, 3)) and path.name == "shard-2-of-3.json"
    manifest = read_manifest(path)
    assert (manifest.shard, manifest.total, manifest.plan) == (Shard(2, 3), 252, plan_digest(every))
    assert list(manifest.cases) == [c.id for c in Shard(2, 3).select(every)] and len(manifest.cases) == 84
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="shard-2-of-3.json: unreadable shard manifest"):
        read_manifest(path)
