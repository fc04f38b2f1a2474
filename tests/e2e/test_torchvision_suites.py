"""A user suite built on a torchvision model (ResNet-18, weights=None) runs end to end, structured FLOPs included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from pytest_shrinkbench.measure.flops import sparse_flops
from pytest_shrinkbench.measure.structured import (
    channel_links,
    removed_channels,
    structured_flops,
    weight_links,
)
from pytest_shrinkbench.prunable import prunable_modules, trace_model
from tests.helpers import result_rows, tensors_sha256
from tests.measure.test_torchvision_models import (
    RESNET18_4_PARAMS,
    SQUEEZENET_4_PARAMS,
    counted_flops,
    resnet18_macs,
)

RUN = ["--shrink-seeds=0", "-p", "no:randomly", "--shrink-store=none", "--shrink-ratios=4"]


# Noise images with one bright quadrant, the class saying which: ResNet-18 learns it in two epochs.
CONFTEST = '''
import torch
import torchvision
from torch.utils.data import TensorDataset

from pytest_shrinkbench import Recipe, suite


def quadrants(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    bright = torch.zeros(4, 1, 32, 32)
    for q in range(4):
        bright[q, :, 16 * (q // 2):16 * (q // 2) + 16, 16 * (q % 2):16 * (q % 2) + 16] = 1.0
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g) + bright[y], y)


@suite("quadrants-resnet18", train=lambda: quadrants(192, 0), test=quadrants(64, 1),
       base=Recipe("adam", lr=1e-3, epochs=2, batch_size=32),
       finetune=Recipe("adam", lr=1e-4, epochs=1, batch_size=64))
def build():
    """torchvision's ResNet-18, no pretrained weights, 4 classes."""
    return torchvision.models.resnet18(weights=None, num_classes=4)


@suite("quadrants-squeezenet", train=lambda: quadrants(192, 0), test=quadrants(64, 1),
       base=Recipe("adam", lr=1e-3, epochs=2, batch_size=32),
       finetune=Recipe("adam", lr=1e-4, epochs=1, batch_size=64))
def build_squeezenet():
    return torchvision.models.squeezenet1_1(weights=None, num_classes=4)
'''




def test_torchvision_resnet18_suite_end_to_end(project: pytest.Pytester, shrink_cache: Path) -> None:
    project.makeconftest(CONFTEST)
    result = project.runpytest_subprocess("--shrink-method=global-magnitude,l1-filter", "--shrink-suite=quadrants-resnet18", *RUN)
    result.assert_outcomes(passed=2)
    rows = {r["method"]: r for r in result_rows(project.path / "results")}
    assert set(rows) == {"global-magnitude", "l1-filter"}
    dense_flops = counted_flops(torchvision.models.resnet18(num_classes=4), 32)
    assert dense_flops == 2 * resnet18_macs(32, 4)
    for row in rows.values():
        assert row["status"] == "passed" and row["suite"] == "quadrants-resnet18"
        assert row["params_total"] == RESNET18_4_PARAMS
        assert row["params_nonzero"] == round(RESNET18_4_PARAMS / 4)
        assert row["compression"] == pytest.approx(4, rel=0.005)
        assert row["flops_dense"] == dense_flops
        assert row["flops_accounting"] == "structured"
        assert row["top1_base"] > 0.5, "the base ResNet-18 learned the quadrants (chance 0.25)"
    l1, gm = rows["l1-filter"], rows["global-magnitude"]
    assert l1["channels_removed"] > 0
    assert l1["speedup"] > gm["speedup"]

    # The base weights were trained once and cached; both cases used that file.
    (sha,) = {r["base_sha256"] for r in rows.values()}
    (cached,) = [p for p in shrink_cache.glob("quadrants-resnet18-*.pt") if tensors_sha256(p) == sha]
    model = torchvision.models.resnet18(weights=None, num_classes=4)
    model.load_state_dict(torch.load(cached, weights_only=True))

    # l1-filter's masks again, from the same base weights: the row's sparse FLOPs are exactly their structured count.
    from pytest_shrinkbench.sandbox.methods import load_installed

    load_installed()  # registers the baselines

    from pytest_shrinkbench import prune

    masks = prune(model, "l1-filter", 4, batch=(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)))
    weights = {param: masks[param].float() for param in prunable_modules(model).values()}
    trace = trace_model(model, torch.zeros(1, 3, 32, 32))
    links = weight_links(model, channel_links(model))
    assert structured_flops(trace, weights, links) == l1["flops_sparse"]
    # l1-filter zeroes the consumer columns that read a removed filter itself, so density scaling already
    # counts them. Give them back (dead weights a filter-only method would leave): density scaling loses
    # the saving, the structured count (which l1's row reports) keeps it.
    revived = {m: w.clone() for m, w in weights.items()}
    for consumer, link in links.items():  # (group is 1 everywhere in a ResNet-18: no flatten into a linear)
        gone = removed_channels(weights[link.producer])
        revived[consumer][~removed_channels(weights[consumer])[:, None] & gone[None, :]] = 1.0
    assert sum(int(removed_channels(weights[link.producer]).sum()) for link in links.values()) > 0
    assert structured_flops(trace, revived, links) == l1["flops_sparse"]
    assert l1["speedup"] > l1["flops_dense"] / sparse_flops(trace, revived)


def test_torchvision_squeezenet_suite_under_xdist(project: pytest.Pytester, shrink_cache: Path) -> None:
    """Two workers, one case each, both on one base-weights file (trained under the cache lock by whichever comes first)."""
    project.makeconftest(CONFTEST)
    result = project.runpytest_subprocess("--shrink-method=global-magnitude,l1-filter", "--shrink-suite=quadrants-squeezenet",
                                          *RUN, "-n", "2")
    result.assert_outcomes(passed=2)
    rows = {r["method"]: r for r in result_rows(project.path / "results")}
    assert set(rows) == {"global-magnitude", "l1-filter"}
    dense = counted_flops(torchvision.models.squeezenet1_1(num_classes=4), 32)  # every FLOP it counts is a conv's
    for row in rows.values():
        assert row["status"] == "passed" and row["params_total"] == SQUEEZENET_4_PARAMS
        assert row["params_nonzero"] == round(SQUEEZENET_4_PARAMS / 4)
        assert row["flops_dense"] == dense and row["flops_accounting"] == "structured"
    assert rows["l1-filter"]["channels_removed"] > 0
    (sha,) = {r["base_sha256"] for r in rows.values()}
    assert [p for p in shrink_cache.glob("quadrants-squeezenet-*.pt") if tensors_sha256(p) == sha]
