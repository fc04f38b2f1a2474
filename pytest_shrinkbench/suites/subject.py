"""Subjects: a suite made concrete — its data and base weights, trained once, cached and verified."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..errors import SuiteUnavailable
from ..identity import file_sha256, state_digest
from ..measure.structured import Link, channel_links, weight_links
from ..prunable import Trace, count_parameters, example_input, trace_model
from .decoded import take
from .decoding import prepared
from .registry import SUITES, Splits, Suite
from .training import drops_single_batch, fit, measure, recipe_hash

# What a cache record's "sha256" is a hash of (records without it hold the file's bytes' sha256).
IDENTITY = "tensors"
BASE_TRAINING_SEED = 0
BASE_TRAINING_THREADS = 1
# The invariants compare logits on this many training inputs: a model that reads masked weights, or state
# outside its state_dict, changes essentially every logit, and 3 forward passes of 128 images were 5% of a case.
CHECK_BATCH = 32
# A language suite's checks run on this many training windows: each holds ``context`` positions of a vocabulary's
# logits (128 × 50,257 for GPT-2), which a violation changes nearly all of; 32 windows of a 125M model cost more
# forward passes than its one-shot method and evaluation together.
CHECK_WINDOWS = 2
CHECK_SEED = 0


def default_cache_dir() -> Path:
    """``$SHRINKBENCH_CACHE``, else the user cache dir: outside any repository, shared by all projects."""
    if os.environ.get("SHRINKBENCH_CACHE"):
        return Path(os.environ["SHRINKBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-shrinkbench"


@dataclass
class Subject:
    """One suite in one session: data, base weights (with their identity, a hash of their tensors), and what one
    traced forward pass says of the model: its prunable weights and each one's dense FLOPs."""

    suite: Suite
    data: Splits
    state: dict[str, Tensor]
    sha256: str
    checkpoint: Path
    device: torch.device
    base_metrics: dict[str, float] = field(init=False)  # the dense base model's metrics (the suite's task's)
    trace: Trace = field(init=False)
    finetune_hash: str = field(init=False)  # the row's recipe_hash (training.recipe_hash)
    params_total: int = field(init=False)
    fixed_nonzero: int = field(init=False)  # non-zero parameters no method may prune (biases, norms, embeddings, exclusions)
    channel_links: dict[str, Link] | None = field(init=False)  # by weight name; None: torch.fx could not trace the model
    _pristine: nn.Module | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        model = self.fresh_model()
        self.base_metrics = measure(model, self.data.test, self.suite.objective, device=self.device)
        self.trace = trace_model(model, self.example, exclude=self.suite.exclude, embeddings=self.suite.prune_embeddings)
        self.finetune_hash = recipe_hash(self.suite.finetune_recipe, model, self.data.train)
        self.params_total, nonzero = count_parameters(model)
        params = dict(model.named_parameters())
        self.fixed_nonzero = nonzero - sum(int(torch.count_nonzero(params[name])) for name in self.trace.prunable)
        links = channel_links(model)
        self.channel_links = weight_links(model, links) if links is not None else None

    @property
    def base_top1(self) -> float:
        return self.base_metrics["top1"]

    @property
    def base_top5(self) -> float:
        return self.base_metrics["top5"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape (no batch dimension): the suite's, else that of the first training input."""
        return self.suite.input_shape or tuple(self.data.train[0][0].shape)

    @property
    def example(self) -> Tensor:
        """One input (batch of 1, meta device) of the suite's shape and its data's dtype: what a trace runs on."""
        return example_input(self.input_shape, self.data.train[0][0].dtype)

    def fresh_model(self) -> nn.Module:
        """A new model holding the base weights: every case starts from exactly this. A copy of one built once and never
        handed out: no weights initialised again (3 of 4 ms on 431k parameters), no draw from torch's RNG mid-case."""
        if self._pristine is None:
            self._pristine = self.suite.build_model().to(self.device)
            self._pristine.load_state_dict(self.state)
        return copy.deepcopy(self._pristine)

    def batch(self, seed: int, size: int = 256) -> tuple[Tensor, Tensor]:
        """A seeded batch of *training* examples, for methods that score weights by data."""
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):  # an augmenting suite's crops and flips: from the seed alone
            torch.manual_seed(seed)
            inputs, targets = take(self.data.train, order[:size].tolist())
        return inputs.to(self.device), targets.to(self.device)

    def calibration(self, seed: int) -> Tensor | None:
        """The suite's calibration batches for a case of ``seed`` (None when it declares none): ``count`` training
        windows drawn with the seed, each cut to ``length`` tokens."""
        pinned = self.suite.calibration
        if pinned is None:
            return None
        if pinned.count > len(self.data.train):
            raise ValueError(f"suite {self.suite.name}: {pinned.count} calibration windows asked of {len(self.data.train)} training windows")
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(seed))
        inputs, _ = take(self.data.train, order[:pinned.count].tolist())
        if inputs.shape[1] < pinned.length:
            raise ValueError(f"suite {self.suite.name}: calibration windows of {pinned.length} tokens asked of "
                             f"training windows of {inputs.shape[1]}")
        return inputs[:, :pinned.length].contiguous().to(self.device)

    @property
    def protocol(self) -> dict[str, Any] | None:
        """What a case's numbers depend on beyond its spec, for language suites and suites with calibration: what
        the data says of itself (corpus, its sha256, library versions), the test windows (context length, stride),
        the exclusions from pruning, the dtype, and the calibration (count, length, source; drawn with the case's
        seed, which the row holds: the protocol is the same for every seed, so seeds aggregate). None for other suites."""
        suite = self.suite
        if suite.task != "language" and suite.calibration is None and not self.data.protocol:
            return None
        found = dict(self.data.protocol)
        if suite.task == "language":  # the test windows: non-overlapping, so the stride is the context length
            context = int(self.data.test[0][0].shape[-1])
            found.update(context_length=context, stride=context)
        found["exclude"] = list(suite.exclude)
        found["dtype"] = str(next(v.dtype for v in self.state.values() if v.is_floating_point())).removeprefix("torch.")
        if suite.calibration is not None:
            found.update(suite.calibration.as_dict(), calibration_seed="the case's seed")
        return found

    def check_inputs(self) -> Tensor:
        """Fixed training inputs on which the invariants compare logits (a language suite's: a few windows)."""
        count = CHECK_WINDOWS if self.suite.task == "language" else CHECK_BATCH
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(CHECK_SEED)
            inputs, _ = take(self.data.train, list(range(min(count, len(self.data.train)))))
        return inputs.to(self.device)


