"""The benchmark's fixtures: subjects loaded once per process, stored results, the dense latency reference, the case."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from ..errors import SuiteUnavailable
from ..identity import CaseSpec, case_key
from ..measure.latency import latency_inputs, median_seconds
from ..results.leaderboard import suite_label
from ..run.case import provenance
from ..run.pruning import not_run
from ..suites.subject import Subject, load_subject
from .config import CONFIG_KEY, SANDBOX_KEY, ShrinkConfig, subject_source
from .reuse import SessionMeasurements, StoredRows, exchange_folder
from .runner import ShrinkCase
from .wire import attach_case

# --shrink-latency: median seconds per forward pass of each (suite, weights tag)'s dense model, timed before its cases.
DENSE_LATENCY_KEY = pytest.StashKey[dict[tuple[str, "str | None"], float]]()


def _config(pytestconfig: pytest.Config) -> ShrinkConfig | None:
    return pytestconfig.stash.get(CONFIG_KEY, None)


@pytest.fixture(scope="session")
def shrink_subjects(pytestconfig: pytest.Config) -> Callable[..., Subject]:
    """Load each suite's subject (per base checkpoint) once per worker (the file lock makes one worker train it).

    A suite that cannot load raises the same error for each of its cases, without trying again.
    Without ``--shrink-method`` (a researcher's own tests, :mod:`.testing`) the cache, data root and
    device come from the same settings, read when a subject is first needed.
    """
    loaded: dict[tuple[str, str | None], Subject | Exception] = {}
    config = _config(pytestconfig)

    def get(suite: str, weights: str | None = None) -> Subject:
        key = (suite, weights)
        if key not in loaded:
            checkpoint = config.checkpoint(suite, weights) if config else None
            try:
                loaded[key] = load_subject(suite, weights=checkpoint.path if checkpoint else None,
                                           **subject_source(pytestconfig))
                if checkpoint and loaded[key].sha256 != checkpoint.sha256:
                    raise RuntimeError(f"checkpoint {checkpoint.path} changed during the run (sha256 {loaded[key].sha256[:16]}..., was {checkpoint.sha256[:16]}...)")
            except Exception as exc:
                loaded[key] = exc
        subject = loaded[key]
        if isinstance(subject, Exception):
            raise subject.with_traceback(None)  # a fresh traceback per case, not one growing with each
        return subject

    return get


@pytest.fixture(scope="session")
def shrink_stored(pytestconfig: pytest.Config) -> Iterator[StoredRows]:
    """Look up a passed result by case key in the results store (``None`` when reuse is off or not stored).

    A stored row is reused only if the harness signed it (:mod:`pytest_shrinkbench.results.signing`)
    and its method ran at least as confined as this session's, behind walls that cover this session's
    (:class:`.reuse.StoredRows`).
    """
    config = _config(pytestconfig)
    stored = StoredRows(config.store_path if config is not None and config.reuse else None,
                        config.cache_dir if config is not None else None,
                        pytestconfig.stash[SANDBOX_KEY] if config is not None else None)
    yield stored
    stored.close()


@pytest.fixture(scope="session")
def shrink_measured(pytestconfig: pytest.Config, shrink_stored: StoredRows) -> SessionMeasurements | None:
    """The session's measurements by measurement key (:mod:`pytest_shrinkbench.run.reuse`): a one-shot case whose
    pruned model this session or the store measured already takes those numbers. None when reuse is off."""
    config = _config(pytestconfig)
    return SessionMeasurements(shrink_stored, exchange_folder(pytestconfig)) if config is not None and config.reuse else None


@pytest.fixture
def shrink_reference(request: pytest.FixtureRequest, shrink_subjects: Callable[..., Subject]) -> Callable[[], float]:
    """Times a suite's dense base model (--shrink-latency); calling it returns and keeps the median seconds."""
    if getattr(request, "param", None) is None:
        pytest.skip("dense latency references run only with --shrink-method=... --shrink-latency")
    suite, weights = request.param
    config = _config(request.config)
    benchmark = request.getfixturevalue("benchmark")
    benchmark.group = suite_label(suite, weights)

    def measure() -> float:
        subject = shrink_subjects(suite, weights)
        seconds = median_seconds(benchmark, subject.fresh_model(), latency_inputs(subject, config.latency_batch))
        request.config.stash.setdefault(DENSE_LATENCY_KEY, {})[(suite, weights)] = seconds
        request.node.user_properties.append(("shrinkbench.latency_dense_ms", seconds * 1e3))
        return seconds

    return measure


@pytest.fixture
def shrink_case(
    request: pytest.FixtureRequest,
    shrink_subjects: Callable[..., Subject],
    shrink_stored: StoredRows,
    shrink_measured: SessionMeasurements | None,
) -> ShrinkCase:
    """The case this test runs (parametrized by the plugin).

    The reuse check happens here, after the subject is loaded: the case key includes the base
    weights' sha256, known only then.
    """
    spec = getattr(request, "param", None)
    if not isinstance(spec, CaseSpec):
        pytest.skip("benchmark cases run only with --shrink-method=NAME[,NAME...|all|baselines]")
    attach_case(request.node, spec.as_dict())  # before anything can fail: even a setup error is this case's
    try:
        subject = shrink_subjects(spec.suite, spec.weights)
    except SuiteUnavailable as exc:  # its data or weights are not on this machine: one line, not a failure
        pytest.skip(str(exc))
    except Exception as exc:
        raise RuntimeError(f"[{spec.label}] could not load suite {spec.suite!r}: {type(exc).__name__}: {exc}") from exc
    sandbox = request.config.stash[SANDBOX_KEY]
    reason = not_run(spec.ratio, subject, sandbox.method(spec.method))
    if reason is not None:
        pytest.skip(f"[{spec.label}] {reason}")
    known = provenance(spec, subject, sandbox)
    stored = shrink_stored(case_key({**spec.as_dict(), **known}))
    config = _config(request.config)
    case = ShrinkCase(spec, subject, request.node, sandbox, known, config.timeout, stored, shrink_measured)
    if config.latency_batch:
        dense = request.config.stash.get(DENSE_LATENCY_KEY, {}).get((spec.suite, spec.weights))
        case.time_with(request.getfixturevalue("benchmark"), config.latency_batch, dense)
    return case
