"""Every setting of the plugin, declared once: its flag, ini name, environment variable, default, parser and help.

The command-line options, the ini options, the values a session reads and the options table in
docs/options.md all come from :data:`SETTINGS`; a test fails when the docs and this table differ.
A value is taken from the command line, else the ini file, else the environment variable, else the
default. Every parser raises ``ValueError`` with a message the caller prefixes with the flag, so a
usage error always names the option it is about.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from ..shards import Shard


def words(text: str) -> list[str]:
    """A comma (or space) separated list, without empty items or repeats, in the order given."""
    return list(dict.fromkeys(w.strip() for w in text.replace(" ", ",").split(",") if w.strip()))


def _nonempty(text: str) -> list[str]:
    found = words(text)
    if not found:
        raise ValueError("is empty")
    return found


def _numbers(parse: type, minimum: float) -> Callable[[str], list]:
    def numbers(text: str) -> list:
        given = _nonempty(text)
        try:
            values = [parse(w) for w in given]
        except ValueError:
            raise ValueError(f"must be a comma list of {parse.__name__}s, got {text!r}") from None
        bad = [v for v in values if not math.isfinite(v) or v < minimum]
        if bad:
            raise ValueError(f"each value must be a finite number >= {minimum:g}, got {', '.join(f'{v:g}' for v in bad)}")
        return sorted(dict.fromkeys(values))

    return numbers


def _one(parse: type, minimum: float) -> Callable[[str], Any]:
    def one(text: str) -> Any:
        values = words(text)
        try:
            value = parse(values[0]) if len(values) == 1 else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum:
            raise ValueError(f"must be one {parse.__name__} >= {minimum:g}, got {text!r}")
        return value

    return one


def _choice(*choices: str) -> Callable[[str], str]:
    def choice(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text.strip()

    return choice


def _text(text: str) -> str:
    return text.strip()


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind``: ``value`` (takes text), ``flag`` (on/off; ``off`` names the flag that turns
    it off), ``append`` (repeatable; one per line in the ini file), ``paths`` (ini only)."""

    name: str  # the ini name and the options' dest
    flag: str | None
    help: str
    default: str | None = None
    env: str | None = None
    parse: Callable[[str], Any] = _text
    kind: str = "value"
    ini: bool = True
    off: str | None = None
    off_help: str = ""
    metavar: str | None = None

    @property
    def label(self) -> str:
        """How messages name the setting: its flag, else its ini name."""
        return self.flag or self.name


