"""The result row: its fields, declared once, and the rule that makes a row safe to send and store.

Everything that writes, reads or documents a row (the recorder, the store, the report, JUnit
properties, docs/results.md) takes the field list from here. A row with a field not declared
here is a harness bug, and :func:`make_row` refuses it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One field of a result row. ``junit``: also recorded as a flat ``shrinkbench.<name>`` test property."""

    name: str
    doc: str
    junit: bool = False


FIELDS: tuple[Field, ...] = (
    # the case
    Field("method", "method name"),
    Field("suite", "suite name"),
    Field("ratio", "requested compression ratio"),
    Field("seed", "seed"),
    Field("weights", "tag of the base checkpoint when a suite has several (`--shrink-weights`), else null"),
    Field("status", "`passed`, `failed` or `skipped`"),
    Field("message", "why the case failed or was skipped: one line naming method, suite, ratio and seed"),
    # accuracy
    Field("top1", "top-1 on the held-out split after fine-tuning", junit=True),
    Field("top5", "top-5 after fine-tuning", junit=True),
    Field("top1_pre", "top-1 after pruning, before fine-tuning (a gradual method: after its first call)", junit=True),
    Field("top5_pre", "top-5 after pruning, before fine-tuning", junit=True),
    Field("top1_base", "top-1 of the unpruned base model"),
    Field("top5_base", "top-5 of the unpruned base model"),
    # size and FLOPs
    Field("params_total", "all parameters of the model (biases and norms included)", junit=True),
    Field("params_nonzero", "non-zero parameters after pruning and fine-tuning", junit=True),
    Field("compression", "achieved compression: params_total / params_nonzero", junit=True),
    Field("flops_dense", "FLOPs of one example's forward pass, dense (a multiply-add is 2)", junit=True),
    Field("flops_sparse", "FLOPs left when a pruned weight does no work", junit=True),
    Field("speedup", "theoretical speedup: flops_dense / flops_sparse (null when the output is a constant)", junit=True),
    Field("flops_accounting", "`structured` (removed channels also remove their consumers' work) or `density`"),
    Field("channels_removed", "whole output channels removed, over all layers"),
    Field("sparsity_pattern", "the N:M pattern the method declared (`2:4`: 2 kept of every 4 consecutive inputs), else null"),
    Field("pattern_dense", "prunable weights an N:M method left dense because their input size is not a multiple of M"),
    # what the method did and how long it took
    Field("prune_steps", "how many times the method was called (> 1: a gradual method, whose top1_pre is after its first call)"),
    Field("prune_seconds", "wall time of the method's calls, including its child process", junit=True),
    Field("finetune_seconds", "wall time of fine-tuning", junit=True),
    Field("duration", "wall time of the whole test"),
    Field("weights_changed", "kept weights whose value the method changed (returned new weights); 0 for mask-only methods", junit=True),
    Field("sandbox", "confinement of the method's code: `process+landlock`, `process` or `in-process` (unverified)", junit=True),
    # identity and environment
    Field("base_sha256", "hash of the base model's tensors", junit=True),
    Field("recipe_hash", "hash of the fine-tuning recipe", junit=True),
    Field("method_hash", "hash of the method's source module", junit=True),
    Field("prunable_scope", "hash of the suite's exclusions from pruning (and embeddings opted in); null when it has none"),
    Field("measure_version", "version of the harness's measuring rules"),
    Field("torch", "torch version"),
    Field("python", "Python version"),
    Field("platform", "operating system and machine"),
    Field("device", "device of the case (`cpu`, `cuda:0`, ...)"),
    Field("threads", "torch CPU threads"),
    # bookkeeping
    Field("reused", "taken from the results store instead of measured in this session", junit=True),
    Field("run", "name of the run file that first recorded the row"),
    Field("finished", "UTC time the case finished"),
    Field("mac", "the harness's signature over the row (see docs/trust.md): a row without a valid one is never reused"),
    # --shrink-latency
    Field("latency_batch", "inputs per timed forward pass"),
    Field("latency_ms", "median milliseconds per forward pass of the physically shrunk model", junit=True),
    Field("latency_dense_ms", "the same for the dense base model", junit=True),
    Field("speedup_measured", "latency_dense_ms / latency_ms", junit=True),
    Field("flops_shrunk", "FLOPs of the shrunk model (dense kernels: unstructured zeros still cost)"),
    Field("params_shrunk", "parameters of the shrunk model"),
    Field("channels_shrunk", "output channels cut out by shrinking"),
    Field("shrink_exact", "whether folding removed channels into biases is exact"),
    Field("shrink_error", "why the model could not be shrunk (its latency is then not measured)"),
    Field("latency_2of4_ms", "a 2:4 case on CUDA: median milliseconds per forward pass with semi-structured sparse kernels"),
    Field("speedup_2of4_measured", "the same model on dense kernels ÷ on 2:4 kernels (below 1: slower)"),
    Field("sparse_kernel", "a 2:4 case with --shrink-latency: how its sparse kernels were timed, or why they were not"),
    # metrics with a direction, the compression basis and the protocol (language models: pytest_shrinkbench.metrics)
    Field("metric", "the suite's ranking metric (`top1`, `top5` or `perplexity`); null or absent (older rows): `top1`"),
    Field("perplexity", "perplexity on the held-out text after fine-tuning (language models, lower is better; null elsewhere); "
          "top1 is then next-token top-1", junit=True),
    Field("perplexity_pre", "perplexity after pruning, before fine-tuning (a one-shot suite: the same measurement)", junit=True),
    Field("perplexity_base", "perplexity of the unpruned base model"),
    Field("compression_basis", "what the requested ratio counts: `model` (all parameters, the default) or `prunable` "
          "(the prunable weights: language-model suites)"),
    Field("compression_prunable", "achieved compression of the prunable weights: their count / their non-zero count"),
    Field("protocol", "what a language model's number depends on beyond the case (corpus sha256, context length, stride, "
          "calibration count, length, source and seed, exclusions, dtype, transformers version); null for suites without one"),
    Field("protocol_hash", "short hash of `protocol` (pytest_shrinkbench.identity.protocol_hash): rows of different "
          "protocols are never merged, compared, ranked or gated together", junit=True),
    # content-addressed measurement (run/reuse.py)
    Field("measurement_key", "what a one-shot case's measurements are a function of (subject, recipe, seed, masks and "
          "weights after pruning, environment); null for gradual methods"),
    Field("shared_from", "case key of the row whose measurements (accuracy, FLOPs) this row took instead of "
          "fine-tuning the same pruned model again; null when measured by this case"),
    # Round 3 (part B): the walls in force
    Field("walls", "the walls around the method's processes, space-separated: `landlock:N` (its ABI), `pid-namespace`, "
          "`net-namespace`, `no-sockets`, `environment`, `hidden-data`, `memory-cap`, `process-cap`, `disk-cap` "
          "(docs/trust.md); a stored row is reused only by a session whose walls it covers", junit=True),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
# How confined a row's method was (the ``sandbox`` field's values), weakest first.
LEVEL_IN_PROCESS = "in-process"  # the debugging mode: method code in the harness's process (unverified)
LEVEL_PROCESS = "process"  # a disposable child process, without walls
LEVEL_LANDLOCK = "process+landlock"  # a disposable child process behind Landlock walls
SANDBOX_LEVELS = (LEVEL_IN_PROCESS, LEVEL_PROCESS, LEVEL_LANDLOCK)
# What --shrink-require-sandbox names each level.
REQUIRABLE = {"process": LEVEL_PROCESS, "landlock": LEVEL_LANDLOCK}
JUNIT: tuple[str, ...] = tuple(f.name for f in FIELDS if f.junit)
_KNOWN = frozenset(NAMES)


def confined_at_least(level: str | None, required: str) -> bool:
    """Whether a row's ``sandbox`` level is ``required`` or stronger (a row without one — older versions — is not)."""
    return level in SANDBOX_LEVELS and SANDBOX_LEVELS.index(level) >= SANDBOX_LEVELS.index(required)


def walls_cover(recorded: str | None, required: str) -> bool:
    """Whether a row made behind ``recorded`` walls was at least as walled as a session behind ``required``: every
    wall of the session is in the row, a Landlock ABI at least as high. A row without the field (older versions)
    covers only a session with no walls."""
    have = set((recorded or "").split())
    abi = max((int(w.partition(":")[2]) for w in have if w.startswith("landlock:")), default=0)
    return all(int(w.partition(":")[2]) <= abi if w.startswith("landlock:") else w in have for w in required.split())


def make_row(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as a row: declared fields only, each a JSON-safe builtin (see :func:`plain`)."""
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise KeyError(f"result row fields not declared in results/schema.py: {unknown}")
    return {name: plain(value) for name, value in values.items()}


def plain(value: Any) -> Any:
    """``value`` as JSON-safe builtins: execnet (xdist) refuses numpy and torch scalars, and tuples become lists."""
    # Exact builtin types only: execnet also refuses subclasses such as torch's TorchVersion (a str).
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None  # JSON has no NaN or infinity
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # 0-d tensors
        return plain(value.item())
    return str(value)


def sort_key(row: dict[str, Any]) -> tuple:
    """The order rows are written and shown in: suite, checkpoint, method, ratio, seed."""
    return (row["suite"], row.get("weights") or "", row["method"], row["ratio"], row["seed"])


def markdown_table() -> str:
    """The row's fields as a Markdown table (docs/results.md holds it; a test keeps the two equal)."""
    lines = ["| field | meaning |", "| --- | --- |"]
    lines += [f"| `{f.name}` | {f.doc} |" for f in FIELDS]
    return "\n".join(lines)
