"""Hugging Face causal LMs from a local directory, on WikiText-2 files with the reference protocol (the [llm] extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the Hugging Face suites need the [llm] extra (transformers)")

import pytest_shrinkbench as sb  # noqa: E402
from pytest_shrinkbench.errors import SuiteUnavailable  # noqa: E402
from pytest_shrinkbench.suites import SUITES  # noqa: E402
from pytest_shrinkbench.suites.hf_lm import hf_causal_lm, wikitext_text  # noqa: E402
from tests.lm_fakes import write_tiny_gpt2, write_wikitext  # noqa: E402


@pytest.fixture
def tiny(tmp_path: Path):
    model, data = write_tiny_gpt2(tmp_path / "tiny-gpt2"), write_wikitext(tmp_path / "data")
    yield model, data
    for name in ("hf-tiny", "hf-tiny-16"):
        SUITES.retain(lambda suite, name=name: suite.name != name)


def test_wikitext_is_read_as_the_reference_protocol_joins_it(tmp_path: Path) -> None:
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(" = A = \n \n one two \n")
    assert wikitext_text(raw) == " = A = \n" + "\n\n" + "" + "\n\n" + " one two \n"  # rows: heading, blank, text


def test_a_local_gpt2_is_pruned_one_shot_on_the_prunable_basis(tiny, tmp_path: Path) -> None:
    model, data = tiny
    hf_causal_lm("hf-tiny", model, calibration=8)
    subject = sb.load_subject("hf-tiny", tmp_path / "cache", data_root=data)
    assert subject.trace.prunable == tuple(f"model.transformer.h.{i}.{layer}.weight" for i in range(2)
                                           for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert subject.calibration(0).shape == (8, 32)
    result = sb.run_case(sb.CaseSpec("sparsegpt", "hf-tiny", 2.0, 0), subject)
    assert result["compression_prunable"] == pytest.approx(2.0, rel=0.005) and result["weights_changed"] > 0
    assert result["perplexity"] == result["perplexity_pre"] and result["metric"] == "perplexity"
    protocol = result["protocol"]
    assert protocol["context_length"] == 32 == protocol["stride"]  # the model's own context length by default
    assert protocol["corpus"] == "wikitext-2-raw" and len(protocol["corpus_sha256"]) == 64
    assert protocol["transformers"] == __import__("transformers").__version__
    assert protocol["exclude"] == ["*lm_head.weight"] and protocol["calibration_count"] == 8


def test_a_shorter_context_is_another_protocol(tiny, tmp_path: Path) -> None:
    model, data = tiny
    hf_causal_lm("hf-tiny", model, calibration=8)
    hf_causal_lm("hf-tiny-16", model, context=16, calibration=8)
    rows = [sb.run_case(sb.CaseSpec("wanda", name, 2.0, 0), sb.load_subject(name, tmp_path / "cache", data_root=data))
            for name in ("hf-tiny", "hf-tiny-16")]
    assert [r["protocol"]["context_length"] for r in rows] == [32, 16]
    assert {k: v for k, v in rows[0]["protocol"].items() if k not in ("context_length", "stride", "calibration_length")} == \
           {k: v for k, v in rows[1]["protocol"].items() if k not in ("context_length", "stride", "calibration_length")}
    assert rows[0]["base_sha256"] == rows[1]["base_sha256"]  # the same weights: only the protocol tells them apart
    assert rows[0]["perplexity_base"] != rows[1]["perplexity_base"]


def test_missing_wikitext_files_make_the_suite_unavailable(tiny, tmp_path: Path) -> None:
    model, _ = tiny
    hf_causal_lm("hf-tiny", model)
    with pytest.raises(SuiteUnavailable, match="wiki.train.raw"):
        sb.load_subject("hf-tiny", tmp_path / "cache", data_root=tmp_path / "empty")
