"""Every setting is declared once: the flags, the ini options and the docs' options table all come from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_shrinkbench.plugin.settings import SETTINGS, markdown_table

DOCS = Path(__file__).parents[2] / "docs" / "options.md"


def test_the_docs_options_table_is_the_declared_settings() -> None:
    text = DOCS.read_text()
    table = text.split("<!-- settings table: begin -->\n", 1)[1].split("\n<!-- settings table: end -->", 1)[0]
    assert table == markdown_table(), "docs/options.md is stale: regenerate it with `pytest-shrinkbench options`"


def test_every_declared_setting_is_an_option_and_an_ini_value(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    for setting in SETTINGS:
        if setting.flag:
            assert setting.flag in help_text, setting.flag
        if setting.off:
            assert setting.off in help_text, setting.off
        if setting.ini:
            assert f"{setting.name} " in help_text, setting.name


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("--shrink-ratios=0.5", "--shrink-ratios: each value must be a finite number >= 1, got 0.5"),
        ("--shrink-ratios=two", "--shrink-ratios: must be a comma list of floats, got 'two'"),
        ("--shrink-seeds=,", "--shrink-seeds: is empty"),
        ("--shrink-threads=0", "--shrink-threads: must be one int >= 1, got '0'"),
        ("--shrink-timeout=-1", "--shrink-timeout: must be one float >= 0, got '-1'"),
        ("--shrink-device=tpu", "--shrink-device: must be one of auto, cpu, cuda, got 'tpu'"),
        ("--shrink-suite=digits-cnm", "--shrink-suite: unknown suite 'digits-cnm'"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_its_option(pytester: pytest.Pytester, given: str, message: str) -> None:
    result = pytester.runpytest("--shrink-method=global-magnitude", given)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*shrinkbench: {message}*"])


def test_an_ini_value_is_checked_like_a_flag(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nshrink_ratios = 1, 0.25\n")
    result = pytester.runpytest("--shrink-method=global-magnitude")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*shrinkbench: --shrink-ratios: each value must be a finite number >= 1, got 0.25*"])


def test_the_options_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_shrinkbench.cli import main

    assert main(["options"]) == 0
    assert capsys.readouterr().out.strip() == markdown_table()