SETTINGS: tuple[Setting, ...] = (
    Setting("shrink_method", "--shrink-method", "methods to benchmark: comma list of names, 'all' or 'baselines'; "
            "without it the plugin does nothing", ini=False),
    Setting("shrink_suites", "--shrink-suite", "comma list of suites", default="digits-cnn,digits-mlp", parse=_nonempty),
    Setting("shrink_ratios", "--shrink-ratios", "comma list of requested compression ratios, each >= 1",
            default="1,2,4,8,16,32", parse=_numbers(float, 1)),
    Setting("shrink_seeds", "--shrink-seeds", "comma list of integer seeds", default="0,1,2", parse=_numbers(int, -math.inf)),
    Setting("shrink_shard", "--shrink-shard", "run only shard K of N (K/N, 1 <= K <= N): a deterministic, balanced "
            "1/N of the cases, the same on every machine; give each shard its own --shrink-results and merge them "
            "with 'pytest-shrinkbench report' (docs/cluster.md)", parse=Shard.parse, metavar="K/N"),
    Setting("shrink_results", "--shrink-results", "folder for the results files (relative: to the rootdir)",
            default="shrinkbench-results"),
    Setting("shrink_cache", "--shrink-cache", "folder caching base models (default: the user cache dir, "
            "~/.cache/pytest-shrinkbench)", env="SHRINKBENCH_CACHE"),
    Setting("shrink_cache_mode", "--shrink-cache-mode", "readwrite: train a missing base model into the cache (under a "
            "file lock); readonly: never train, lock or write there, and fail a suite's cases whose base model is "
            "missing, naming the 'pytest-shrinkbench prepare' command (for shards reading models prepared once)",
            default="readwrite", parse=_choice("readwrite", "readonly")),
    Setting("shrink_threads", "--shrink-threads", "torch CPU threads per case; results are bit-reproducible for a "
            "given count, whatever -n is", default="1", parse=_one(int, 1)),
    Setting("shrink_timeout", "--shrink-timeout", "seconds one case may take before it fails (0: no limit)",
            default="1800", parse=_one(float, 0)),
    Setting("shrink_import_timeout", "--shrink-import-timeout", "seconds a method file or module may take to import, "
            "at discovery (each file in a child of its own) and in each case's child; a file past it is reported "
            "and its methods' cases fail (0: no limit)", default="120", parse=_one(float, 0)),
    Setting("shrink_max_memory", "--shrink-max-memory", "GiB of memory a case's method may use over all of its processes "
            "(a cgroup's memory.max; where the fork server cannot make cgroups, each process's address space, CPU only); "
            "past it the case fails", default="8", parse=_one(float, 0.1)),
    Setting("shrink_sandbox", "--shrink-sandbox", "where method code runs: 'landlock' (a disposable child process per "
            "case behind Landlock walls; 'process' where the kernel lacks Landlock, said once per session), 'process' "
            "(a child process, no walls) or 'in-process' (for debuggers: its rows are unverified)", default="landlock",
            parse=_choice("landlock", "process", "in-process")),
    Setting("shrink_require_sandbox", "--shrink-require-sandbox", "fail the session unless every case's method ran at "
            "least this confined: 'landlock' or 'process' (for CI)", parse=_choice("landlock", "process")),
    Setting("shrink_store", "--shrink-store", "results store, an SQLite file every finished case is written to "
            "(default: <results folder>/store.sqlite; 'none': no store, no reuse)"),
    Setting("shrink_reuse", "--shrink-reuse", "reuse results already in the store for cases with the same key "
            "(they are not run again)", default="true", kind="flag", off="--shrink-rerun",
            off_help="run every case even if the store has its result (the new result replaces the stored one)"),
    Setting("shrink_report", "--shrink-report", "also write this session's report (Markdown, CSV, JSON, HTML, "
            "plots) into this folder"),
    Setting("shrink_baseline", "--shrink-baseline", "regression gate: compare each suite's metric (mean top-1, or "
            "perplexity) per method x suite x ratio to this baseline file; a worsening beyond the tolerance fails the session"),
    Setting("shrink_save_baseline", "--shrink-save-baseline", "write this session's leaderboard as a baseline file"),
    Setting("shrink_tolerance", "--shrink-tolerance", "gate: allowed drop of mean top-1 in percentage points, or rise "
            "of mean perplexity in percent of the baseline's (the larger of this and --shrink-tolerance-stds applies)",
            default="1", parse=_one(float, 0)),
    Setting("shrink_tolerance_stds", "--shrink-tolerance-stds", "gate: allowed worsening in standard deviations over seeds",
            default="2", parse=_one(float, 0)),
    Setting("shrink_data_root", "--shrink-data-root", "folder holding the vision suites' data in torchvision's layouts",
            env="SHRINKBENCH_DATA"),
    Setting("shrink_weights", "--shrink-weights", "base checkpoint (a state_dict file) for SUITE; repeatable (one a "
            "line in the ini file); several for one suite make the checkpoint an axis of the cases",
            kind="append", metavar="SUITE=PATH"),
    Setting("shrink_device", "--shrink-device", "auto|cpu|cuda (auto: cuda when available); under -n, worker k uses "
            "GPU k mod count", default="auto", parse=_choice("auto", "cpu", "cuda")),
    Setting("shrink_latency", "--shrink-latency", "also time inference (pytest-benchmark) of each suite's dense model "
            "and of each case's physically shrunk model; cases are run, not reused; no -n", default="false", kind="flag"),
    Setting("shrink_latency_batch", "--shrink-latency-batch", "test inputs per timed forward pass with --shrink-latency",
            default="64", parse=_one(int, 1)),
    Setting("shrink_progress", "--shrink-progress", "seconds between progress lines (per suite: cases done / total; "
            "elapsed; estimated time left); 0: none; -q shows none", default="20", parse=_one(float, 0)),
    # Round 3 (part B): caps on a case's processes and what a method may read
    Setting("shrink_max_processes", "--shrink-max-processes", "processes and threads a case's method may run at once "
            "(a cgroup's pids.max; without one, RLIMIT_NPROC, which root ignores); a fork past it fails the case",
            default="512", parse=_one(int, 16)),
    Setting("shrink_max_disk", "--shrink-max-disk", "GiB a case's method may write to its private folder (a tmpfs of "
            "its own where the fork server may mount one, else per file); past it the case fails", default="0.25",
            parse=_one(float, 0.001)),
    Setting("shrink_hidden_paths", None, "more paths no method may read, like the cache, the data root and the "
            "embedded suites' data files (a held-out set of your own)", kind="paths"),
    Setting("shrink_method_dirs", None, "more folders whose *.py files hold methods (methods/ under the rootdir is "
            "always searched)", kind="paths"),
)
BY_NAME = {s.name: s for s in SETTINGS}


