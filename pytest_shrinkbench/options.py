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
from .suites import DEFAULT_SUITES, SUITES

DEFAULT_RATIOS = "1,2,4,8,16,32"
DEFAULT_SEEDS = "0,1,2"
DEFAULT_RESULTS = "shrinkbench-results"
# CPU kernels reduce in a thread-count-dependent order, so the thread count is pinned (not derived
# from -n): the same case gives the same numbers serially and under any number of workers.
DEFAULT_THREADS = "1"

# (option, ini name, help); an option given on the command line wins over its ini value.
SETTINGS = [
    ("--shrink-suite", "shrink_suites", f"comma list of suites (default: {','.join(DEFAULT_SUITES)})"),
    ("--shrink-ratios", "shrink_ratios", f"comma list of compression ratios, each >= 1 (default: {DEFAULT_RATIOS})"),
    ("--shrink-seeds", "shrink_seeds", f"comma list of integer seeds (default: {DEFAULT_SEEDS})"),
    ("--shrink-results", "shrink_results", f"folder for the results JSON Lines files (default: <rootdir>/{DEFAULT_RESULTS})"),
    ("--shrink-threads", "shrink_threads", f"torch CPU threads per case (default: {DEFAULT_THREADS}); results are bit-reproducible for a given count, whatever -n is"),
    ("--shrink-cache", "shrink_cache", "folder caching base models (default: $SHRINKBENCH_CACHE or ~/.cache/pytest-shrinkbench)"),
    ("--shrink-data-root", "shrink_data_root", "folder holding the vision suites' data in torchvision's layouts (default: $SHRINKBENCH_DATA)"),
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
    data_root: Path | None = None  # where the vision suites' data is (torchvision's layouts)
    weights: dict[str, tuple[Checkpoint, ...]] = field(default_factory=dict)  # --shrink-weights per suite
    device: str = "cpu"  # resolved: "cpu" or "cuda"

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
    threads = _number_list(_setting(config, "shrink_threads", DEFAULT_THREADS), "--shrink-threads", int)
    if len(threads) != 1 or threads[0] < 1:
        raise pytest.UsageError(f"shrinkbench: --shrink-threads must be one integer >= 1, got {threads}")
    results = Path(_setting(config, "shrink_results", DEFAULT_RESULTS))
    cache = _setting(config, "shrink_cache", None)
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
    return ShrinkConfig(
        methods=chosen,
        suites=list(dict.fromkeys(suites)),
        ratios=sorted(ratios),
        seeds=sorted(seeds),
        results_dir=_under(config.rootpath, results),
        cache_dir=_under(config.rootpath, Path(cache)) if cache else None,
        threads=threads[0],
        data_root=_under(config.rootpath, Path(data_root).expanduser()) if data_root else None,
        weights=weights,
        device=device,
    )
