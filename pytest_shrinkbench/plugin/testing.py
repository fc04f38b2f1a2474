"""The researcher's fixtures: the benchmark's subjects and methods, in a project's own tests (docs/testing.md).

``shrink_subject`` is the subject of the suite named by ``@pytest.mark.shrink_suite(...)`` (one test per
suite) or by indirect parametrization; ``shrink_subject_factory(name)`` loads any suite's;
``shrink_method(name)`` calls a registered method as a case does (:mod:`..run.testkit`). The subject
fixtures work with or without ``--shrink-method`` and change nothing the benchmark does;
``shrink_method`` is refused where the benchmark runs (it imports method code into this process).

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
from ..sandbox.discovery import find_methods
from ..sandbox.methods import METHODS, forget_session_methods, load_installed
from ..suites import user as user_suites
from ..suites.registry import SUITES
from ..suites.subject import Subject
from .config import CONFIG_KEY, method_folders
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


@pytest.fixture(scope="session")
def _shrink_suites(pytestconfig: pytest.Config) -> Iterator[None]:
    """Installed packages' suites (a project's own register from its conftest), forgotten after the session
    unless the benchmark runs in it (it discovered them already and forgets them itself, at its end)."""
    benchmark = CONFIG_KEY in pytestconfig.stash
    if not benchmark:
        user_suites.discover()
    yield
    if not benchmark:
        user_suites.forget_session_suites()


@pytest.fixture(scope="session")
def _shrink_methods(pytestconfig: pytest.Config) -> Iterator[str]:
    """Import, in this process, the methods the benchmark would find (installed entry points, the project's
    ``methods/`` folder, ``shrink_method_dirs``; conftests register on import); yield the files that failed to
    import, as one line (empty when none did).

    Refused in a benchmark session: importing method code into a process that measures cases is exactly
    what its sandbox exists to prevent.
    """
    if CONFIG_KEY in pytestconfig.stash:
        pytest.fail("shrinkbench: the shrink_method fixture runs methods in this process, which measures the "
                    "benchmark's cases here: run your own tests in a pytest run without --shrink-method", pytrace=False)
    found = find_methods(method_folders(pytestconfig))
    load_installed()  # noted as installed: forgetting the session's methods keeps these (their modules stay imported)
    yield "; ".join(f"{path}: {error}" for path, error in found["errors"].items())
    forget_session_methods()


@pytest.fixture(scope="session")
def shrink_subject_factory(
    pytestconfig: pytest.Config, shrink_subjects: Callable[..., Subject], _shrink_suites: None
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
def shrink_method(_shrink_methods: str) -> Callable[[str], ShrinkMethod]:
    """``shrink_method("mine")``: the registered method, callable as ``(subject, ratio, seed=0) -> Pruned``.

    It runs in this process (your own code, under your own test); the benchmark's cases keep their sandbox.
    """

    def get(name: str) -> ShrinkMethod:
        if name not in METHODS:
            broken = f" (method files that failed to import: {_shrink_methods})" if _shrink_methods else ""
            pytest.fail(f"shrinkbench: unknown method {name!r}; known: {', '.join(METHODS.names()) or 'none'}{broken}",
                        pytrace=False)
        return ShrinkMethod(METHODS.get(name))

    return get
