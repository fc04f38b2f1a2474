"""Speed check of the harness: what masking costs, and how long the default main job takes.

Why: every case fine-tunes under a :class:`MaskEnforcer` (a gradient hook per pruned weight plus
optimizer step hooks that count violations), so that overhead is paid 180 times per default
run. This script measures, in one run on this machine:

1. masked ÷ dense fine-tuning time on the ``digits-cnn`` suite (target <= 1.10). Dense is
   ``fit`` on a fresh base model; masked is the same after global-magnitude masks at
   compression 8, applied and enforced by ``pytest_shrinkbench.run.case.finetune`` as every case is. Dense
   and masked runs are interleaved after one warm-up of each, and the ratio is of the medians,
   so machine noise hits both alike. Torch runs on one thread for stable timing. Not all of
   the difference is the enforcer's: under Adam the masked entries' second moments stay exactly
   zero, and torch's CPU ``sqrt`` (MKL) takes about 4x as long on zeros as on other values:
   about 3% of a dense step's instructions here (counted with valgrind's callgrind).
2. the wall time of the default main job, ``pytest --shrink-method=all -n 2 -p no:cacheprovider``
   (252 cases), with the base models already cached (target <= 4 minutes). Its results go to a
   temporary folder, not the repository, and no store is used (every case runs).
   (``bench_main_job.py`` runs it the same way, with other worker counts and against another checkout.)
3. with ``--sandbox-rounds N``: what isolation costs, as the main job's wall time with every method
   in a walled child process (the default) ÷ the same job with ``--shrink-sandbox=in-process`` (the
   debugging mode: method code in the worker itself), target <= 1.05. Each round runs the whole main
   job (``-n 2``, warm base-model cache, no store) in both modes back to back, which goes first
   alternating, so a drift of a shared machine's speed hits both alike; the ratio is of the sums over
   the rounds, and each round's own ratio is printed beside it to show the spread. Whole jobs, not
   slices of one: the sandbox's costs per session (a fork server per process, discovery in a child, a
   prepared model per suite) and what it saves only in long sessions (its memory collapsed into huge
   pages once a process has run 32 cases) count as often as in the job a user runs. CPU time (all
   processes, children included) is printed beside the wall time.

4. with ``--sandbox-pinned N``: the same ratio measured another way, immune to the machine's drift: both
   modes run the main job *at the same time*, ``-n 1`` each, each pinned to a core of its own (its
   worker, fork server and children included), N rounds that swap the cores. Each job has one core for
   all it runs, as at ``-n 2`` on two cores, where the sandbox's processes take time from the workers.
   It needs two cores; the ratio is of the sums over the rounds.

It is a measurement, not a gate: it exits 0 whether or not the targets are met, and prints
"ABOVE TARGET" next to any that is missed. Base models come from ``$SHRINKBENCH_CACHE`` if set,
else the user cache dir (trained there on first use).

Run from anywhere (part 2 takes about a minute; ``--skip-main-job`` skips it)::

    python benchmarks/bench_speed.py [--skip-main-job]

Not a test: pytest collects only ``test_*.py`` from ``benchmarks/``, so the main job never runs it.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from bench_main_job import Run, run_main_job, run_main_jobs_at_once, warm_caches  # a sibling script (benchmarks/ is on sys.path)

from pytest_shrinkbench import prune
from pytest_shrinkbench.prunable import prunable_parameters
from pytest_shrinkbench.run.case import finetune
from pytest_shrinkbench.run.masks import MaskEnforcer, apply_masks
from pytest_shrinkbench.suites.subject import Subject, load_subject

REPO_ROOT = Path(__file__).resolve().parent.parent

SUITE = "digits-cnn"
METHOD = "global-magnitude"
RATIO = 8.0
SEED = 0
REPETITIONS = 11
FINETUNE_TARGET = 1.10

MAIN_JOB_TARGET_S = 4 * 60.0
SANDBOX_TARGET = 1.05


def dense_finetune_seconds(subject: Subject) -> float:
    """Fine-tune the unpruned base model with the suite's recipe."""
    torch.manual_seed(SEED)
    return finetune(subject.fresh_model(), subject, SEED)


def masked_finetune_seconds(subject: Subject) -> float:
    """Prune with global magnitude at ``RATIO`` and fine-tune under a MaskEnforcer, exactly as a case does."""
    torch.manual_seed(SEED)
    model = subject.fresh_model()
    masks = prune(model, METHOD, RATIO, batch=subject.batch(SEED), seed=SEED)
    prunable = prunable_parameters(model, subject.trace.prunable)
    apply_masks(prunable, masks, {})
    return finetune(model, subject, SEED, MaskEnforcer(prunable, masks))


def measure_finetune_ratio() -> float:
    """Median masked ÷ median dense fine-tuning time, printing every repetition."""
    subject = load_subject(SUITE)
    print(f"fine-tuning on {SUITE}: {METHOD} x{RATIO:g}, seed {SEED}, recipe {subject.suite.finetune_recipe}")
    dense_finetune_seconds(subject)  # warm-ups, untimed
    masked_finetune_seconds(subject)
    dense: list[float] = []
    masked: list[float] = []
    for rep in range(REPETITIONS):
        # Alternate which goes first too, so a slow drift of the machine favours neither.
        if rep % 2 == 0:
            dense.append(dense_finetune_seconds(subject))
            masked.append(masked_finetune_seconds(subject))
        else:
            masked.append(masked_finetune_seconds(subject))
            dense.append(dense_finetune_seconds(subject))
        print(f"  repetition {rep + 1}/{REPETITIONS}: dense {dense[-1]:.3f} s, masked {masked[-1]:.3f} s")
    dense_median, masked_median = statistics.median(dense), statistics.median(masked)
    print(f"  median: dense {dense_median:.3f} s, masked {masked_median:.3f} s")
    return masked_median / dense_median


