"""A researcher's first hour, as they see it in the terminal: one line per failed case and its reason wherever they
look, skipped suites named with how to provide their data, a missing method explained, a header that says what
runs, no stray folders, and progress while the cases run."""

from __future__ import annotations

import re

import pytest
import torch

from tests.helpers import only_run

BAD = '''
from pytest_shrinkbench import method


@method("bad")
def bad(ctx):
    masks = ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
    masks["fc1.weight"] = masks["fc1.weight"][:10]
    return masks
'''
REASON = "mask of 'fc1.weight' has shape (10, 64), parameter has (300, 64)"
FAST = ["--shrink-suite=digits-mlp", "--shrink-seeds=0", "-p", "no:randomly"]


def section(lines: list[str], title: str) -> list[str]:
    """The lines of pytest's ``=== title ===`` section, up to the next ``===`` line."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"^=+ {title} =+$", line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("=="))
    return lines[start + 1:end]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_method_failing_every_case_prints_one_line_per_case_and_its_reason_everywhere(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # pytest trims its short summary at the terminal width
    monkeypatch.delenv("CI", raising=False)  # ... but not on CI
    project.mkdir("methods").joinpath("bad.py").write_text(BAD)
    result = project.runpytest_subprocess("--shrink-method=bad,random", "--shrink-ratios=2,4", "--shrink-report=report", *FAST, *workers)
    result.assert_outcomes(passed=2, failed=2)
    lines = result.stdout.lines
    failures = section(lines, "FAILURES")
    assert len(failures) <= 2 * 3, failures  # per case: its header, its one line (and under xdist, the worker's)
    for ratio in (2, 4):
        assert f"[method=bad suite=digits-mlp ratio=x{ratio} seed=0] {REASON}" in failures
    assert "Traceback" not in result.stdout.str() and "tensor(" not in result.stdout.str()
    # The reason in full under pytest's (trimmed) short summary, once for both cases...
    summary = section(lines, "short test summary info")
    assert summary[-1] == f"  bad on digits-mlp (x2 x4 · seed 0): {REASON}"
    assert summary[-2].startswith("shrinkbench: why cases failed, in full")
    # ... in the leaderboard, under its table...
    board = section(lines, "shrinkbench leaderboard: digits-mlp")
    assert board[board.index("failed cases, by reason:") + 1] == f"  bad (x2 x4 · seed 0): {REASON}"
    # ... and in the report's Markdown and HTML.
    assert f"| bad | 2: x2 x4 · seed 0 | {REASON} |" in (project.path / "report" / "leaderboard.md").read_text()
    page = (project.path / "report" / "leaderboard.html").read_text()
    assert "<h3>Failed cases</h3>" in page and REASON.replace("'", "&#x27;") in page
    rows = {r["ratio"]: r for r in only_run(project.path / "results") if r["method"] == "bad"}
    assert rows[2.0]["message"] == f"[method=bad suite=digits-mlp ratio=x2 seed=0] {REASON}", "the row keeps the full message"


def test_tb_long_brings_the_traceback_back(project: pytest.Pytester) -> None:
    project.mkdir("methods").joinpath("bad.py").write_text(BAD)
    result = project.runpytest_subprocess("--shrink-method=bad", "--shrink-ratios=2", "--tb=long", *FAST)
    result.assert_outcomes(failed=1)
    failures = section(result.stdout.lines, "FAILURES")
    assert len(failures) > 10 and any(line.startswith("E   ") and "MaskError" in line for line in failures)


def test_a_harness_error_keeps_its_traceback(project: pytest.Pytester) -> None:
    """Not a verdict on the method (here: a checkpoint that does not fit the suite's model): the traceback stays."""
    torch.save({"not.a.weight": torch.zeros(1)}, project.path / "w.pt")
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-ratios=2", "--shrink-weights=digits-mlp=w.pt", *FAST)
    result.assert_outcomes(errors=1)
    errors = section(result.stdout.lines, "ERRORS")
    assert len(errors) > 10 and any("could not load suite 'digits-mlp'" in line for line in errors)


def test_a_skipped_suite_is_named_with_how_to_provide_its_data_without_rs(project: pytest.Pytester) -> None:
    empty = project.mkdir("data")
    result = project.runpytest_subprocess("--shrink-method=random,global-magnitude", "--shrink-suite=cifar10-resnet56",
                                          f"--shrink-data-root={empty}", "--shrink-ratios=2,4", "--shrink-seeds=0")
    result.assert_outcomes(skipped=4)
    assert result.ret == pytest.ExitCode.OK
    assert not any(line.startswith("SKIPPED") for line in result.stdout.lines), "no -rs given"
    result.stdout.fnmatch_lines([f"shrinkbench: 4 cases skipped: suite cifar10-resnet56: CIFAR-10 not found under {empty}: "
                                 "no cifar-10-batches-py/ folder; provide *torchvision.datasets.CIFAR10(DIR, download=True)*"])


def test_an_unknown_method_says_where_methods_were_looked_for(project: pytest.Pytester) -> None:
    project.mkdir("methods").joinpath("mine.py").write_text(BAD.replace('"bad"', '"mine"'))
    result = project.runpytest_subprocess("--shrink-method=mien")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shrink-method: unknown method 'mien'; did you mean 'mine'?*"])
    # From another folder (here: another rootdir) the method is not found: the message says where it looked.
    elsewhere = project.mkdir("elsewhere")
    result = project.runpytest_subprocess("--shrink-method=mine", f"--rootdir={elsewhere}", "-c", "/dev/null")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*unknown method 'mine' (known: *); methods are looked for in {elsewhere}/methods/*.py "
                                 "(no such folder), in conftest.py files, and in installed packages' "
                                 f"'pytest_shrinkbench.methods' entry points; the rootdir is {elsewhere}*"])


def test_a_method_folder_named_in_the_ini_must_exist(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nshrink_results = results\nshrink_method_dirs = my_methods\n")
    result = project.runpytest_subprocess("--shrink-method=random")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*shrinkbench: shrink_method_dirs: no such folder {project.path / 'my_methods'}*"])


def test_the_header_says_what_runs_and_no_stray_folder_appears(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nshrink_results = results\ntestpaths = tests\n")
    project.mkpydir("tests").joinpath("test_ok.py").write_text("def test_ok():\n    pass\n")
    project.mkdir("benchmarks").joinpath("test_cases.py").write_text(
        "from pytest_shrinkbench.plugin.cases import test_case, test_dense_latency  # noqa: F401\n")
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-ratios=2", "--shrink-seeds=0,1", "--shrink-suite=digits-mlp")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "rootdir: *",
        "shrinkbench: 2 cases: 1 method (random) × suites digits-mlp × ratios x2 × seeds 0 1",
        "shrinkbench: collecting benchmarks (not testpaths: tests)",
        "collected 3 items / 1 deselected / 2 selected",  # the dense latency reference, which runs with --shrink-latency only
    ])
    header = result.stdout.str().split("\ncollected")[0].splitlines()
    assert not any(line.startswith(("testpaths:", "benchmark: ")) for line in header), "nothing untrue, no idle pytest-benchmark defaults"
    assert f"shrinkbench: methods from conftest.py files and installed packages only: no methods/ folder under the rootdir {project.path}" in header
    assert not (project.path / ".benchmarks").exists(), "pytest-benchmark stores nothing when nothing is timed"


def test_progress_lines_under_xdist_and_none_with_q(project: pytest.Pytester) -> None:
    args = ["--shrink-method=random", "--shrink-suite=digits-mlp", "--shrink-ratios=2,4,8", "--shrink-seeds=0,1", "--shrink-progress=0.001"]
    result = project.runpytest_subprocess(*args, "-n", "2")
    result.assert_outcomes(passed=6)
    progress = [line for line in result.stdout.lines if line.startswith("shrinkbench: digits-mlp")]
    pattern = re.compile(r"^shrinkbench: digits-mlp (\d)/6 · \d+:\d\d elapsed · about \d+:\d\d left$")
    assert progress and all(pattern.match(line) for line in progress), progress
    done = [int(pattern.match(line).group(1)) for line in progress]
    assert done == sorted(done) and 1 <= done[0] and done[-1] < 6, "counts only grow; none after the last case"
    dots = "".join(line.split()[0] for line in result.stdout.lines if re.fullmatch(r"\.+( +\[\d+%\])?", line))
    assert dots == "." * 6, "pytest's own progress is intact around the lines"
    assert "PytestBenchmarkWarning" not in result.stdout.str() + result.stderr.str(), "idle pytest-benchmark says nothing"
    assert not (project.path / ".benchmarks").exists()
    quiet = project.runpytest_subprocess(*args, "-q")  # the cases come from the store now
    assert quiet.ret == pytest.ExitCode.OK
    assert not any(line.startswith("shrinkbench: digits-mlp ") for line in quiet.stdout.lines)
