"""Language models end to end: the pydoc-lm baselines one-shot at 50% and 2:4 (a tiny configuration), and a
Hugging Face model from a local directory on WikiText-2 files the test writes, with no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import result_rows

RUN = ["--shrink-store=none", "-p", "no:randomly"]

TINY_PYDOC = """
from pytest_shrinkbench.suites import override_suite
from pytest_shrinkbench.suites.gpt import GPT, GPTConfig
from pytest_shrinkbench.suites.pydoc_lm import pydoc_splits
from pytest_shrinkbench.suites.recipe import StepRecipe
from pytest_shrinkbench.suites.registry import Calibration


def tiny():
    return GPT(GPTConfig(context=16, layers=2, heads=2, width=16))


override_suite("pydoc-lm", build_model=tiny, load_data=lambda: pydoc_splits(16), input_shape=(16,),
               base_recipe=StepRecipe("adamw", lr=4e-3, epochs=1, batch_size=8, steps=40),
               calibration=Calibration(count=16, length=16))
"""


def test_pydoc_lm_baselines_one_shot_at_half_and_two_of_four(project: pytest.Pytester) -> None:
    project.makeconftest(TINY_PYDOC)
    methods = "sparsegpt,wanda,row-magnitude,sparsegpt-2of4,wanda-2of4,row-magnitude-2of4"
    result = project.runpytest_subprocess(f"--shrink-method={methods}", "--shrink-suite=pydoc-lm", "--shrink-ratios=2",
                                          "--shrink-seeds=0,1", "-n", "2", *RUN)
    result.assert_outcomes(passed=12)
    rows = result_rows(project.path / "results")
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in methods.split(",") for s in (0, 1)}
    for row in rows:
        assert row["metric"] == "perplexity" and row["compression_basis"] == "prunable"
        assert row["compression_prunable"] == pytest.approx(2.0, rel=0.005) and row["compression"] < 2
        assert row["perplexity"] == row["perplexity_pre"] and row["finetune_seconds"] == 0
        assert row["protocol"]["calibration_seed"] == "the case's seed" and row["protocol"]["exclude"] == ["lm_head.weight"]
        assert (row["weights_changed"] > 0) == row["method"].startswith("sparsegpt")
        assert (row.get("sparsity_pattern") == "2:4") == row["method"].endswith("-2of4")


HF_CONFTEST = """
from pytest_shrinkbench.suites.hf_lm import hf_causal_lm

hf_causal_lm("tiny-gpt2", "MODEL", calibration=8)
hf_causal_lm("tiny-gpt2-ctx16", "MODEL", context=16, calibration=8)
"""


def test_a_local_hugging_face_model_runs_end_to_end_without_network(project: pytest.Pytester, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers", reason="the Hugging Face suites need the [llm] extra (transformers)")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):  # any attempt to reach the hub fails
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tests.lm_fakes import write_tiny_gpt2, write_wikitext

    model, data = write_tiny_gpt2(tmp_path / "tiny-gpt2"), write_wikitext(tmp_path / "data")
    project.makeconftest(HF_CONFTEST.replace("MODEL", str(model)))
    result = project.runpytest_subprocess("--shrink-method=sparsegpt,wanda", "--shrink-suite=tiny-gpt2,tiny-gpt2-ctx16",
                                          "--shrink-ratios=2", "--shrink-seeds=0", f"--shrink-data-root={data}", *RUN)
    result.assert_outcomes(passed=4)
    rows = result_rows(project.path / "results")
    contexts = {(r["suite"], r["protocol"]["context_length"]) for r in rows}
    assert contexts == {("tiny-gpt2", 32), ("tiny-gpt2-ctx16", 16)}
    assert len({r["base_sha256"] for r in rows}) == 1  # the same weights: the protocols tell the rows apart
