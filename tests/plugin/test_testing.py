"""The researcher's fixtures as a test author meets them: the marker, the factories, their one-line errors, their docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench.sandbox.methods import METHODS

ROOT = Path(__file__).parents[2]

SUBJECTS = '''
import pytest
import torch

pytestmark = pytest.mark.shrink_suite("digits-mlp")
SEEN = {}


def test_module_mark(shrink_subject, shrink_subject_factory):
    assert shrink_subject.name == "digits-mlp"
    assert shrink_subject_factory("digits-mlp") is shrink_subject, "one subject per suite and process"
    assert torch.get_num_threads() == 1, "--shrink-threads, as in a case"


@pytest.mark.shrink_suite("digits-cnn", "digits-mlp")
def test_closest_mark_wins(shrink_subject):
    SEEN[shrink_subject.name] = shrink_subject.identity["base_sha256"]


@pytest.mark.parametrize("shrink_subject", ["digits-cnn"], indirect=True)
def test_indirect(shrink_subject, shrink_subject_factory):
    assert shrink_subject is shrink_subject_factory("digits-cnn")
    assert SEEN["digits-cnn"] == shrink_subject.identity["base_sha256"] != SEEN["digits-mlp"]


def test_method(shrink_subject, shrink_method):
    pruned = shrink_method("global-magnitude")(shrink_subject, 4, seed=2)
    assert (pruned.method, pruned.suite, pruned.ratio, pruned.seed) == ("global-magnitude", "digits-mlp", 4.0, 2)
    shrink_subject.check_masks(pruned.model, pruned.masks, 4)
'''


def test_the_mark_runs_a_test_once_per_suite_and_the_closest_mark_wins(project: pytest.Pytester) -> None:
    project.makepyfile(test_subjects=SUBJECTS)
    result = project.runpytest("-v", "-p", "no:randomly")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([
        "*test_module_mark[[]digits-mlp[]] PASSED*",
        "*test_closest_mark_wins[[]digits-cnn[]] PASSED*",
        "*test_closest_mark_wins[[]digits-mlp[]] PASSED*",
        "*test_indirect[[]digits-cnn[]] PASSED*",
        "*test_method[[]digits-mlp[]] PASSED*",
    ])


def test_the_fixtures_are_listed_with_their_docs(project: pytest.Pytester) -> None:
    result = project.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["shrink_subject -- *testing.py:*", "    The subject of this test's suite*"])
    result.stdout.fnmatch_lines(["shrink_method [[]session scope[]] -- *", '    ``shrink_method("mine")``: the registered method*'])
    result.stdout.fnmatch_lines(["shrink_subject_factory [[]session scope[]] -- *", "    ``shrink_subject_factory(*"])
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.shrink_suite(*names): run the test once per suite*"])


@pytest.mark.parametrize("source, line", [
    ("@pytest.mark.shrink_suite()\ndef test_x(shrink_subject): pass",
     "*@pytest.mark.shrink_suite takes suite names, e.g. shrink_suite('digits-cnn', 'digits-mlp'); got shrink_suite() on *test_x"),
    ("@pytest.mark.shrink_suite(['digits-cnn'], seed=1)\ndef test_x(shrink_subject): pass",
     "*got shrink_suite([[]'digits-cnn'[]], seed=1) on *test_x"),
    ("def test_x(shrink_subject): pass",
     "*shrinkbench: shrink_subject needs a suite: mark the test @pytest.mark.shrink_suite('digits-cnn'), or parametrize "
     "shrink_subject indirectly"),
    ("@pytest.mark.shrink_suite('digits-cnm')\ndef test_x(shrink_subject): pass",
     "*shrinkbench: unknown suite 'digits-cnm'; known: *digits-cnn, digits-mlp*"),
    ("def test_x(shrink_method): shrink_method('nope')",
     "*shrinkbench: unknown method 'nope'; known: *global-magnitude* (method files that failed to import: *broken.py: "
     "ZeroDivisionError: division by zero)"),
], ids=["mark-without-suites", "mark-with-a-list", "no-suite", "unknown-suite", "unknown-method"])
def test_a_wrong_use_fails_with_one_line(project: pytest.Pytester, source: str, line: str) -> None:
    project.mkdir("methods").joinpath("broken.py").write_text("1 / 0\n")
    project.makepyfile(test_wrong="import pytest\n\n" + source + "\n")
    result = project.runpytest()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines([line])
    assert not [line for line in result.stdout.lines if line.startswith("E ")], "no traceback: the line says it all"


def test_methods_are_found_where_the_benchmark_finds_them_and_forgotten_after_the_session(project: pytest.Pytester) -> None:
    """methods/, shrink_method_dirs, a conftest and installed packages; none may leak into the next session in this process."""
    define = "from pytest_shrinkbench import method\n\n@method('{0}')\ndef {1}(ctx):\n    return {{}}\n"
    project.mkdir("methods").joinpath("mine.py").write_text(define.format("fixtures-file", "in_file"))
    project.mkdir("more").joinpath("theirs.py").write_text(define.format("fixtures-dir", "in_dir"))
    project.makeconftest(define.format("fixtures-conftest", "in_conftest"))
    project.makeini("[pytest]\nshrink_method_dirs = more\n")
    project.makepyfile(test_found=(
        "import pytest\n\n"
        "@pytest.mark.parametrize('name', ['fixtures-file', 'fixtures-dir', 'fixtures-conftest', 'random'])\n"
        "def test_found(shrink_method, name):\n    assert shrink_method(name).name == name\n"
    ))
    project.runpytest().assert_outcomes(passed=4)
    assert not {"fixtures-file", "fixtures-dir", "fixtures-conftest"} & set(METHODS.names())


def test_the_docs_page_shows_the_example_files_exactly() -> None:
    page = (ROOT / "docs" / "testing.md").read_text()
    for example in ("methods/mine.py", "test_my_method.py"):
        source = (ROOT / "examples" / example).read_text()
        assert f"```python\n{source}```\n" in page, f"docs/testing.md must show examples/{example} verbatim"
