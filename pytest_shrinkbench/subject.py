"""Subjects: a suite made concrete — its data and base weights, trained once, cached and verified."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor, nn
from torch.utils.data import default_collate

from .data import Splits
from .masks import prunable_modules
from .metrics import module_flops
from .suites import SUITES, Suite
from .training import evaluate, fit

BASE_TRAINING_SEED = 0
BASE_TRAINING_THREADS = 1
CHECK_BATCH = 128


def default_cache_dir() -> Path:
    """``$SHRINKBENCH_CACHE``, else the user cache dir: outside any repository, shared by all projects."""
    if os.environ.get("SHRINKBENCH_CACHE"):
        return Path(os.environ["SHRINKBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-shrinkbench"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Subject:
    """One suite in one session: data, base weights (with their sha256) and dense FLOPs per layer."""

    suite: Suite
    data: Splits
    state: dict[str, Tensor]
    sha256: str
    checkpoint: Path
    device: torch.device
    base_top1: float = field(init=False)
    base_top5: float = field(init=False)
    dense_flops: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        model = self.fresh_model()
        self.base_top1, self.base_top5 = evaluate(model, self.data.test, device=self.device)
        self.dense_flops = module_flops(model, self.suite.input_shape, list(prunable_modules(model)))

    def fresh_model(self) -> nn.Module:
        """A new model holding the base weights: every case starts from exactly this."""
        model = self.suite.build_model().to(self.device)
        model.load_state_dict(self.state)
        return model

    def batch(self, seed: int, size: int = 256) -> tuple[Tensor, Tensor]:
        """A seeded batch of *training* examples, for methods that score weights by data."""
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(seed))
        inputs, targets = default_collate([self.data.train[i] for i in order[:size].tolist()])
        return inputs.to(self.device), targets.to(self.device)

    def check_inputs(self) -> Tensor:
        """Fixed training inputs on which the invariants compare logits."""
        inputs, _ = default_collate([self.data.train[i] for i in range(min(CHECK_BATCH, len(self.data.train)))])
        return inputs.to(self.device)


def checkpoint_key(suite: Suite) -> str:
    """Cache key of a suite's trained base model: a new recipe, architecture or torch gets a new file."""
    blob = json.dumps(
        {"suite": suite.name, "recipe": asdict(suite.base_recipe), "arch": repr(suite.build_model()), "torch": torch.__version__},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_subject(suite_name: str, cache_dir: Path | None = None, device: str | torch.device = "cpu") -> Subject:
    """Load (training and caching on first use) the subject of ``suite_name``.

    Training happens under a file lock in the cache dir, so among ``-n N`` xdist workers exactly
    one trains while the others wait and then load the same file. A cached file whose sha256
    does not match its record is retrained, never used.
    """
    suite = SUITES.get(suite_name)
    device = torch.device(device)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{suite.name}-{checkpoint_key(suite)}.pt"
    record = path.with_suffix(".json")
    data = suite.load_data()
    with FileLock(str(path) + ".lock"):
        sha = _verified_sha(path, record)
        if sha is None:
            sha = _train_and_store(suite, data, path, record, device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # weights_only refuses pickles that would run code
        raise RuntimeError(f"refusing base checkpoint {path} of suite {suite.name!r}: it is not a plain tensor state_dict ({exc})") from exc
    return Subject(suite, data, state, sha, path, device)


def _verified_sha(path: Path, record: Path) -> str | None:
    """The cached checkpoint's sha256 if it exists and matches its record; None means (re)train."""
    if not path.exists() or not record.exists():
        return None
    try:
        expected = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError) as exc:
        warnings.warn(f"shrinkbench: unreadable record {record} ({exc}); retraining the base model")
        return None
    actual = sha256_of(path)
    if actual != expected:
        warnings.warn(f"shrinkbench: cached base model {path} has sha256 {actual}, its record says {expected}; retraining")
        return None
    return actual


def _train_and_store(suite: Suite, data: Splits, path: Path, record: Path, device: torch.device) -> str:
    # Pinned seed and thread count: whoever trains first (a worker, a notebook) gets the same weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(BASE_TRAINING_THREADS)
    try:
        torch.manual_seed(BASE_TRAINING_SEED)
        model = suite.build_model().to(device)
        start = time.perf_counter()
        fit(model, data.train, suite.base_recipe, seed=BASE_TRAINING_SEED, device=device)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    top1, top5 = evaluate(model, data.test, device=device)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, partial)
    sha = sha256_of(partial)
    os.replace(partial, path)
    info = {"suite": suite.name, "sha256": sha, "recipe": asdict(suite.base_recipe), "top1": top1, "top5": top5,
            "train_seconds": round(seconds, 3), "threads": BASE_TRAINING_THREADS, "torch": torch.__version__}
    partial = record.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(info, indent=2))
    os.replace(partial, record)
    return sha
