"""A session's validated configuration, read once from the settings (:mod:`.settings`).

Every bad value is a usage error before any case runs: a typo must not cost an hour of runs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pytest

from ..identity import CaseSpec
from ..results.gate import load_baseline
from ..sandbox.methods import ENTRY_POINT_GROUP
from ..shards import Shard
from ..suites.checkpoints import Checkpoint, parse_weights
from ..suites.registry import SUITES
from . import devices
from .settings import flag, raw, under, value

DEFAULT_STORE = "store.sqlite"


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
    tolerance_points: float = 1.0
    tolerance_stds: float = 2.0
    data_root: Path | None = None  # where the vision suites' data is (torchvision's layouts)
    weights: dict[str, tuple[Checkpoint, ...]] = field(default_factory=dict)  # --shrink-weights per suite
    device: str = "cpu"  # resolved: "cpu" or "cuda"
    cache_readonly: bool = False  # --shrink-cache-mode=readonly: base models are prepared, never trained here
    shard: Shard | None = None  # --shrink-shard: this session runs only this slice of the cases
    latency_batch: int | None = None  # --shrink-latency: inputs per timed forward pass; None: no timing
    sandbox: str = "landlock"  # where method code runs: landlock, process or in-process
    require_sandbox: str | None = None  # gate: the least confinement every row must have
    progress_seconds: float = 20.0  # --shrink-progress: seconds between progress lines (0: none)

    def cases(self) -> list[CaseSpec]:
        """The cases this session runs: all of them, or its shard's slice (the same on every process and machine)."""
        every = self.all_cases()
        return self.shard.select(every) if self.shard is not None else every

    def all_cases(self) -> list[CaseSpec]:
        """Every case of the run, in the same order on every xdist worker; several checkpoints of a suite are an axis."""
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


CONFIG_KEY = pytest.StashKey[ShrinkConfig]()
SANDBOX_KEY = pytest.StashKey["Sandbox"]()


def method_folders(config: pytest.Config) -> list[Path]:
    """Where a session looks for method files: ``methods/`` under the rootdir, then the ini's ``shrink_method_dirs``."""
    return [config.rootpath / "methods", *(Path(p) for p in config.getini("shrink_method_dirs"))]


def searched(config: pytest.Config) -> str:
    """Where methods were looked for, for a user whose method is missing (often: pytest ran from another folder)."""
    folders = ", ".join(f"{f}/*.py" + ("" if f.is_dir() else " (no such folder)") for f in method_folders(config))
    return (f"methods are looked for in {folders}, in conftest.py files, and in installed packages' "
            f"{ENTRY_POINT_GROUP!r} entry points; the rootdir is {config.rootpath}")


