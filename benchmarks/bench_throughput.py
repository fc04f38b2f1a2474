"""Throughput reference: the harness against a bare PyTorch loop doing the same pruning experiments.

Why: a benchmark harness earns its checks only if it is not slower than the hand-written loop a
researcher would otherwise run (issue 14). This script measures both in one process, interleaved,
on one torch thread, so machine noise and drift hit both alike:

(a) **bare loop**, one experiment the way ShrinkBench (github JJGO/shrinkbench,
    ``PruningExperiment``) does it: torchvision ``MNIST`` with ``ToTensor`` + ``Normalize((0.1307,),
    (0.3081,))`` through a ``DataLoader`` (batch 128, shuffled, ``num_workers=0``), ShrinkBench's
    ``MnistNet`` (431,080 parameters, log-softmax output, cross-entropy loss), the prunable layers
    replaced by masked layers that compute ``weight * mask`` in every forward (as ShrinkBench's
    ``MaskedModule``), an evaluation before fine-tuning (ShrinkBench's ``pruning_metrics``), then 3
    epochs of SGD (Nesterov momentum 0.9, lr 1e-3) with per-batch loss/top-1/top-5 tallies and an
    evaluation of the test split after every epoch. The datasets, loaders and model are built anew
    per experiment, as a ShrinkBench experiment does.
(b) **harness**: the same model, files, recipe and masks as a user suite (``@suite``), each case run
    by the public API, ``run_case(CaseSpec("global-magnitude", suite, ratio, seed), subject)``. The
    subject (data, base weights, dense FLOPs) is loaded once per experiment set as a new pytest
    session loads it: the suite registered afresh, so its data is read and decoded into tensors again;
    its load time is part of the harness's time.

Both start from the same base weights (trained once by the plugin with the suite's ``base`` recipe
before anything is timed) and use the same masks: global magnitude over every conv and linear
weight (the classifier included, as the harness prunes it) at whole-model compression, biases
counted. The bare loop computes its masks with its own code; they are checked equal to the
harness's ``global-magnitude`` masks (``pytest_shrinkbench.prune``) before timing.

Deliberate differences from ShrinkBench, all small next to training: no FLOPs count and no
checkpoint file written per experiment, no tqdm; ShrinkBench skips fine-tuning at compression 1, the
bare loop fine-tunes every ratio as the harness does, so the work is equal.

Data: the MNIST IDX files (torchvision's raw layout ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
which ``torchvision.datasets.MNIST`` reads when they exist; it checks only that they exist) are
written into a temporary folder from scikit-learn's 1,797 8×8 digits, upscaled bilinearly to 28×28
and scaled to 0..255, split 1,437 train / 360 test by a seeded permutation.

The experiment set is global magnitude × ratios 1, 2, 4, 8, 16, 32 × seed 0. Output:
experiments/minute of each side, harness ÷ bare (issue 14's target is >= 1.5), and the harness's
per-case breakdown from its result rows (prune and fine-tune seconds; overhead = everything but the
fine-tuning, as a share of the case). ``--profile`` instead profiles one bare experiment and one
harness case with cProfile.

Run from the repository root::

    python benchmarks/bench_throughput.py [--repetitions 3] [--profile]

It is a measurement, not a gate: it exits 0 whatever the ratio. Not a test: pytest collects only
``test_*.py`` from ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pytest_shrinkbench import (
    CaseSpec,
    Recipe,
    ScheduledRecipe,
    Subject,
    baselines,  # noqa: F401  (importing registers global-magnitude)
    load_subject,
    prune,
    run_case,
    suite,
)
from pytest_shrinkbench.suites.user import forget_session_suites

SUITE = "bench-mnistnet"
METHOD = "global-magnitude"
RATIOS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
SEED = 0
TARGET = 1.5  # issue 14: harness experiments/minute >= 1.5x the bare loop's
OVERHEAD_TARGET = 0.10  # issue 14: per-case overhead (everything but fine-tuning) <= 10% of a case

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
TRAIN_SIZE, TEST_SIZE = 1437, 360
SPLIT_SEED = 0

# The fine-tuning recipe of ShrinkBench's TrainingExperiment defaults (SGD, Nesterov 0.9, lr 1e-3),
# 3 epochs, batch 128 as its DataLoader default.
EPOCHS, BATCH, LR, MOMENTUM = 3, 128, 1e-3, 0.9
FINETUNE = ScheduledRecipe("sgd", lr=LR, epochs=EPOCHS, batch_size=BATCH, momentum=MOMENTUM, nesterov=True)
# Base weights: small, trained once by the plugin before timing (not part of either side's time).
BASE = Recipe("adam", lr=1e-3, epochs=2, batch_size=BATCH)


# ----------------------------------------------------------------------------- data


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian dimensions, then the data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_mnist_files(root: Path) -> tuple[int, int]:
    """Write the four MNIST IDX files under ``root/MNIST/raw`` from scikit-learn's digits; return (train, test) sizes.

    Bilinear upscaling of the 8×8 images keeps them smooth like real MNIST strokes, so the 5×5 convs
    of MnistNet see comparable inputs; the split is a seeded permutation so both sides and every run
    see the same files.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 1797×1×8×8 in [0, 1]
    big = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    pixels = (big.squeeze(1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = bunch.target.astype(np.uint8)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    assert len(train) == TRAIN_SIZE, len(train)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, index in (("train", train), ("t10k", test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(np.ascontiguousarray(pixels[index])))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.ascontiguousarray(labels[index])))
    return len(train), len(test)


def mnist(root: Path, train: bool):
    """torchvision's MNIST over the written files, with ShrinkBench's transforms (no download)."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MNIST_MEAN, MNIST_STD)])
    return datasets.MNIST(str(root), train=train, transform=transform, download=False)


# ----------------------------------------------------------------------------- model and masks


class MnistNet(nn.Module):
    """ShrinkBench's MnistNet: conv 1→20 k5, pool, conv 20→50 k5, pool, fc 800→500, fc 500→10, log-softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.view(-1, 4 * 4 * 50)))
        return F.log_softmax(self.fc2(x), dim=1)


class MaskedLayer(nn.Module):
    """A conv or linear layer whose forward uses ``weight * mask``: the mask is in the graph, so pruned
    weights get zero gradient and stay zero under any optimizer (how ShrinkBench's MaskedModule works)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, mask: Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("mask", mask.to(layer.weight.dtype))
        with torch.no_grad():
            layer.weight.mul_(self.mask)  # zero at once, so size counts see the pruned model

    def forward(self, x: Tensor) -> Tensor:
        weight = self.layer.weight * self.mask
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, self.layer.bias)
        return F.linear(x, weight, self.layer.bias)


def global_magnitude_masks(model: nn.Module, ratio: float) -> dict[str, Tensor]:
    """Keep the largest |w| over all conv and linear weights so that all parameters ÷ non-zero ones = ``ratio``.

    Biases count as kept parameters (ShrinkBench's size). Drops the smallest with ``torch.topk``, as
    ``torch.nn.utils.prune.L1Unstructured`` does, so ties break the same way as the harness.
    """
    weights = {name: m.weight for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    total = sum(p.numel() for p in model.parameters())
    fixed = sum(int(torch.count_nonzero(p)) for n, p in model.named_parameters() if not n.endswith("weight"))
    budget = min(round(total / ratio) - fixed, sum(w.numel() for w in weights.values()))
    scores = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if scores.numel() > budget:
        keep[torch.topk(scores, k=scores.numel() - budget, largest=False).indices] = False
    parts = keep.split([w.numel() for w in weights.values()])
    return {f"{name}.weight": part.view_as(w) for (name, w), part in zip(weights.items(), parts)}


def mask_model(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Swap every masked conv/linear child for a :class:`MaskedLayer` (MnistNet's layers are direct children)."""
    for name, child in list(model.named_children()):
        if f"{name}.weight" in masks:
            setattr(model, name, MaskedLayer(child, masks[f"{name}.weight"]))
    return model


# ----------------------------------------------------------------------------- (a) the bare loop


@dataclass
class BareTimes:
    """Where one bare experiment's time went (seconds)."""

    setup: float = 0.0  # datasets, loaders, model, masks
    train: float = 0.0
    evaluate: float = 0.0
    top1: float = 0.0

    @property
    def total(self) -> float:
        return self.setup + self.train + self.evaluate


def _correct(logits: Tensor, targets: Tensor) -> tuple[int, int]:
    best = logits.topk(5, dim=1).indices
    hits = best == targets[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


@torch.no_grad()
def _bare_evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    top1 = total = 0
    for inputs, targets in loader:
        logits = model(inputs)
        F.cross_entropy(logits, targets).item()  # ShrinkBench logs the validation loss too
        top1 += _correct(logits, targets)[0]
        total += len(targets)
    return top1 / total


def bare_experiment(root: Path, base: dict[str, Tensor], ratio: float, seed: int,
                    masks: dict[str, Tensor] | None = None) -> BareTimes:
    """One pruning experiment as ShrinkBench runs it, end to end, timed by phase (``masks``: given instead of
    computing global magnitude's)."""
    times = BareTimes()
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_dl = DataLoader(mnist(root, True), batch_size=BATCH, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(seed))
    val_dl = DataLoader(mnist(root, False), batch_size=BATCH, shuffle=False, num_workers=0)
    model = MnistNet()
    model.load_state_dict(base)
    mask_model(model, global_magnitude_masks(model, ratio) if masks is None else masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    times.setup = time.perf_counter() - start

    start = time.perf_counter()
    _bare_evaluate(model, val_dl)  # ShrinkBench's pruning_metrics: accuracy right after pruning
    times.evaluate += time.perf_counter() - start
    for _epoch in range(EPOCHS):
        start = time.perf_counter()
        model.train()
        for inputs, targets in train_dl:
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss.item(), _correct(logits.detach(), targets)  # ShrinkBench's per-batch tallies
        times.train += time.perf_counter() - start
        start = time.perf_counter()
        times.top1 = _bare_evaluate(model, val_dl)
        times.evaluate += time.perf_counter() - start
    return times


# ----------------------------------------------------------------------------- (b) the harness


def register_suite(root: Path) -> None:
    """The user suite a researcher would write for this model and these files (docs/suites.md: Bring your own suite)."""

    @suite(SUITE, train=lambda: mnist(root, True), test=lambda: mnist(root, False), base=BASE, finetune=FINETUNE,
           description="ShrinkBench's MnistNet on MNIST-format digits (throughput benchmark)")
    def build() -> nn.Module:
        return MnistNet()


@dataclass
class HarnessSet:
    """One experiment set run by the harness: subject load plus one row and wall time per case."""

    load: float
    cases: list[tuple[float, dict]] = field(default_factory=list)
    cpu: float = 0.0  # process CPU seconds of the whole set

    @property
    def total(self) -> float:
        return self.load + sum(seconds for seconds, _ in self.cases)


def harness_case(subject: Subject, ratio: float) -> tuple[float, dict]:
    start = time.perf_counter()
    row = run_case(CaseSpec(METHOD, SUITE, ratio, SEED), subject)
    return time.perf_counter() - start, row


def session_subject(root: Path, cache: Path) -> Subject:
    """The subject as a new pytest session loads it: the suite registered afresh (new dataset objects, so
    the data is decoded again, once), its fingerprint, the base model from the warm cache, its evaluation."""
    forget_session_suites()
    register_suite(root)
    return load_subject(SUITE, cache_dir=cache)


def harness_set(root: Path, cache: Path) -> HarnessSet:
    cpu = time.process_time()
    start = time.perf_counter()
    subject = session_subject(root, cache)
    result = HarnessSet(load=time.perf_counter() - start)
    for ratio in RATIOS:
        result.cases.append(harness_case(subject, ratio))
    result.cpu = time.process_time() - cpu
    return result


def bare_set(root: Path, base: dict[str, Tensor]) -> tuple[list[BareTimes], float]:
    """The experiment set in the bare loop: each experiment's phase times, and the set's process CPU seconds."""
    cpu = time.process_time()
    times = [bare_experiment(root, base, ratio, SEED) for ratio in RATIOS]
    return times, time.process_time() - cpu


# ----------------------------------------------------------------------------- checks, profile, report


def check_same_masks(subject: Subject) -> None:
    """The bare loop's masks must be the harness's, or the two sides would not do the same experiments."""
    for ratio in RATIOS:
        model = subject.fresh_model()
        ours = global_magnitude_masks(model, ratio)
        theirs = prune(model, METHOD, ratio, batch=subject.batch(SEED), seed=SEED)
        if set(ours) != set(theirs) or any(not torch.equal(ours[n], theirs[n]) for n in ours):
            raise SystemExit(f"bare-loop masks differ from the harness's {METHOD} masks at x{ratio:g}")


def profile(root: Path, cache: Path, base: dict[str, Tensor], ratio: float, lines: int) -> None:
    """cProfile of one bare experiment and one harness case (after a warm-up of each), by cumulative and own time."""
    subject = load_subject(SUITE, cache_dir=cache)
    bare_experiment(root, base, ratio, SEED)
    harness_case(subject, ratio)
    for label, run in (("bare experiment", lambda: bare_experiment(root, base, ratio, SEED)),
                       ("harness case (run_case)", lambda: harness_case(subject, ratio)),
                       ("harness subject load (once per session)", lambda: session_subject(root, cache))):
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(run)
        seconds = time.perf_counter() - start
        for key in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(lines)
            print(f"\n===== {label} at x{ratio:g}: {seconds:.3f} s under cProfile, sorted by {key}")
            print(out.getvalue().split("\n\n", 1)[-1].rstrip())


def machine_info() -> str:
    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
            f"cores available {len(os.sched_getaffinity(0))}, load average (1/5/15 min) "
            f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


def per_minute(experiments: int, seconds: float) -> float:
    return experiments * 60.0 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3, help="interleaved bare/harness pairs of the experiment set (default 3)")
    parser.add_argument("--profile", action="store_true", help="profile one bare experiment and one harness case instead")
    parser.add_argument("--profile-ratio", type=float, default=8.0, help="the ratio profiled (default 8)")
    parser.add_argument("--profile-lines", type=int, default=30, help="rows of each profile table (default 30)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(machine_info())
    with tempfile.TemporaryDirectory(prefix="shrinkbench-throughput-") as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        train, test = write_mnist_files(root)
        register_suite(root)
        start = time.perf_counter()
        subject = load_subject(SUITE, cache_dir=cache)  # trains the base model once; not timed below
        params = sum(p.numel() for p in subject.fresh_model().parameters())
        print(f"data: {train} train / {test} test MNIST-format digits under {root}; model MnistNet, {params:,} parameters")
        print(f"base model: {BASE} trained by the plugin in {time.perf_counter() - start:.1f} s, "
              f"top-1 {subject.base_top1:.4f}, sha256 {subject.sha256[:12]}")
        print(f"fine-tuning: {FINETUNE}")
        check_same_masks(subject)
        print(f"masks: the bare loop's global magnitude masks equal the harness's at every ratio {[f'x{r:g}' for r in RATIOS]}")
        base = {k: v.clone() for k, v in subject.state.items()}
        if args.profile:
            profile(root, cache, base, args.profile_ratio, args.profile_lines)
            return

        # Warm-up, untimed: first-call costs (allocator, lazy imports) belong to neither side.
        bare_experiment(root, base, 1.0, SEED)
        harness_case(subject, 1.0)
        del subject

        bares: list[list[BareTimes]] = []
        bare_cpu: list[float] = []
        harnesses: list[HarnessSet] = []
        for rep in range(args.repetitions):
            # Alternate which side goes first, so a drift of the machine favours neither.
            if rep % 2 == 0:
                times, cpu = bare_set(root, base)
                harnesses.append(harness_set(root, cache))
            else:
                harnesses.append(harness_set(root, cache))
                times, cpu = bare_set(root, base)
            bares.append(times)
            bare_cpu.append(cpu)
            b, h = sum(t.total for t in bares[-1]), harnesses[-1].total
            print(f"repetition {rep + 1}/{args.repetitions} ({'bare' if rep % 2 == 0 else 'harness'} first): "
                  f"bare {b:.2f} s, harness {h:.2f} s (subject load {harnesses[-1].load:.2f} s) "
                  f"for {len(RATIOS)} experiments; load average {os.getloadavg()[0]:.2f}")

        n = len(RATIOS)
        bare_s = statistics.median(sum(t.total for t in run) for run in bares)
        harness_s = statistics.median(run.total for run in harnesses)
        bare_rate, harness_rate = per_minute(n, bare_s), per_minute(n, harness_s)

        print()
        print(f"per experiment, medians over {args.repetitions} repetitions (seconds)")
        print(f"  {'ratio':>6} | {'bare':>6} {'setup':>6} {'train':>6} {'eval':>6} {'top1':>6} | "
              f"{'case':>6} {'prune':>6} {'ftune':>6} {'other':>6} {'ovh%':>5} {'top1':>6}")
        for i, ratio in enumerate(RATIOS):
            bt = [run[i] for run in bares]
            hc = [run.cases[i] for run in harnesses]
            case = statistics.median(s for s, _ in hc)
            ft = statistics.median(r["finetune_seconds"] for _, r in hc)
            pr = statistics.median(r["prune_seconds"] for _, r in hc)
            print(f"  {f'x{ratio:g}':>6} | {statistics.median(t.total for t in bt):6.3f} "
                  f"{statistics.median(t.setup for t in bt):6.3f} {statistics.median(t.train for t in bt):6.3f} "
                  f"{statistics.median(t.evaluate for t in bt):6.3f} {bt[-1].top1:6.4f} | "
                  f"{case:6.3f} {pr:6.3f} {ft:6.3f} {case - ft:6.3f} {100 * (case - ft) / case:5.1f} {hc[-1][1]['top1']:6.4f}")
        all_cases = [c for run in harnesses for c in run.cases]
        case_s = sum(s for s, _ in all_cases) / len(all_cases)
        ft_s = sum(r["finetune_seconds"] for _, r in all_cases) / len(all_cases)
        pr_s = sum(r["prune_seconds"] for _, r in all_cases) / len(all_cases)
        load_s = statistics.median(run.load for run in harnesses)
        overhead = (case_s - ft_s + load_s / n) / (case_s + load_s / n)
        all_bare = [t for run in bares for t in run]

        print()
        print("summary (medians of the experiment set's wall time; one torch thread)")
        print(f"  bare loop (ShrinkBench-style): {bare_rate:.1f} experiments/minute ({bare_s:.2f} s per {n} experiments; "
              f"mean per experiment: setup {statistics.mean(t.setup for t in all_bare):.3f} s, "
              f"train {statistics.mean(t.train for t in all_bare):.3f} s, evaluate {statistics.mean(t.evaluate for t in all_bare):.3f} s)")
        print(f"  harness (load_subject + run_case): {harness_rate:.1f} experiments/minute ({harness_s:.2f} s per {n} experiments, "
              f"of which subject load {load_s:.2f} s)")
        print(f"  harness / bare: {harness_rate / bare_rate:.3f} (target >= {TARGET}){'' if harness_rate / bare_rate >= TARGET else '  BELOW TARGET'}")
        # The most any harness could reach on these experiments: its fine-tuning alone, with nothing else in a case (no
        # method call, no evaluation, no check, no subject load), against the whole bare experiment.
        print(f"  ceiling: bare experiment / harness fine-tuning alone: {bare_s / n / ft_s:.3f} (what harness / bare would be if "
              f"everything but the fine-tuning cost nothing)")
        # CPU time is what other processes on a shared machine disturb least: a second opinion on the ratio.
        cpu_ratio = statistics.median(bare_cpu) / statistics.median(run.cpu for run in harnesses)
        print(f"  by process CPU time instead of wall time: bare {per_minute(n, statistics.median(bare_cpu)):.1f}, "
              f"harness {per_minute(n, statistics.median(run.cpu for run in harnesses)):.1f} experiments/minute, ratio {cpu_ratio:.3f}")
        same = all(bares[-1][i].top1 == harnesses[-1].cases[i][1]["top1"] for i in range(n))
        print(f"  final top-1 of bare loop and harness identical at every ratio (same data order, masks, steps): {'yes' if same else 'NO'}")
        print(f"  harness per case (mean): {case_s:.3f} s = prune {pr_s:.3f} s + fine-tune {ft_s:.3f} s + other {case_s - ft_s - pr_s:.3f} s; "
              f"with the subject load spread over the set, {case_s + load_s / n:.3f} s")
        print(f"  overhead (everything but fine-tuning, subject load shared): {100 * overhead:.1f}% of a case "
              f"(target <= {100 * OVERHEAD_TARGET:.0f}%){'' if overhead <= OVERHEAD_TARGET else '  ABOVE TARGET'}; "
              f"without the method's own pruning time (the bare loop computes its masks too): "
              f"{100 * (overhead - pr_s / (case_s + load_s / n)):.1f}%")
        print("  (a row's finetune_seconds include drawing the batches: by index from the tensors decoded once at subject "
              "load, or sample by sample for data that cannot be decoded; --profile splits it)")
        print(f"  {machine_info()}")


if __name__ == "__main__":
    main()