def checkpoint_key(suite: Suite, data_id: str = "", data: Dataset | None = None) -> str:
    """Cache key of a suite's trained base model: a new recipe, architecture, torch or data (``data_id``, a hash of
    the files of a suite whose data is on disk; empty for embedded data) gets a new file, and so does base training
    that drops a last batch of one (``training.drops_single_batch``, given the training ``data``)."""
    model = suite.build_model()
    fields = {"suite": suite.name, "recipe": asdict(suite.base_recipe), "arch": repr(model), "torch": torch.__version__}
    if data_id:
        fields["data"] = data_id
    if data is not None and drops_single_batch(model, data, suite.base_recipe):
        fields["last_batch_of_one"] = "dropped"
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load_subject(suite_name: str, cache_dir: Path | None = None, device: str | torch.device = "cpu", *,
                 data_root: Path | None = None, weights: Path | None = None, readonly: bool = False) -> Subject:
    """Load the subject of ``suite_name``: its data (under ``data_root`` for suites of data on disk) and base weights.

    Base weights are, in order: the checkpoint ``weights`` (a state_dict file, loaded with
    ``torch.load(weights_only=True)``); pretrained weights the suite finds on this machine (torchvision's
    file in the local torch hub cache for ImageNet suites); else the base model the plugin trains with
    the suite's pinned recipe and caches. Training happens under a file lock in the cache dir, so among
    ``-n N`` xdist workers exactly one trains while the others wait and then load the same file. A cached
    file whose tensors do not hash to its record is retrained, never used. With ``readonly`` (a shard of
    a cluster run, whose base models were prepared once) nothing is trained, locked or written: a missing
    or unverifiable base model is a ``RuntimeError`` naming the ``prepare`` command to run.

    Raises :class:`SuiteUnavailable` (the plugin skips the suite's cases) when the data is absent, or
    when no weights are given or found for a suite the plugin does not train.
    """
    suite = SUITES.get(suite_name)
    device = torch.device(device)
    root = Path(data_root) if data_root is not None else None
    reason = suite.missing_data(root)
    if reason:
        raise SuiteUnavailable(f"suite {suite.name}: {reason}")
    if weights is None and suite.find_weights is not None:
        found = suite.find_weights()
        if isinstance(found, Path):
            weights = found
        elif suite.base_recipe is None:
            raise SuiteUnavailable(f"suite {suite.name}: no base weights: pass --shrink-weights {suite.name}=PATH, or provide {found}")
    if weights is None and suite.base_recipe is None:
        raise SuiteUnavailable(f"suite {suite.name}: no base weights: pass --shrink-weights {suite.name}=PATH")
    if weights is not None:
        state, sha = load_checkpoint(Path(weights), suite, device)
        return Subject(suite, prepared(suite.data(root), device), state, sha, Path(weights), device)
    data = prepared(suite.data(root), device)  # decoded once per process where provably the same as per sample
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # Suites of data on disk hash their files under the root; user suites (no find_data) hash their datasets.
    fingerprinted = suite.data_fingerprint is not None and (root is not None or suite.find_data is None)
    data_id = suite.data_fingerprint(root) if fingerprinted else ""
    path = cache / f"{suite.name}-{checkpoint_key(suite, data_id, data.train)}.pt"
    if readonly:
        found = _verified(path, device)
        if isinstance(found, str):
            hint = f"pytest-shrinkbench prepare --shrink-suite={suite.name} --shrink-cache={cache}"
            hint += f" --shrink-data-root={root}" if root is not None else ""
            raise RuntimeError(f"suite {suite.name}: {found}, and the cache is read-only (--shrink-cache-mode=readonly): "
                               f"prepare it once with this run's options, e.g. {hint}")
        return Subject(suite, data, *found, path, device)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # check-then-train inside the lock: one process trains, the others load
        found = _verified(path, device)
        if isinstance(found, str):
            if path.exists():
                warnings.warn(f"shrinkbench: {found}; retraining the base model")
            _train_and_store(suite, data, path, device)
            found = _verified(path, device)  # read back exactly as every later session will
            if isinstance(found, str):
                raise RuntimeError(f"suite {suite.name}: the base model just trained cannot be verified: {found}")
    return Subject(suite, data, *found, path, device)


