"""The researcher's fixtures: the benchmark's subjects and methods, in a project's own tests (docs/testing.md).

``shrink_subject`` is the subject of the suite named by ``@pytest.mark.shrink_suite(...)`` (one test per
suite) or by indirect parametrization; ``shrink_subject_factory(name)`` loads any suite's;
``shrink_method(name)`` calls a registered method as a case does (:mod:`..run.testkit`). They are
always available, with or without ``--shrink-method``, and change nothing the benchmark does.

Subjects come from the benchmark's own loader (``shrink_subjects``): once per test process, from the
same cache, trained once under its file lock whatever ``-n`` is; a suite whose data is absent skips
with the benchmark's one-line reason.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
import torch

from ..errors import SuiteUnavailable
from ..run.testkit import ShrinkMethod, ShrinkSubject
from ..sandbox import methods
from ..suites import user as user_suites
from ..suites.registry import SUITES
from ..suites.subject import Subject
from .config import CONFIG_KEY
from .settings import value

MARKER = "shrink_suite"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(*names): run the test once per suite, the suite's subject in the shrink_subject fixture"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or "shrink_subject" not in metafunc.fixturenames or _parametrized(metafunc, "shrink_subject"):
        return
    names = list(marker.args)
    if not names or not all(isinstance(name, str) for name in names) or marker.kwargs:
        given = ", ".join([*map(repr, names), *(f"{key}={value!r}" for key, value in marker.kwargs.items())])
        pytest.fail(f"@pytest.mark.{MARKER} takes suite names, e.g. {MARKER}('digits-cnn', 'digits-mlp'); "
                    f"got {MARKER}({given}) on {metafunc.definition.nodeid}", pytrace=False)
    metafunc.parametrize("shrink_subject", names, ids=names, indirect=True)


def _parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether a ``parametrize`` mark names ``name``: an explicit parametrization wins over a module's suite mark."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def discover(config: pytest.Config) -> str:
    """Register the methods and suites the benchmark would find (installed entry points, the project's
    ``methods/`` folder, ``shrink_method_dirs``; conftests register on import); return the files that
    failed to import, as one line (empty when none did)."""
    folders = [config.rootpath / "methods", *config.getini("shrink_method_dirs")]
    user_suites.discover()
    return "; ".join(f"{path}: {error}" for path, error in methods.discover(folders).items())


@pytest.fixture(scope="session")
def _shrink_discovered(pytestconfig: pytest.Config) -> Iterator[str]:
    """Discovery once per test process; the session's methods and suites are forgotten after it (the benchmark,
    when it runs, discovered them already and forgets them itself)."""
    benchmark = CONFIG_KEY in pytestconfig.stash
    yield discover(pytestconfig)
    if not benchmark:
        methods.forget_session_methods()
        user_suites.forget_session_suites()


@pytest.fixture(scope="session")
def shrink_subject_factory(
    pytestconfig: pytest.Config, shrink_subjects: Callable[..., Subject], _shrink_discovered: str
) -> Iterator[Callable[[str], ShrinkSubject]]:
    """``shrink_subject_factory("digits-cnn")``: that suite's subject, loaded once per test process.

    A suite whose data or weights are not on this machine skips the calling test with the benchmark's reason.
    From first use to the session's end, torch runs with ``--shrink-threads`` CPU threads, as the benchmark's
    cases do: CPU results differ with the thread count, and more threads than free cores crawl under ``-n``.
    """
    made: dict[str, ShrinkSubject] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(value(pytestconfig, "shrink_threads"))

    def get(suite: str) -> ShrinkSubject:
        if suite not in SUITES:
            pytest.fail(f"shrinkbench: unknown suite {suite!r}; known: {', '.join(SUITES.names())}", pytrace=False)
        if suite not in made:
            try:
                made[suite] = ShrinkSubject(shrink_subjects(suite))
            except SuiteUnavailable as exc:
                pytest.skip(str(exc))
        return made[suite]

    yield get
    torch.set_num_threads(threads)


@pytest.fixture
def shrink_subject(request: pytest.FixtureRequest, shrink_subject_factory: Callable[[str], ShrinkSubject]) -> ShrinkSubject:
    """The subject of this test's suite: ``@pytest.mark.shrink_suite("digits-cnn", ...)`` runs the test once per suite."""
    suite = getattr(request, "param", None)
    if not isinstance(suite, str):
        pytest.fail(f"shrinkbench: shrink_subject needs a suite: mark the test @pytest.mark.{MARKER}('digits-cnn'), or "
                    "parametrize shrink_subject indirectly", pytrace=False)
    return shrink_subject_factory(suite)


@pytest.fixture(scope="session")
def shrink_method(_shrink_discovered: str) -> Callable[[str], ShrinkMethod]:
    """``shrink_method("mine")``: the registered method, callable as ``(subject, ratio, seed=0) -> Pruned``.

    It runs in this process (your own code, under your own test); the benchmark's cases keep their sandbox.
    """

    def get(name: str) -> ShrinkMethod:
        if name not in methods.METHODS:
            broken = f" (method files that failed to import: {_shrink_discovered})" if _shrink_discovered else ""
            pytest.fail(f"shrinkbench: unknown method {name!r}; known: {', '.join(methods.METHODS.names()) or 'none'}{broken}",
                        pytrace=False)
        return ShrinkMethod(methods.METHODS.get(name))

    return get
