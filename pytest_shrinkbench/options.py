"""Command-line and ini options, parsed once into a validated :class:`ShrinkConfig`.

Every bad value is a usage error before any case runs: a typo must not cost an hour of runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import devices, methods
from .case import CaseSpec
from .checkpoints import Checkpoint, parse_weights
from .gate import DEFAULT_TOLERANCE_POINTS, DEFAULT_TOLERANCE_STDS, load_baseline
from .suites import DEFAULT_SUITES, SUITES

DEFAULT_RATIOS = "1,2,4,8,16,32"
DEFAULT_SEEDS = "0,1,2"
DEFAULT_RESULTS = "shrinkbench-results"
# CPU kernels reduce in a thread-count-dependent order, so the thread count is pinned (not derived
# from -n): the same case gives the same numbers serially and under any number of workers.
DEFAULT_THREADS = "1"
DEFAULT_TIMEOUT = "1800"
DEFAULT_STORE = "store.sqlite"
DEFAULT_LATENCY_BATCH = "64"

# (option, ini name, help); an option given on the command line wins over its ini value.
SETTINGS = [
    ("--shrink-suite", "shrink_suites", f"comma list of suites (default: {','.join(DEFAULT_SUITES)})"),
    ("--shrink-ratios", "shrink_ratios", f"comma list of compression ratios, each >= 1 (default: {DEFAULT_RATIOS})"),
    ("--shrink-seeds", "shrink_seeds", f"comma list of integer seeds (default: {DEFAULT_SEEDS})"),
    ("--shrink-results", "shrink_results", f"folder for the results JSON Lines files (default: <rootdir>/{DEFAULT_RESULTS})"),
    ("--shrink-threads", "shrink_threads", f"torch CPU threads per case (default: {DEFAULT_THREADS}); results are bit-reproducible for a given count, whatever -n is"),
    ("--shrink-timeout", "shrink_timeout", f"seconds one case may take before it fails (default: {DEFAULT_TIMEOUT}; 0: no limit)"),
    ("--shrink-max-memory", "shrink_max_memory", "GiB of address space per test process; an allocation beyond it fails its case (default: no limit; CPU only)"),
    ("--shrink-cache", "shrink_cache", "folder caching base models (default: $SHRINKBENCH_CACHE or ~/.cache/pytest-shrinkbench)"),
    ("--shrink-store", "shrink_store", f"results store, an SQLite file every finished case is written to (default: <results folder>/{DEFAULT_STORE}; 'none': no store, no reuse)"),
    ("--shrink-report", "shrink_report", "also write the report (Markdown, CSV, JSON, HTML, plots) of this session's results into this folder"),
    ("--shrink-baseline", "shrink_baseline", "regression gate: compare mean top-1 per method x suite x ratio to this baseline file; a drop beyond the tolerance fails the session"),
    ("--shrink-save-baseline", "shrink_save_baseline", "write this session's leaderboard as a baseline file (expected mean top-1, std, n per method x suite x ratio)"),
    ("--shrink-tolerance", "shrink_tolerance", f"gate: allowed drop of mean top-1 in percentage points (default: {DEFAULT_TOLERANCE_POINTS:g}); the larger of this and --shrink-tolerance-stds applies"),
    ("--shrink-tolerance-stds", "shrink_tolerance_stds", f"gate: allowed drop in standard deviations over seeds (default: {DEFAULT_TOLERANCE_STDS:g})"),
    ("--shrink-data-root", "shrink_data_root", "folder holding the vision suites' data in torchvision's layouts (default: $SHRINKBENCH_DATA)"),
    ("--shrink-latency-batch", "shrink_latency_batch", f"test inputs per timed forward pass with --shrink-latency (default: {DEFAULT_LATENCY_BATCH})"),
    ("--shrink-device", "shrink_device", "auto|cpu|cuda (default: auto = cuda when available); under -n, worker k uses GPU k mod count"),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("shrinkbench", "pruning benchmark (pytest-shrinkbench)")
    group.addoption(
        "--shrink-method",
        dest="shrink_method",
        default=None,
        help="run the benchmark for these methods: comma list of names, 'all' or 'baselines'",
    )
    for flag, ini, text in SETTINGS:
        group.addoption(flag, dest=ini, default=None, help=text)
        parser.addini(ini, text, default=None)
    group.addoption(
        "--shrink-reuse",
        dest="shrink_reuse",
        action="store_true",
        default=None,
        help="reuse results already in the store for cases with the same key (the default): they are not run again",
    )
    group.addoption(
        "--shrink-rerun",
        dest="shrink_reuse",
        action="store_false",
        help="run every case even if the store has its result (the new result replaces the stored one)",
    )
    parser.addini("shrink_reuse", "reuse stored results of unchanged cases (default: true)", type="bool", default=True)
    group.addoption(
        "--shrink-latency",
        dest="shrink_latency",
        action="store_true",
        default=None,
        help="also time inference (pytest-benchmark) of each suite's dense model and of each case's physically shrunk "
             "model, and record the measured speedup beside the theoretical one; cases are run, not reused; no -n",
    )
    parser.addini("shrink_latency", "time dense and shrunk models (see --shrink-latency)", type="bool", default=False)
    group.addoption(
        "--shrink-weights",
        dest="shrink_weights",
        action="append",
        default=None,
        metavar="SUITE=PATH",
        help="base checkpoint (a state_dict file) for SUITE; repeatable; several for one suite make the checkpoint an axis of the cases",
    )
    parser.addini("shrink_weights", "base checkpoints, one SUITE=PATH a line (the command line replaces them)", type="linelist", default=[])
    parser.addini("shrink_method_dirs", "extra folders whose *.py files register methods (methods/ is always searched)", type="paths", default=[])


@dataclass(frozen=True)
class ShrinkConfig:
    """What the session benchmarks and where results go."""

    methods: list[str]
    suites: list[str]
    ratios: list[float]
    seeds: list[int]
    results_dir: Path
    cache_dir: Path | None
    threads: int
    timeout: float
    max_memory_gib: float | None
    store_path: Path | None = None  # None: no store
    reuse: bool = True
    report_dir: Path | None = None
    baseline: Path | None = None
    save_baseline: Path | None = None
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS
    tolerance_stds: float = DEFAULT_TOLERANCE_STDS
    data_root: Path | None = None  # where the vision suites' data is (torchvision's layouts)
    weights: dict[str, tuple[Checkpoint, ...]] = field(default_factory=dict)  # --shrink-weights per suite
    device: str = "cpu"  # resolved: "cpu" or "cuda"
    latency_batch: int | None = None  # --shrink-latency: inputs per timed forward pass; None: no timing

    def cases(self) -> list[CaseSpec]:
        """Every case, in the same order on every xdist worker; several checkpoints of a suite are an axis."""
        return [
            CaseSpec(m, s, r, seed, weights=tag)
            for s in self.suites
            for tag in [c.tag for c in self.weights.get(s, ()) if c.tag] or [None]
            for m in self.methods
            for r in self.ratios
            for seed in self.seeds
        ]

    def checkpoint(self, suite: str, tag: str | None) -> Checkpoint | None:
        """The checkpoint a case of ``suite`` with weights ``tag`` starts from (None: the suite's own base weights)."""
        given = self.weights.get(suite, ())
        return next((c for c in given if c.tag == tag), None)


def _setting(config: pytest.Config, ini: str, default: str | None) -> str | None:
    value = config.getoption(ini)
    if value is None:
        value = config.getini(ini)
    return default if value in (None, "") else str(value)


def _number_list(text: str, what: str, parse: type) -> list:
    words = [w.strip() for w in text.replace(" ", ",").split(",") if w.strip()]
    if not words:
        raise pytest.UsageError(f"shrinkbench: {what} is empty")
    try:
        values = [parse(w) for w in words]
    except ValueError:
        raise pytest.UsageError(f"shrinkbench: {what} must be a comma list of {parse.__name__}s, got {text!r}") from None
    return list(dict.fromkeys(values))


def _one_number(config: pytest.Config, ini: str, default: str | None, what: str, minimum: float, parse: type = float):
    """A single number >= ``minimum``, or None when unset and without default."""
    text = _setting(config, ini, default)
    if text is None:
        return None
    values = _number_list(text, what, parse)
    if len(values) != 1 or not math.isfinite(values[0]) or values[0] < minimum:
        raise pytest.UsageError(f"shrinkbench: {what} must be one {parse.__name__} >= {minimum:g}, got {text!r}")
    return values[0]


def _under(root: Path, path: Path) -> Path:
    """Relative paths are taken from the rootdir, so every xdist worker resolves them alike."""
    return path if path.is_absolute() else root / path


def parse(config: pytest.Config) -> ShrinkConfig:
    """Validate every shrinkbench option (methods must already be registered)."""
    try:
        chosen = methods.select(config.getoption("shrink_method"))
    except KeyError as exc:
        raise pytest.UsageError(f"shrinkbench: --shrink-method: {exc.args[0]}") from None
    suites = [s.strip() for s in _setting(config, "shrink_suites", ",".join(DEFAULT_SUITES)).split(",") if s.strip()]
    if not suites:
        raise pytest.UsageError("shrinkbench: --shrink-suite is empty")
    for name in suites:
        if name not in SUITES:
            raise pytest.UsageError(f"shrinkbench: unknown suite {name!r}; known: {', '.join(SUITES.names())}")
    ratios = _number_list(_setting(config, "shrink_ratios", DEFAULT_RATIOS), "--shrink-ratios", float)
    bad = [r for r in ratios if not math.isfinite(r) or r < 1]
    if bad:
        raise pytest.UsageError(f"shrinkbench: compression ratios must be finite and >= 1, got {bad}")
    seeds = _number_list(_setting(config, "shrink_seeds", DEFAULT_SEEDS), "--shrink-seeds", int)
    threads = _one_number(config, "shrink_threads", DEFAULT_THREADS, "--shrink-threads", minimum=1, parse=int)
    timeout = _one_number(config, "shrink_timeout", DEFAULT_TIMEOUT, "--shrink-timeout", minimum=0)
    max_memory = _one_number(config, "shrink_max_memory", None, "--shrink-max-memory", minimum=0.1)
    results = _under(config.rootpath, Path(_setting(config, "shrink_results", DEFAULT_RESULTS)))
    cache = _setting(config, "shrink_cache", None)
    store = _setting(config, "shrink_store", str(results / DEFAULT_STORE))
    reuse = config.getoption("shrink_reuse")
    paths = {name: _setting(config, name, None) for name in ("shrink_report", "shrink_baseline", "shrink_save_baseline")}
    tolerances = {
        name: _one_number(config, name, str(default), "--" + name.replace("_", "-"), minimum=0)
        for name, default in (("shrink_tolerance", DEFAULT_TOLERANCE_POINTS), ("shrink_tolerance_stds", DEFAULT_TOLERANCE_STDS))
    }
    baseline = _under(config.rootpath, Path(paths["shrink_baseline"])) if paths["shrink_baseline"] else None
    if baseline is not None:
        if not baseline.is_file():
            raise pytest.UsageError(f"shrinkbench: --shrink-baseline: no such file {baseline} (write one with --shrink-save-baseline)")
        try:
            load_baseline(baseline)
        except ValueError as exc:
            raise pytest.UsageError(f"shrinkbench: --shrink-baseline: {exc}") from None
    data_root = _setting(config, "shrink_data_root", None)
    if data_root is None and os.environ.get("SHRINKBENCH_DATA"):
        data_root = str(Path(os.environ["SHRINKBENCH_DATA"]).absolute())
    try:
        weights = parse_weights(
            config.getoption("shrink_weights") or config.getini("shrink_weights"),
            lambda text: _under(config.rootpath, Path(text).expanduser()),
            SUITES,
        )
        device = devices.resolve(_setting(config, "shrink_device", "auto"))
    except ValueError as exc:
        raise pytest.UsageError(f"shrinkbench: {exc}") from None
    latency = config.getoption("shrink_latency") or config.getini("shrink_latency")
    latency_batch = _one_number(config, "shrink_latency_batch", DEFAULT_LATENCY_BATCH, "--shrink-latency-batch", minimum=1, parse=int)
    if latency:
        _check_latency_timing(config)
    if max_memory is not None and device == "cuda":
        raise pytest.UsageError("shrinkbench: --shrink-max-memory caps address space, which CUDA needs far more of; use it with --shrink-device=cpu")
    return ShrinkConfig(
        methods=chosen,
        suites=list(dict.fromkeys(suites)),
        ratios=sorted(ratios),
        seeds=sorted(seeds),
        results_dir=results,
        cache_dir=_under(config.rootpath, Path(cache)) if cache else None,
        threads=threads,
        timeout=timeout,
        max_memory_gib=max_memory,
        store_path=None if store.lower() == "none" else _under(config.rootpath, Path(store)),
        reuse=not latency and (config.getini("shrink_reuse") if reuse is None else reuse),  # timing needs the model
        report_dir=_under(config.rootpath, Path(paths["shrink_report"])) if paths["shrink_report"] else None,
        baseline=baseline,
        save_baseline=_under(config.rootpath, Path(paths["shrink_save_baseline"])) if paths["shrink_save_baseline"] else None,
        tolerance_points=tolerances["shrink_tolerance"],
        tolerance_stds=tolerances["shrink_tolerance_stds"],
        data_root=_under(config.rootpath, Path(data_root).expanduser()) if data_root else None,
        weights=weights,
        device=device,
        latency_batch=latency_batch if latency else None,
    )


def _check_latency_timing(config: pytest.Config) -> None:
    """--shrink-latency needs pytest-benchmark actually timing: never under xdist (it switches itself off there,
    and parallel workers would disturb each other's timings), nor with its disable/skip options."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "no":
        raise pytest.UsageError("shrinkbench: --shrink-latency times models with pytest-benchmark, which is off under "
                                "xdist (parallel workers would also disturb each other's timings): run it without -n")
    for flag in ("benchmark_disable", "benchmark_skip"):
        if config.getoption(flag, False):
            raise pytest.UsageError(f"shrinkbench: --shrink-latency needs pytest-benchmark's timings; drop --{flag.replace('_', '-')}")
