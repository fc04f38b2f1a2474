"""A pruned model is measured once: cases with the same measurement key take the first one's numbers (public API)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from pytest_shrinkbench import CaseSpec, load_subject, method, run_case
from pytest_shrinkbench.sandbox.methods import METHODS
from pytest_shrinkbench.run.reuse import SHARED_FIELDS, SharedMeasurements
from pytest_shrinkbench.sandbox.methods import load_installed
from pytest_shrinkbench.suites.subject import Subject

load_installed()  # registers the baselines
TIMINGS = {"prune_seconds", "finetune_seconds", "shared_from"}


@pytest.fixture(scope="module")
def mlp(shrink_cache: Path) -> Subject:
    return load_subject("digits-mlp", cache_dir=shrink_cache)


def nudged(ctx):
    """Global magnitude's masks, with every kept weight of the first layer moved a little: same masks, other model."""
    masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
    first = next(iter(ctx.prunable))
    return masks, {first: ctx.prunable[first].detach() * 1.01}


@pytest.fixture
def registered_nudged() -> Iterator[str]:
    method("reuse-nudged")(nudged)
    yield "reuse-nudged"
    METHODS.retain(lambda m: m.fn is not nudged)


def case(name: str, ratio: float, subject: Subject, shared: SharedMeasurements | None) -> dict:
    return run_case(CaseSpec(name, "digits-mlp", ratio, 0), subject, shared=shared)


def test_every_methods_x1_case_is_fine_tuned_once_with_the_same_numbers(mlp: Subject) -> None:
    shared = SharedMeasurements()
    first, second = case("global-magnitude", 1, mlp, shared), case("random", 1, mlp, shared)
    assert first.get("shared_from") is None and first["finetune_seconds"] > 0
    assert second["shared_from"] is not None and second["finetune_seconds"] == 0.0
    assert second["measurement_key"] == first["measurement_key"]
    computed = case("random", 1, mlp, None)  # no sharing: computed again
    assert computed.get("shared_from") is None and computed["measurement_key"] == second["measurement_key"]
    assert {k: v for k, v in second.items() if k not in TIMINGS} == {k: v for k, v in computed.items() if k not in TIMINGS}


def test_shared_fields_are_exactly_what_measuring_writes(mlp: Subject) -> None:
    """A field a later change adds to measuring must be shared too, or shared rows would lack it: this fails then."""
    shared = SharedMeasurements()
    computed = case("layer-magnitude", 2, mlp, shared)
    shared.found[computed["measurement_key"]] = {"case_key": "planted"}  # a record holding no measurements at all
    taken = case("layer-magnitude", 2, mlp, shared)
    assert taken["shared_from"] == "planted"
    measured = set(computed) - set(taken)
    assert measured <= set(SHARED_FIELDS), "every field measuring writes is shared"
    assert measured == set(SHARED_FIELDS) - {"perplexity_pre", "perplexity"}, "a classification suite measures no perplexity"


def test_same_masks_with_other_weights_are_measured_again(mlp: Subject, registered_nudged: str) -> None:
    shared = SharedMeasurements()
    plain = case("global-magnitude", 2, mlp, shared)
    moved = case(registered_nudged, 2, mlp, shared)
    assert moved["weights_changed"] > 0 and moved.get("shared_from") is None
    assert moved["measurement_key"] != plain["measurement_key"]
    assert case("global-magnitude", 2, mlp, shared)["shared_from"] is not None  # the same answer again is shared


def test_gradual_methods_are_never_shared(mlp: Subject) -> None:
    shared = SharedMeasurements()
    rows = [case("gradual-magnitude", 2, mlp, shared) for _ in range(2)]
    assert all(r.get("measurement_key") is None and r.get("shared_from") is None for r in rows)
    assert rows[1]["finetune_seconds"] > 0 and not shared.found


def test_a_case_that_fails_publishes_nothing(mlp: Subject) -> None:
    """Only a case that passed its checks lends its numbers: a failure inside measuring leaves the key free."""
    shared = SharedMeasurements()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pytest_shrinkbench.run.case.measure", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken")))
        with pytest.raises(Exception, match="broken"):
            case("global-magnitude", 1, mlp, shared)
    assert not shared.found
    assert case("global-magnitude", 1, mlp, shared).get("shared_from") is None