def add_options(parser: pytest.Parser) -> None:
    """Declare every setting as a command-line option and an ini option."""
    group = parser.getgroup("shrinkbench", "pruning benchmark (pytest-shrinkbench)")
    for s in SETTINGS:
        shown = f"{s.help} (default: {s.default})" if s.default is not None and s.kind == "value" else s.help
        if s.kind == "flag":
            group.addoption(s.flag, dest=s.name, action="store_true", default=None, help=shown)
            if s.off:
                group.addoption(s.off, dest=s.name, action="store_false", help=s.off_help)
            parser.addini(s.name, s.help, type="bool", default=s.default == "true")
        elif s.kind == "append":
            group.addoption(s.flag, dest=s.name, action="append", default=None, metavar=s.metavar, help=shown)
            parser.addini(s.name, s.help, type="linelist", default=[])
        elif s.kind == "paths":
            parser.addini(s.name, s.help, type="paths", default=[])
        else:
            group.addoption(s.flag, dest=s.name, default=None, metavar=s.metavar, help=shown)
            if s.ini:
                parser.addini(s.name, s.help, default=None)


def raw(config: pytest.Config, name: str) -> Any:
    """A setting as given: command line, else ini, else environment, else None (no default applied)."""
    s = BY_NAME[name]
    value = config.getoption(name, None) if s.flag else None
    if value in (None, "", []) and s.ini:
        value = config.getini(name)
    if value in (None, "", []) and s.env and os.environ.get(s.env):
        value = str(Path(os.environ[s.env]).expanduser().absolute())  # environment paths: from the current folder
    return None if value in ("", []) else value


def value(config: pytest.Config, name: str) -> Any:
    """A ``value`` setting, parsed (its default when unset; None when it has none). Raises ``pytest.UsageError``
    naming the flag when the value is invalid."""
    s = BY_NAME[name]
    text = raw(config, name)
    if text is None:
        text = s.default
    if text is None:
        return None
    try:
        return s.parse(str(text))
    except ValueError as exc:
        raise pytest.UsageError(f"shrinkbench: {s.label}: {exc}") from None


def flag(config: pytest.Config, name: str) -> bool:
    """An on/off setting: the command line (either of its flags), else the ini file."""
    given = config.getoption(name, None)
    return bool(config.getini(name) if given is None else given)


def under(root: Path, text: str) -> Path:
    """Relative paths are taken from the rootdir, so every xdist worker resolves them alike."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def markdown_table() -> str:
    """The settings as the Markdown table of docs/options.md."""
    lines = ["| option | ini | environment | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        flag = f"`{s.flag}`" + (f" / `{s.off}`" if s.off else "") if s.flag else ""
        ini = f"`{s.name}`" if s.ini else ""
        env = f"`${s.env}`" if s.env else ""
        default = f"`{s.default}`" if s.default is not None else ""
        lines.append(f"| {flag} | {ini} | {env} | {default} | {s.help} |")
    return "\n".join(lines)
