"""The plugin end to end, run as a user runs it: ``pytest --shrink-method=...`` in a project (pytester)."""

from __future__ import annotations

import pytest

from tests.helpers import only_run, result_rows

FAST = ["--shrink-suite=digits-mlp", "--shrink-ratios=1,4", "--shrink-seeds=0,1", "-p", "no:randomly"]
METRICS = ("top1", "top5", "top1_pre", "params_total", "params_nonzero", "compression", "flops_dense", "flops_sparse", "speedup")




@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_leaderboard_and_results_file(project: pytest.Pytester, workers: list[str]) -> None:
    result = project.runpytest_subprocess("--shrink-method=global-magnitude,random", *FAST, *workers)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines([
        "*shrinkbench leaderboard: digits-mlp*",
        "ratio*method*rank*top-1 (fine-tuned)*top-1 (pruned)*compression*speedup*seeds*",
        "x1*global-magnitude*tied*x1.0*2",  # at x1 both are the unpruned model: no winner
        "x1*random*tied*x1.0*2",
        "x4*global-magnitude*[*]1*x4.0*2",
        "x4*random*2*x4.0*2",
        "tied: every ranked method has the same mean top-1 at this ratio*",
        "*8 results written to*results*.jsonl",
    ])
    rows = only_run(project.path / "results")
    assert [(r["method"], r["ratio"], r["seed"]) for r in rows] == [
        (m, r, s) for m in ("global-magnitude", "random") for r in (1.0, 4.0) for s in (0, 1)
    ]
    for row in rows:
        assert row["status"] == "passed" and row["message"] is None
        assert row["suite"] == "digits-mlp"
        assert row["params_total"] == 50610
        assert row["params_nonzero"] == round(50610 / row["ratio"])
        assert row["compression"] == pytest.approx(row["ratio"], rel=1e-3)
        assert row["flops_sparse"] < row["flops_dense"] or row["ratio"] == 1
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
        assert len(row["base_sha256"]) == 64
        assert row["torch"].startswith("2.")
    assert len({r["base_sha256"] for r in rows}) == 1, "every case must start from the same base weights"
    ok = next(r for r in rows if r["method"] == "global-magnitude" and r["ratio"] == 4.0)
    assert ok["top1"] > 0.9, "fine-tuned global magnitude at x4 on digits must stay accurate"


def test_same_numbers_with_and_without_xdist(project: pytest.Pytester) -> None:
    """Seeds fix everything: the worker count (and so the thread count) must not change a metric."""
    args = ["--shrink-method=layer-gradient", "--shrink-suite=digits-cnn", "--shrink-ratios=8", "--shrink-seeds=0,1"]
    project.runpytest_subprocess(*args, "--shrink-results=serial").assert_outcomes(passed=2)
    project.runpytest_subprocess(*args, "--shrink-results=xdist", "-n", "2").assert_outcomes(passed=2)
    serial, parallel = (
        result_rows(project.path / d)
        for d in ("serial", "xdist")
    )
    assert [{k: r[k] for k in METRICS} for r in serial] == [{k: r[k] for k in METRICS} for r in parallel]