# Keys under which common training scripts nest the model's state_dict in a checkpoint file.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def load_checkpoint(path: Path, suite: Suite, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], str]:
    """A user's base checkpoint for ``suite``: its state_dict (on ``device``) and its identity.

    The identity is :func:`~pytest_shrinkbench.identity.state_digest` of the tensors the file holds
    (after unnesting and removing a ``module.`` prefix, see :func:`read_state`), so a checkpoint copied,
    renamed or re-saved keeps it. The state must fit the suite's architecture exactly.
    Every problem is a ``RuntimeError`` naming the file and the suite.
    """
    where = f"checkpoint {path} for suite {suite.name!r}"
    state = suite.read_weights(path, device) if suite.read_weights is not None else read_state(path, where, device)
    sha = state_digest(state)
    with torch.device("meta"):  # shapes only: free even for VGG-16
        model = suite.build_model()
    expected = model.state_dict()
    for key in expected:  # checkpoints older than torch 0.4.1 have no batch-norm step counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long, device=device)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        def few(names: list[str]) -> str:
            return f"{names[:5]}{' and %d more' % (len(names) - 5) if len(names) > 5 else ''}"

        raise RuntimeError(
            f"{where} does not fit its model {type(model).__name__}: missing {few(missing)}, unexpected {few(unexpected)}, "
            f"wrong shape {few(reshaped)}"
        )
    return state, sha


