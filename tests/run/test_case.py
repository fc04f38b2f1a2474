"""One case through the public API, outside pytest: the row it returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench import CaseSpec, load_subject, run_case
from pytest_shrinkbench.results.schema import NAMES
from pytest_shrinkbench.sandbox.methods import load_installed

load_installed()  # registers the baselines


def test_run_one_case_outside_pytest(shrink_cache: Path) -> None:
    subject = load_subject("digits-cnn", cache_dir=shrink_cache)
    row = run_case(CaseSpec("global-magnitude", "digits-cnn", 4.0, 0), subject)
    measured = {"top1", "top5", "top1_pre", "params_total", "params_nonzero", "compression", "flops_dense", "flops_sparse", "speedup"}
    assert measured | {"base_sha256", "method_hash", "recipe_hash"} <= row.keys() <= set(NAMES)
    assert row["compression"] == pytest.approx(4.0, rel=1e-3)
    assert row["flops_dense"] == 1203200  # 2 × (144·64 + 4608·64 + 18432·16 + 2560) multiply-adds
    assert row["speedup"] > 1 and row["top1"] > 0.95
