"""What measuring each pruned model once saves (issue 25), in one run: the main job and a sweep against the bare loop.

Why: a one-shot case whose pruned model was measured already takes those numbers instead of fine-tuning
the same tensors again (``pytest_shrinkbench.run.reuse``): every method's x1 case is the unpruned model
fine-tuned with the same recipe and seed. This script measures what that is worth, both ways interleaved:

(a) **the main job** (``pytest --shrink-method=all``, 252 cases, ``-n 2``, warm base-model cache, no store) with
    sharing (the default) and with ``--shrink-rerun`` (everything computed), alternating which goes first per
    round. It also compares the two runs' rows: every field but the timings and ``shared_from`` must be
    equal, and it counts the cases that took another's measurements (30: per suite × seed, five of the six
    one-shot methods' x1 cases; the gradual method is never shared).
(b) **a sweep** as ``bench_throughput.py`` runs one, on the same MNIST-format digits, model (ShrinkBench's
    ``MnistNet``) and recipe, but over ShrinkBench's five strategies (global and layerwise magnitude, global
    and layerwise gradient magnitude, random) × ratios 1–32, seed 0: 30 experiments. Three sides, interleaved:
    the bare ShrinkBench-style loop (``bench_throughput.bare_experiment``, fine-tuning every ratio as the
    harness does, each method's masks computed by the harness before timing: the bare side is not charged
    for computing them), the harness with sharing, and the harness without. It prints harness ÷ bare both
    ways (target ≥ 1.5 with sharing), and, as a second opinion, against a bare loop that skips fine-tuning
    at x1 as ShrinkBench's own code does (its x1 experiments then cost their setup and one evaluation).

Run from the repository root (the main job takes minutes per run)::

    python benchmarks/bench_reuse.py [--rounds 1] [--workers 2] [--sweep-repetitions 1] [--skip-main-job] [--skip-sweep]

A measurement, not a gate: it exits 0 whatever the numbers (but says when rows differ). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_main_job as main_job  # noqa: E402
import bench_throughput as throughput  # noqa: E402

from pytest_shrinkbench import CaseSpec, load_subject, prune, run_case  # noqa: E402
from pytest_shrinkbench.run.reuse import SharedMeasurements  # noqa: E402

METHODS = ("global-magnitude", "layer-magnitude", "global-gradient", "layer-gradient", "random")
SWEEP_TARGET = 1.5
# A row's own fields: what may differ between computing a case and taking another's measurements.
OWN = {"prune_seconds", "finetune_seconds", "duration", "run", "finished", "mac", "shared_from"}


def rows_of(folder: Path) -> dict[tuple, dict]:
    rows = [json.loads(line) for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()]
    return {(r["suite"], r["method"], r["ratio"], r["seed"]): r for r in rows}


def compare(shared: dict[tuple, dict], computed: dict[tuple, dict]) -> list[str]:
    """Differences between a shared run's rows and a computed run's, every field but a row's own."""
    problems = [f"cases differ: {sorted(set(shared) ^ set(computed))}"] if set(shared) != set(computed) else []
    for case in sorted(set(shared) & set(computed)):
        a = {k: v for k, v in shared[case].items() if k not in OWN}
        b = {k: v for k, v in computed[case].items() if k not in OWN}
        if a != b:
            problems.append(f"{case}: " + ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)))
    return problems


def main_jobs(rounds: int, workers: int) -> None:
    print(f"\n(a) the main job, -n {workers}, with sharing and with --shrink-rerun, {rounds} round(s)", flush=True)
    caches = Path(tempfile.mkdtemp(prefix="shrinkbench-reuse-cache-"))
    main_job.warm_caches(main_job.REPO_ROOT, caches)
    runs: dict[str, list[main_job.Run]] = {"shared": [], "rerun": []}
    with tempfile.TemporaryDirectory(prefix="shrinkbench-reuse-rows-") as kept:
        for rnd in range(rounds):
            for side in ("shared", "rerun") if rnd % 2 == 0 else ("rerun", "shared"):
                folder = Path(kept) / f"{side}-{rnd}"
                extra = ["--shrink-rerun"] if side == "rerun" else []
                runs[side].append(main_job.run_main_job(main_job.REPO_ROOT, workers, extra, caches, keep=folder))
                print(f"  {side:>6}: {main_job.describe(runs[side][-1])}", flush=True)
        shared, computed = rows_of(Path(kept) / "shared-0"), rows_of(Path(kept) / "rerun-0")
    problems = compare(shared, computed)
    taken = sum(1 for r in shared.values() if r.get("shared_from"))
    wall = {side: sum(r.wall for r in rs) for side, rs in runs.items()}
    cpu = {side: sum(r.cpu for r in rs) for side, rs in runs.items()}
    print(f"  rows: {len(shared)} with sharing, {len(computed)} computed; {taken} took another case's measurements; "
          + ("every field but timings and shared_from equal" if not problems else f"{len(problems)} DIFFER:"))
    for line in problems[:20]:
        print(f"    {line}")
    print(f"  wall: shared {wall['shared']:.1f} s, rerun {wall['rerun']:.1f} s -> {100 * (1 - wall['shared'] / wall['rerun']):.1f}% "
          f"less (rerun / shared = {wall['rerun'] / wall['shared']:.3f}); CPU: {100 * (1 - cpu['shared'] / cpu['rerun']):.1f}% less")


