"""Any model: transformers whose attention weights are raw parameters, user suites on nn.TransformerEncoder, and
N:M methods that run only at the ratio their pattern implies and are checked group by group."""

from __future__ import annotations

import pytest

from tests.helpers import result_rows, rows_by_method

RUN = ["--shrink-seeds=0", "--shrink-store=none", "-p", "no:randomly"]

SPY = """
import torch
from pytest_shrinkbench import method


@method("spy")
def spy(ctx):
    # fails its case (with the names it saw) unless attention's packed projection is among them
    assert "encoder.layers.0.self_attn.in_proj_weight" in ctx.prunable, sorted(ctx.prunable)
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
"""


def test_the_embedded_transformer_prunes_attention_and_skips_the_unreachable_ratio(project: pytest.Pytester) -> None:
    project.makeconftest(SPY)
    result = project.runpytest_subprocess("--shrink-method=spy,l1-filter,global-gradient", "--shrink-suite=digits-transformer",
                                          "--shrink-ratios=4,32", *RUN)
    result.assert_outcomes(passed=3, skipped=3)
    result.stdout.fnmatch_lines(["*x32 is unreachable on suite digits-transformer: its 1066 non-prunable non-zero parameters*"])
    rows = [r for r in result_rows(project.path / "results") if r["status"] == "passed"]
    assert {r["method"] for r in rows} == {"spy", "l1-filter", "global-gradient"}
    for row in rows:
        assert row["compression"] == pytest.approx(4, rel=0.005)
        assert row["flops_dense"] == 283_264, "every matmul counted, attention's QKᵀ and AV included"
        assert 2 * 2 * 2 * 8 * 8 * 32 < row["flops_sparse"] < 283_264, "QKᵀ and AV (16,384 FLOPs) stay, whatever the masks"
        assert row["top1"] > 0.5


USER_SUITE = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytest_shrinkbench import Recipe, method, suite


def sequences(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 16, generator=g)
    return TensorDataset(x, x.sum(dim=(1, 2)).gt(0).long())


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


@suite("seq-encoder", train=lambda: sequences(257, 0), test=sequences(64, 1),
       base=Recipe("adam", lr=3e-3, epochs=3, batch_size=32), finetune=Recipe("adam", lr=1e-3, epochs=1, batch_size=32),
       exclude=("head.weight",))
def build():
    return Encoder()


@method("three-of-four", pattern="2:4")
def three_of_four(ctx):
    masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
    group = masks["encoder.layers.1.linear2.weight"][0, :4]
    group[(~group).nonzero()[0]] = True  # claims 2:4, keeps 3 in one group
    return masks
"""


def test_a_user_suite_on_transformer_encoder_runs_end_to_end(project: pytest.Pytester) -> None:
    """Raw attention parameters are prunable, an excluded head is not, and 2:4 methods are held to their pattern."""
    project.makeconftest(USER_SUITE)
    result = project.runpytest_subprocess("--shrink-method=global-magnitude,row-magnitude-2of4,three-of-four",
                                          "--shrink-suite=seq-encoder", "--shrink-ratios=1,2,4", *RUN)
    result.assert_outcomes(passed=4, failed=1, skipped=4)
    result.stdout.fnmatch_lines([
        "*three-of-four*x2*mask of 'encoder.layers.1.linear2.weight' breaks the declared 2:4 pattern: "
        "group 0 of input row 0 (inputs 0..3) keeps 3 of 4*",
    ])
    rows = {(r["method"], r["ratio"]): r for r in result_rows(project.path / "results")}
    skipped = rows[("row-magnitude-2of4", 4.0)]
    assert skipped["status"] == "skipped" and "runs only at ratio 2, not x4" in skipped["message"]
    two = rows[("row-magnitude-2of4", 2.0)]
    assert two["status"] == "passed" and two["sparsity_pattern"] == "2:4" and two["pattern_dense"] == []
    assert two["compression"] < 2, "biases, norms and the excluded head stay: the whole model compresses a little under 2"
    assert two["prunable_scope"] is not None
    for ratio in (2.0, 4.0):
        assert rows[("global-magnitude", ratio)]["status"] == "passed"


def test_a_2_of_4_method_keeps_exactly_2_of_every_4_and_leaves_uncovered_layers_dense(project: pytest.Pytester) -> None:
    """digits-cnn's first conv reads 1 × 3 × 3 = 9 inputs per filter, not a multiple of 4: it stays dense, and the row says so."""
    project.makeconftest(
        "import torch\n"
        "from pytest_shrinkbench import method\n\n"
        "@method('check-2of4', pattern='2:4')\n"
        "def check(ctx):\n"
        "    masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})\n"
        "    assert masks['features.0.0.weight'].all()\n"
        "    for name, m in masks.items():\n"
        "        if name != 'features.0.0.weight':\n"
        "            assert m.reshape(m.shape[0], -1, 4).sum(2).eq(2).all(), name\n"
        "    return masks\n"
    )
    result = project.runpytest_subprocess("--shrink-method=check-2of4,row-magnitude-2of4", "--shrink-suite=digits-cnn",
                                          "--shrink-ratios=2", *RUN)
    result.assert_outcomes(passed=2)
    rows = rows_by_method(project.path / "results")
    for row in rows.values():
        assert row["pattern_dense"] == ["features.0.0.weight"]
        assert row["sparsity_pattern"] == "2:4"
        assert 1.9 < row["compression"] < 2
        assert row["speedup"] > 1.5
    assert rows["check-2of4"]["top1"] == rows["row-magnitude-2of4"]["top1"], "the same masks, the same numbers"