def select(spec: str, known: Mapping[str, Any], where: str = "") -> list[str]:
    """Names chosen by ``--shrink-method``: a comma list, ``all`` or ``baselines`` (mixable), sorted.

    ``known`` maps each method name to its description (anything with a ``baseline`` attribute); ``where``
    says where they were looked for, for an unknown name's message.
    """
    chosen: set[str] = set()
    for word in (w.strip() for w in spec.split(",")):
        if word == "all":
            chosen.update(known)
        elif word == "baselines":
            chosen.update(n for n, m in known.items() if m.baseline)
        elif word:
            if word not in known:
                close = difflib.get_close_matches(word, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown method {word!r}{hint} (known: {', '.join(sorted(known)) or 'none'})" + (f"; {where}" if where else ""))
            chosen.add(word)
    if not chosen:
        raise ValueError(f"no method selected by {spec!r} (known: {', '.join(sorted(known)) or 'none'})")
    return sorted(chosen)


def parse(config: pytest.Config, known_methods: Mapping[str, Any]) -> ShrinkConfig:
    """Validate every shrinkbench setting; ``known_methods`` are the methods discovered for this session."""
    root = config.rootpath
    missing = [str(f) for f in method_folders(config)[1:] if not f.is_dir()]
    if missing:  # a typo there would silently lose methods
        raise pytest.UsageError(f"shrinkbench: shrink_method_dirs: no such folder {', '.join(missing)}")
    try:
        chosen = select(config.getoption("shrink_method"), known_methods, searched(config))
    except ValueError as exc:
        raise pytest.UsageError(f"shrinkbench: --shrink-method: {exc}") from None
    subjects = read_subjects(config)
    results = under(root, value(config, "shrink_results"))
    store = raw(config, "shrink_store") or str(results / DEFAULT_STORE)
    baseline = under(root, value(config, "shrink_baseline")) if value(config, "shrink_baseline") else None
    if baseline is not None:
        if not baseline.is_file():
            raise pytest.UsageError(f"shrinkbench: --shrink-baseline: no such file {baseline} (write one with --shrink-save-baseline)")
        try:
            load_baseline(baseline)
        except ValueError as exc:
            raise pytest.UsageError(f"shrinkbench: --shrink-baseline: {exc}") from None
    latency = flag(config, "shrink_latency")
    if latency:
        _check_latency_timing(config)
    max_memory = value(config, "shrink_max_memory")
    sandbox = value(config, "shrink_sandbox")
    optional = {name: value(config, name) for name in ("shrink_report", "shrink_save_baseline")}
    return ShrinkConfig(
        methods=chosen,
        **subjects,
        shard=value(config, "shrink_shard"),
        ratios=value(config, "shrink_ratios"),
        seeds=value(config, "shrink_seeds"),
        results_dir=results,
        threads=value(config, "shrink_threads"),
        timeout=value(config, "shrink_timeout"),
        max_memory_gib=max_memory,
        store_path=None if store.lower() == "none" else under(root, store),
        # timing needs the model; a debugging session runs everything (its rows are never stored as verified)
        reuse=not latency and sandbox != "in-process" and flag(config, "shrink_reuse"),
        report_dir=under(root, optional["shrink_report"]) if optional["shrink_report"] else None,
        baseline=baseline,
        save_baseline=under(root, optional["shrink_save_baseline"]) if optional["shrink_save_baseline"] else None,
        tolerance_points=value(config, "shrink_tolerance"),
        tolerance_stds=value(config, "shrink_tolerance_stds"),
        latency_batch=value(config, "shrink_latency_batch") if latency else None,
        sandbox=sandbox,
        require_sandbox=value(config, "shrink_require_sandbox"),
        progress_seconds=value(config, "shrink_progress"),
    )


def _check_latency_timing(config: pytest.Config) -> None:
    """--shrink-latency needs pytest-benchmark actually timing: never under xdist (it switches itself off there,
    and parallel workers would disturb each other's timings), nor with its disable/skip options."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "no":
        raise pytest.UsageError("shrinkbench: --shrink-latency times models with pytest-benchmark, which is off under "
                                "xdist (parallel workers would also disturb each other's timings): run it without -n")
    for name in ("benchmark_disable", "benchmark_skip"):
        if config.getoption(name, False):
            raise pytest.UsageError(f"shrinkbench: --shrink-latency needs pytest-benchmark's timings; drop --{name.replace('_', '-')}")


def read_subjects(config: pytest.Config) -> dict[str, Any]:
    """The settings that decide which base models a run loads, and from where: read alike by a session and by
    ``pytest-shrinkbench prepare``, so the two agree on every base model. Usage errors name the option."""
    root = config.rootpath
    suites = value(config, "shrink_suites")
    unknown = [name for name in suites if name not in SUITES]
    if unknown:
        raise pytest.UsageError(f"shrinkbench: --shrink-suite: unknown suite {unknown[0]!r}; known: {', '.join(SUITES.names())}")
    try:
        weights = parse_weights(raw(config, "shrink_weights") or [], lambda text: under(root, text), SUITES)
    except ValueError as exc:
        raise pytest.UsageError(f"shrinkbench: {exc}") from None  # its messages name the option
    try:
        device = devices.resolve(value(config, "shrink_device"))
    except ValueError as exc:
        raise pytest.UsageError(f"shrinkbench: {exc}") from None  # its messages name the option
    cache, data = value(config, "shrink_cache"), value(config, "shrink_data_root")
    return {
        "suites": suites, "weights": weights, "device": device,
        "cache_dir": under(root, cache) if cache else None,
        "data_root": under(root, data) if data else None,
        "cache_readonly": value(config, "shrink_cache_mode") == "readonly",
    }


def subject_source(config: pytest.Config) -> dict[str, Any]:
    """Where this session's subjects load from (:func:`~..suites.subject.load_subject`'s ``cache_dir``, ``device``,
    ``data_root``, ``readonly``): its validated configuration, or, in a researcher's own tests (no
    ``--shrink-method``), the same settings read now, so both load the same subjects from the same cache."""
    shrink = config.stash.get(CONFIG_KEY, None)
    read = read_subjects(config) if shrink is None else vars(shrink)
    return {"cache_dir": read["cache_dir"], "device": read["device"], "data_root": read["data_root"],
            "readonly": read["cache_readonly"]}
