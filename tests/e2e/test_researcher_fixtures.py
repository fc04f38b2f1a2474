"""A researcher's own tests of their method, run as they run them: docs/testing.md's example in a fresh project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_shrinkbench.plugin.session import PACKAGED_CASES

ROOT = Path(__file__).parents[2]
EXAMPLE_TESTS = [
    "test_reaches_x8[digits-cnn]",
    "test_masks_are_2_of_4[digits-cnn]",
    "test_top1_before_finetuning_is_above_half[digits-cnn]",
    "test_top1_before_finetuning_is_above_half[digits-mlp]",
    "test_masks_are_deterministic_for_a_seed[digits-cnn]",
    "test_pruned_model_agrees_with_the_dense_one[digits-cnn]",
]
# The line of examples/methods/mine.py that a planted bug replaces.
KEEP_TOP = "    return ctx.keep_top({name: n_of_m(w.detach().abs()) for name, w in ctx.prunable.items()})\n"
FORGOT_THE_BUDGET = "    return {name: n_of_m(w.detach().abs()) >= 0 for name, w in ctx.prunable.items()}\n"
FLOAT_MASKS = "    return {name: mask.float() for name, mask in ctx.keep_top({n: n_of_m(w.detach().abs()) for n, w in ctx.prunable.items()}).items()}\n"


def lay_out_example(project: pytest.Pytester, method_line: str = KEEP_TOP) -> None:
    """examples/ as a user's project holds it: methods/mine.py (its budget line swapped for ``method_line``) and tests/."""
    method = (ROOT / "examples" / "methods" / "mine.py").read_text()
    assert KEEP_TOP in method, "examples/methods/mine.py changed: update the planted bugs here"
    project.mkdir("methods").joinpath("mine.py").write_text(method.replace(KEEP_TOP, method_line))
    project.mkdir("tests").joinpath("test_my_method.py").write_text((ROOT / "examples" / "test_my_method.py").read_text())


def outcomes(result: pytest.RunResult, word: str) -> set[str]:
    """The tests (``name[suite]``) a ``-v`` run reports as ``word`` (PASSED, FAILED), serially or under xdist."""
    found = set()
    for line in result.stdout.lines:
        match = re.search(rf"::(\S+) {word}\b", line) or re.search(rf"\b{word} \S+::(\S+)", line)
        if match:
            found.add(match.group(1))
    return found


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_docs_example_passes_in_a_users_project(project: pytest.Pytester, workers: list[str]) -> None:
    lay_out_example(project)
    run = project.runpytest_subprocess if workers else project.runpytest  # workers: pytest-benchmark warns in-process
    result = run("-v", "-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=len(EXAMPLE_TESTS))
    assert outcomes(result, "PASSED") == set(EXAMPLE_TESTS)


@pytest.mark.parametrize("bug, failing, message", [
    (FORGOT_THE_BUDGET, EXAMPLE_TESTS[:1],
     "CaseFailure: requested compression x8 but the masks achieve x1.981 (13114 of 25978 parameters non-zero; 3247 expected)"),
    (FLOAT_MASKS, EXAMPLE_TESTS,
     "MaskError: mask of 'features.0.0.weight' has dtype torch.float32, expected torch.bool (True = keep)"),
], ids=["forgot-the-budget", "float-masks"])
def test_a_broken_method_fails_the_expected_tests_with_the_harness_messages(
    project: pytest.Pytester, bug: str, failing: list[str], message: str
) -> None:
    lay_out_example(project, bug)
    result = project.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=len(failing), passed=len(EXAMPLE_TESTS) - len(failing))
    assert outcomes(result, "FAILED") == set(failing)
    result.stdout.fnmatch_lines([f"E *{message}"])
    assert message.split(": ", 1)[1] in (ROOT / "docs" / "testing.md").read_text(), "docs/testing.md quotes this failure"


COUNTING_CONFTEST = '''
import os

import pytest_shrinkbench.suites.subject as subject


def counted(event, fn):
    def wrapper(*args, **kwargs):
        with open(os.environ["FIXTURES_LOG"], "a") as log:
            log.write(f"{event} {os.getpid()}\\n")
        return fn(*args, **kwargs)
    return wrapper


subject._train_and_store = counted("train", subject._train_and_store)
subject.Subject.__post_init__ = counted("load", subject.Subject.__post_init__)
'''
TWENTY_TESTS = '''
import pytest


@pytest.mark.shrink_suite("digits-mlp")
@pytest.mark.parametrize("seed", range(20))
def test_a_batch(shrink_subject, seed):
    assert len(shrink_subject.batch(seed)[0]) == 256
'''


def test_twenty_tests_train_once_and_each_worker_loads_once(project: pytest.Pytester, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "events"
    monkeypatch.setenv("FIXTURES_LOG", str(log))
    project.makeconftest(COUNTING_CONFTEST)
    project.makepyfile(test_twenty=TWENTY_TESTS)
    cache = f"--shrink-cache={tmp_path / 'cache'}"
    project.runpytest_subprocess(cache, "-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=20)
    events = log.read_text().split("\n")[:-1]
    trained = [e for e in events if e.startswith("train")]
    loads = [e.split()[1] for e in events if e.startswith("load")]
    assert len(trained) == 1, "the file lock lets one worker train; the other waits and loads the file"
    assert len(loads) == len(set(loads)) == 2, "each worker loads the subject once, for its share of the twenty"
    log.unlink()
    project.runpytest_subprocess(cache, "-p", "no:cacheprovider").assert_outcomes(passed=20)
    assert log.read_text().split() == ["load", log.read_text().split()[1]], "cached: loaded once, trained never"


def test_a_suite_without_data_skips_with_the_benchmarks_reason(project: pytest.Pytester, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One session runs a fixture test and the benchmark's case of a suite whose data is absent: one reason for both."""
    monkeypatch.delenv("SHRINKBENCH_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    project.makepyfile(test_mine="import pytest\n\n@pytest.mark.shrink_suite('cifar10-resnet20')\ndef test_mine(shrink_subject):\n    pass\n")
    result = project.runpytest_subprocess(
        "--shrink-method=global-magnitude", "--shrink-suite=cifar10-resnet20", "--shrink-ratios=2", "--shrink-seeds=0",
        f"--shrink-data-root={empty}", "-rs", "-p", "no:cacheprovider", "test_mine.py", str(PACKAGED_CASES),
    )
    result.assert_outcomes(skipped=2)
    reasons = [m.group(1) for line in result.stdout.lines if (m := re.match(r"SKIPPED \[1\] \S+: (.*)$", line))]
    assert len(reasons) == 2 and reasons[0] == reasons[1], reasons
    assert reasons[0].startswith(f"suite cifar10-resnet20: CIFAR-10 not found under {empty}: no cifar-10-batches-py/ folder")