def measure_main_job(*extra: str) -> Run:
    """The default main job (plus ``extra`` options) with warm base-model caches, timed."""
    warm_caches(REPO_ROOT)  # trains and caches on first use, so the timed run only loads
    return run_main_job(REPO_ROOT, 2, list(extra))


def verdict(value: float, target: float) -> str:
    return "" if value <= target else "  ABOVE TARGET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-main-job", action="store_true", help="skip timing the default main job (about a minute)")
    parser.add_argument("--sandbox-rounds", type=int, default=0, metavar="N",
                        help="also time the whole main job sandboxed vs in-process, N rounds of one pair (N x 7 minutes)")
    parser.add_argument("--sandbox-pinned", type=int, default=0, metavar="N",
                        help="also time both modes at the same time, -n 1 each on a core of its own, N rounds (N x 5 minutes)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, torch.set_num_threads(1) for stable timing (torch threads: {torch.get_num_threads()})")
    # Other processes on the machine skew both parts; the load average shows whether any ran.
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average (1/5/15 min): {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratio = measure_finetune_ratio()

    main_job: Run | None = None
    if not args.skip_main_job:
        main_job = measure_main_job()
        print(f"  main job: pytest exit code {main_job.returncode}: {main_job.last_line}")

    sandboxed: list[Run] = []
    in_process: list[Run] = []
    if args.sandbox_pinned and len(os.sched_getaffinity(0)) < 2:
        parser.error("--sandbox-pinned needs two cores: one for each mode's job")
    if args.sandbox_rounds or args.sandbox_pinned:
        warm_caches(REPO_ROOT)  # once: every run then only loads the cached base models
    for round_ in range(args.sandbox_rounds):
        order = [(sandboxed, []), (in_process, ["--shrink-sandbox=in-process"])]
        for runs, extra in order if round_ % 2 == 0 else reversed(order):
            run = run_main_job(REPO_ROOT, 2, extra)
            runs.append(run)
            print(f"  round {round_ + 1}: {' '.join(extra) or 'sandboxed'}: wall {run.wall:.1f} s, CPU {run.cpu:.1f} s "
                  f"(exit code {run.returncode})", flush=True)
        print(f"  round {round_ + 1}: sandboxed / in-process wall {sandboxed[-1].wall / in_process[-1].wall:.3f}, "
              f"CPU {sandboxed[-1].cpu / in_process[-1].cpu:.3f}", flush=True)

    pinned: list[tuple[Run, Run]] = []
    cores = sorted(os.sched_getaffinity(0))[:2]
    for round_ in range(args.sandbox_pinned):
        first, second = cores if round_ % 2 == 0 else cores[::-1]
        boxed, bare = run_main_jobs_at_once(REPO_ROOT, [([], first), (["--shrink-sandbox=in-process"], second)])
        pinned.append((boxed, bare))
        print(f"  pinned round {round_ + 1}: sandboxed on core {first}: wall {boxed.wall:.1f} s, CPU {boxed.cpu:.1f} s "
              f"(exit code {boxed.returncode}); in-process on core {second}: wall {bare.wall:.1f} s, CPU {bare.cpu:.1f} s "
              f"(exit code {bare.returncode}); ratio {boxed.wall / bare.wall:.3f}", flush=True)

    print()
    print("summary")
    print(f"  masked/dense fine-tuning time: {ratio:.2f} (target <= {FINETUNE_TARGET:.2f}){verdict(ratio, FINETUNE_TARGET)}")
    if main_job is None:
        print("  main job wall time: skipped (--skip-main-job)")
    else:
        failed = "" if main_job.returncode == 0 else f"  (pytest exit code {main_job.returncode})"
        print(
            f"  main job wall time: {main_job.wall:.1f} s (target <= {MAIN_JOB_TARGET_S / 60:g} min = {MAIN_JOB_TARGET_S:.0f} s)"
            f"{verdict(main_job.wall, MAIN_JOB_TARGET_S)}{failed}"
        )
    if sandboxed:
        wall = [sum(r.wall for r in runs) for runs in (sandboxed, in_process)]
        cpu = [sum(r.cpu for r in runs) for runs in (sandboxed, in_process)]
        failed = sum(r.returncode != 0 for r in sandboxed + in_process)
        print(f"  main job sandboxed / in-process wall time: {wall[0] / wall[1]:.3f} ({wall[0]:.1f} s / {wall[1]:.1f} s over "
              f"{args.sandbox_rounds} round(s); target <= {SANDBOX_TARGET})"
              f"{verdict(wall[0] / wall[1], SANDBOX_TARGET)}{f'  ({failed} runs failed)' if failed else ''}")
        print(f"  main job sandboxed / in-process CPU time (all processes, children included): {cpu[0] / cpu[1]:.3f} "
              f"({cpu[0]:.1f} s / {cpu[1]:.1f} s)")
    if pinned:
        wall = [sum(pair[k].wall for pair in pinned) for k in (0, 1)]
        failed = sum(r.returncode != 0 for pair in pinned for r in pair)
        print(f"  main job at the same time, -n 1 each on its own core, sandboxed / in-process wall time: {wall[0] / wall[1]:.3f} "
              f"({wall[0]:.1f} s / {wall[1]:.1f} s over {len(pinned)} round(s); target <= {SANDBOX_TARGET})"
              f"{verdict(wall[0] / wall[1], SANDBOX_TARGET)}{f'  ({failed} runs failed)' if failed else ''}")


if __name__ == "__main__":
    main()