def test_without_the_option_benchmarks_are_not_collected(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\ntestpaths = tests\n")
    project.mkpydir("tests").joinpath("test_ok.py").write_text("def test_ok():\n    pass\n")
    project.mkdir("benchmarks").joinpath("test_cases.py").write_text("from pytest_shrinkbench.plugin.cases import test_case\n")
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "leaderboard" not in result.stdout.str()
    # With the option, the project's benchmarks/ folder is collected instead of its tests.
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*benchmarks/test_cases.py::test_case[[]random-digits-mlp-x2-seed0[]] PASSED*"])


def test_methods_from_methods_folder_and_conftest(project: pytest.Pytester) -> None:
    project.mkdir("methods").joinpath("mine.py").write_text(
        "from pytest_shrinkbench import method\n\n"
        "@method('mine')\n"
        "def mine(ctx):\n"
        "    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()}, layerwise=True)\n"
    )
    project.makeconftest(
        "from pytest_shrinkbench import method\n\n"
        "@method('in-conftest')\n"
        "def in_conftest(ctx):\n"
        "    return ctx.keep_top({n: -w.detach().abs() for n, w in ctx.prunable.items()})\n"
    )
    result = project.runpytest_subprocess("--shrink-method=mine,in-conftest", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_case[[]in-conftest-digits-mlp-x2-seed0[]] PASSED*", "*test_case[[]mine-digits-mlp-x2-seed0[]] PASSED*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shrink-method=nope"], "*--shrink-method: unknown method 'nope' (known: global-gradient, global-magnitude, gradual-magnitude, l1-filter, layer-gradient, layer-magnitude, random, "
         "row-magnitude, row-magnitude-2of4, sparsegpt, sparsegpt-2of4, wanda, wanda-2of4)*"),
        (["--shrink-method=random", "--shrink-ratios=0.5"], "*--shrink-ratios: each value must be a finite number >= 1, got 0.5*"),
        (["--shrink-method=random", "--shrink-ratios=two"], "*--shrink-ratios: must be a comma list of floats*"),
        (["--shrink-method=random", "--shrink-seeds=,"], "*--shrink-seeds: is empty*"),
        (["--shrink-method=random", "--shrink-suite=cifar99"], "*--shrink-suite: unknown suite 'cifar99'*"),
        (["--shrink-method=random", "--shrink-timeout=-1"], "*--shrink-timeout: must be one float >= 0, got '-1'*"),
        (["--shrink-method=random", "--shrink-threads=0"], "*--shrink-threads: must be one int >= 1, got '0'*"),
        (["--shrink-method=random", "--shrink-max-memory=lots"], "*--shrink-max-memory: must be one float >= 0.1, got 'lots'*"),
        (["--shrink-method=random", "--shrink-ratios=2,nan"], "*--shrink-ratios: each value must be a finite number >= 1, got nan*"),
    ],
    ids=["unknown-method", "ratio-below-one", "ratio-not-a-number", "no-seeds", "unknown-suite", "negative-timeout",
         "zero-threads", "memory-not-a-number", "ratio-nan"],
)
def test_bad_options_are_usage_errors(project: pytest.Pytester, args: list[str], message: str) -> None:
    result = project.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_baselines_selection(project: pytest.Pytester) -> None:
    project.makeconftest(
        "from pytest_shrinkbench import method\n\n"
        "@method('not-a-baseline')\n"
        "def other(ctx):\n"
        "    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})\n"
    )
    result = project.runpytest_subprocess("--shrink-method=baselines", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0", "--collect-only", "-q")
    ids = sorted(line.split("[")[1].rstrip("]") for line in result.stdout.lines if "::test_case[" in line)
    assert ids == [f"{m}-digits-mlp-x2-seed0" for m in ("global-gradient", "global-magnitude", "gradual-magnitude", "l1-filter", "layer-gradient", "layer-magnitude",
                                                         "random", "row-magnitude-2of4", "row-magnitude", "sparsegpt-2of4", "sparsegpt",
                                                         "wanda-2of4", "wanda")]  # sorted ids: "-2of4-digits" < "-digits"


def test_sessions_in_one_process_keep_installed_methods_only(project: pytest.Pytester) -> None:
    """In-process sessions (notebooks, pytester): baselines stay registered, a project's methods do not leak."""
    project.makeconftest(
        "from pytest_shrinkbench import method\n\n"
        "@method('local')\n"
        "def local(ctx):\n"
        "    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})\n"
    )
    first = project.runpytest_inprocess("--shrink-method=all", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0", "--collect-only", "-q")
    assert sum("::test_case[" in line for line in first.stdout.lines) == 14
    (project.path / "conftest.py").unlink()
    second = project.runpytest_inprocess("--shrink-method=all", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0", "--collect-only", "-q")
    ids = [line for line in second.stdout.lines if "::test_case[" in line]
    assert len(ids) == 13 and not any("local" in line for line in ids)


def test_a_broken_method_file_costs_only_its_own_methods(project: pytest.Pytester) -> None:
    methods = project.mkdir("methods")
    methods.joinpath("broken.py").write_text("from pytest_shrinkbench import method\n\n@method('broken')\ndef broken(ctx)\n    pass\n")
    result = project.runpytest_subprocess("--shrink-method=random", "--shrink-suite=digits-mlp", "--shrink-ratios=2", "--shrink-seeds=0")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*shrinkbench: method files that could not be used*broken.py: failed to import: SyntaxError*"])
    # Asking for a method of the broken file says why it is unknown.
    result = project.runpytest_subprocess("--shrink-method=broken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown method 'broken'*(method files that could not be used: *broken.py: failed to import: SyntaxError*"])