def read_state(path: Path, where: str, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The tensors of a checkpoint file, read with ``torch.load(weights_only=True)`` (which refuses any
    pickle that would run code). Accepted: a plain state_dict, or a dict nesting one under
    ``state_dict``, ``model_state_dict`` or ``model`` (other entries such as optimizer state are
    ignored); a ``module.`` prefix on every key (``DataParallel``) is removed. ``where`` names the file
    in the ``RuntimeError`` raised for anything else."""
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise RuntimeError(f"cannot read {where}: {exc}") from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(
            f"refusing {where}: torch.load(weights_only=True) rejects it, so it is not a plain tensor state_dict "
            f"(a pickle that would run code, or not a torch file): {first}"
        ) from exc
    state = loaded
    if isinstance(loaded, dict) and not all(isinstance(v, Tensor) for v in loaded.values()):
        state = next((loaded[k] for k in NESTED_STATE_KEYS if isinstance(loaded.get(k), dict)), loaded)
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise RuntimeError(f"{where} is not a state_dict (a dict of parameter name -> tensor); got {type(loaded).__name__}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _verified(path: Path, device: torch.device) -> tuple[dict[str, Tensor], str] | str:
    """The cached base model's state and identity if its tensors hash to its record; else why not.

    A record written before identities were hashes of tensors holds the file's sha256: if the file
    still matches it, the file is trusted and the record rewritten (a cache of GPU-hours of training
    survives the upgrade). A file that would run code is refused outright, never retrained over.
    """
    record = path.with_suffix(".json")
    if not path.exists() or not record.exists():
        return f"no base model {path}"
    try:
        info = json.loads(record.read_text())
        expected = info["sha256"]
    except (ValueError, KeyError) as exc:
        return f"unreadable record {record} ({exc})"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses pickles that would run code
        raise RuntimeError(f"refusing base checkpoint {path}: it is not a plain tensor state_dict ({exc})") from exc
    except Exception as exc:
        return f"cached base model {path} cannot be read ({type(exc).__name__})"
    actual = state_digest(state)
    if info.get("identity") != IDENTITY and file_sha256(path) == expected:
        _write_record(record, {**info, "sha256": actual, "identity": IDENTITY}, quiet=True)
        return state, actual
    if actual != expected:
        return f"cached base model {path} has tensors hashing to {actual}, its record says {expected}"
    return state, actual


def _train_and_store(suite: Suite, data: Splits, path: Path, device: torch.device) -> None:
    # Pinned seed and thread count: whoever trains first (a worker, a notebook) gets the same weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(BASE_TRAINING_THREADS)
    try:
        torch.manual_seed(BASE_TRAINING_SEED)
        model = suite.build_model().to(device)
        start = time.perf_counter()
        fit(model, data.train, suite.base_recipe, seed=BASE_TRAINING_SEED, device=device, loss=suite.objective.loss)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    metrics = measure(model, data.test, suite.objective, device=device)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()  # saved through a buffer, the archive's inner name is fixed: same weights, same bytes
    torch.save(state, buffer)
    _replace(path, buffer.getvalue())
    info = {"suite": suite.name, "sha256": state_digest(state), "identity": IDENTITY, "recipe": asdict(suite.base_recipe),
            **metrics, "train_seconds": round(seconds, 3), "threads": BASE_TRAINING_THREADS,
            "torch": torch.__version__}
    _write_record(path.with_suffix(".json"), info)


def _write_record(record: Path, info: dict, quiet: bool = False) -> None:
    """Write a cache record atomically; ``quiet``: a cache that cannot be written (read-only) is left as it is."""
    try:
        _replace(record, json.dumps(info, indent=2).encode())
    except OSError:
        if not quiet:
            raise


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: readers see the old file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