def harness_sweep(root: Path, cache: Path, share: bool) -> tuple[float, list[dict]]:
    """The sweep through the public API as a new session runs it: subject loaded afresh, cases in sweep order."""
    start = time.perf_counter()
    subject = throughput.session_subject(root, cache)
    shared = SharedMeasurements() if share else None
    rows = [run_case(CaseSpec(m, throughput.SUITE, r, throughput.SEED), subject, shared=shared)
            for m in METHODS for r in throughput.RATIOS]
    return time.perf_counter() - start, rows


def sweep(repetitions: int) -> None:
    n = len(METHODS) * len(throughput.RATIOS)
    print(f"\n(b) the sweep: {len(METHODS)} methods x {len(throughput.RATIOS)} ratios = {n} experiments on MNIST-format digits, "
          f"{repetitions} repetition(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="shrinkbench-reuse-sweep-") as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        throughput.write_mnist_files(root)
        throughput.register_suite(root)
        subject = load_subject(throughput.SUITE, cache_dir=cache)  # trains the base model once, untimed
        base = {k: v.clone() for k, v in subject.state.items()}
        masks = {(m, r): prune(subject.fresh_model(), m, r, batch=subject.batch(throughput.SEED), seed=throughput.SEED)
                 for m in METHODS for r in throughput.RATIOS}  # the bare side's masks: the same, computed untimed
        throughput.bare_experiment(root, base, 1.0, throughput.SEED)  # warm-up of both sides, untimed
        run_case(CaseSpec(METHODS[0], throughput.SUITE, 1.0, throughput.SEED), subject)
        del subject

        def bare() -> tuple[float, float, list]:
            times = [throughput.bare_experiment(root, base, r, throughput.SEED, masks[m, r]) for m, r in masks]
            # ShrinkBench's own loop at x1: its setup and the evaluation before fine-tuning (one of EPOCHS + 1)
            skip_x1 = sum(t.total if r != 1 else t.setup + t.evaluate / (throughput.EPOCHS + 1) for t, (_, r) in zip(times, masks))
            return sum(t.total for t in times), skip_x1, times

        sides = {"bare": [], "shared": [], "computed": []}
        order = [("bare", bare), ("shared", lambda: harness_sweep(root, cache, True)), ("computed", lambda: harness_sweep(root, cache, False))]
        for rep in range(repetitions):
            for name, run in order if rep % 2 == 0 else list(reversed(order)):
                sides[name].append(run())
                print(f"  repetition {rep + 1}: {name} {sides[name][-1][0]:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
        bare_s = statistics.median(s[0] for s in sides["bare"])
        bare_skip = statistics.median(s[1] for s in sides["bare"])
        shared_s = statistics.median(s[0] for s in sides["shared"])
        computed_s = statistics.median(s[0] for s in sides["computed"])
        shared_rows, computed_rows = sides["shared"][-1][1], sides["computed"][-1][1]
        same = all({k: v for k, v in a.items() if k not in OWN} == {k: v for k, v in b.items() if k not in OWN}
                   for a, b in zip(shared_rows, computed_rows))
        top1 = all(t.top1 == r["top1"] for t, r in zip(sides["bare"][-1][2], computed_rows))
        taken = sum(1 for r in shared_rows if r.get("shared_from"))
    rate = {name: n * 60 / s for name, s in (("bare", bare_s), ("shared", shared_s), ("computed", computed_s))}
    print(f"  experiments per minute: bare {rate['bare']:.1f}, harness with sharing {rate['shared']:.1f} ({taken} of {n} "
          f"took another's measurements), harness computing all {rate['computed']:.1f}")
    print(f"  harness / bare, wall: {bare_s / shared_s:.3f} with sharing (target >= {SWEEP_TARGET})"
          f"{'' if bare_s / shared_s >= SWEEP_TARGET else '  BELOW TARGET'}; {bare_s / computed_s:.3f} computing all")
    print(f"  against a bare loop that skips fine-tuning at x1 as ShrinkBench's code does: {bare_skip / shared_s:.3f} with sharing, "
          f"{bare_skip / computed_s:.3f} computing all")
    print(f"  harness rows with and without sharing equal (every field but timings, shared_from): {'yes' if same else 'NO'}; "
          f"bare loop and harness final top-1 identical in every experiment: {'yes' if top1 else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved pairs of main jobs (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="xdist workers of the main job (default 2)")
    parser.add_argument("--sweep-repetitions", type=int, default=1, help="interleaved triples of sweeps (default 1)")
    parser.add_argument("--skip-main-job", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(throughput.machine_info())
    if not args.skip_main_job:
        main_jobs(args.rounds, args.workers)
    if not args.skip_sweep:
        sweep(args.sweep_repetitions)
    print(f"\n{throughput.machine_info()}")


if __name__ == "__main__":
    main()
