"""Wall time of the main job, its scaling over xdist workers, and before/after against another checkout.

Why: the main job (``pytest --shrink-method=all``: 2 suites × 7 methods × 6 ratios × 3 seeds = 252
cases) is what a user runs first, and issue 14 asks two things of it: ``-n 2`` should take at most
1/1.8 of ``-n 1``'s wall time on an otherwise idle 2-core machine, and a speed change should be
quoted as the main job's wall time before and after. This script runs the main job with a warm
base-model cache (one per checkout, trained before timing) and no results store (``--shrink-store=none``, results in a temporary folder), once
per worker count and checkout, interleaved and alternating the order per repetition, so that a
drift of the machine's load hits all alike. Each run's wall time, CPU time (controller and workers,
from ``RUSAGE_CHILDREN``) and the load average around it are printed; CPU time says how much of a
wall time is the job's and how much is waiting for cores that other processes held.

``--baseline PATH`` also times another checkout of the project (e.g. ``/work/main``), with
``PYTHONPATH`` pointing at it, for a before/after measured on the same machine in the same run.

Run from the repository root (each run of the full job takes minutes)::

    python benchmarks/bench_main_job.py [--workers 1,2] [--baseline PATH] [--repetitions 1] [-- extra pytest args]

e.g. ``-- --shrink-seeds=0`` for a third of the job. A measurement, not a gate: it exits 0 whatever
the numbers. Not a test: pytest collects only ``test_*.py`` from ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB_ARGS = ["--shrink-method=all", "--shrink-store=none", "-p", "no:cacheprovider"]
SCALING_TARGET = 1.8  # issue 14: -n 2 at least 1.8x as fast as -n 1 on an idle 2-core machine


@dataclass
class Run:
    """One run of the main job."""

    repo: Path
    workers: int
    wall: float
    cpu: float
    load_before: float
    load_after: float
    returncode: int
    last_line: str


def environment(repo: Path, cache: Path | None) -> dict[str, str]:
    """The checkout first on the path and, if given, a base-model cache of its own: two versions that record a base
    model's identity differently would otherwise each find the other's record wrong and retrain in the timed runs."""
    return {**os.environ, "PYTHONPATH": str(repo), **({"SHRINKBENCH_CACHE": str(cache)} if cache else {})}


def warm_caches(repo: Path, cache: Path | None = None) -> None:
    """Train and cache the default suites' base models, so the timed runs only load them."""
    code = "from pytest_shrinkbench import load_subject\nfor s in (\"digits-cnn\", \"digits-mlp\"): load_subject(s)"
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=environment(repo, cache), check=True)


def main_job_command(workers: int, results: Path, extra: list[str]) -> list[str]:
    """The main job's command line, results in ``results`` (a temporary folder: no store, nothing left behind)."""
    return [sys.executable, "-m", "pytest", *MAIN_JOB_ARGS, "-n", str(workers), f"--shrink-results={results}", *extra]


def run_main_job(repo: Path, workers: int, extra: list[str], cache: Path | None = None, keep: Path | None = None) -> Run:
    """The main job of the checkout ``repo`` with ``-n workers``, timed; its results kept in ``keep`` if given."""
    with tempfile.TemporaryDirectory(prefix="shrinkbench-main-job-") as results:
        command = main_job_command(workers, keep or Path(results), extra)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        process = subprocess.run(command, cwd=repo, env=environment(repo, cache), capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = process.stdout.strip().splitlines()
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    return Run(repo, workers, wall, cpu, load, os.getloadavg()[0], process.returncode, lines[-1] if lines else process.stderr[-300:])


def run_main_jobs_at_once(repo: Path, jobs: list[tuple[list[str], int]], cache: Path | None = None) -> list[Run]:
    """Several main jobs of ``repo`` at the same time, ``-n 1`` each, each pinned to its own core (``jobs``: extra
    pytest arguments and the core), timed each from the common start to its own end. Jobs that run at once see
    the same machine: a drift of a shared machine's speed slows all of them alike. A job's children (its
    worker, the sandbox's processes) inherit its core, so whatever else it runs costs it wall time."""
    with tempfile.TemporaryDirectory(prefix="shrinkbench-main-jobs-") as folder:
        started = []
        load = os.getloadavg()[0]
        start = time.perf_counter()
        for index, (extra, core) in enumerate(jobs):
            results, log = Path(folder) / f"results-{index}", open(Path(folder) / f"log-{index}", "w+")
            process = subprocess.Popen(main_job_command(1, results, extra), cwd=repo, env=environment(repo, cache), stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}))
            started.append((process, log))
        ended: dict[int, tuple[float, float, int]] = {}
        while len(ended) < len(started):
            pid, status, usage = os.wait4(-1, 0)
            ended[pid] = (time.perf_counter() - start, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status))
        runs = []
        for process, log in started:
            wall, cpu, code = ended[process.pid]
            process.returncode = code  # reaped by wait4 above: tell Popen, so it does not think it still runs
            log.seek(0)
            lines = log.read().strip().splitlines()
            log.close()
            runs.append(Run(repo, 1, wall, cpu, load, os.getloadavg()[0], code, lines[-1] if lines else ""))
        return runs


def describe(run: Run) -> str:
    status = "" if run.returncode == 0 else f"  EXIT CODE {run.returncode}"
    return (f"{run.repo} -n {run.workers}: wall {run.wall:.1f} s, CPU {run.cpu:.1f} s, load average {run.load_before:.2f} -> "
            f"{run.load_after:.2f}; {run.last_line}{status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated xdist worker counts (default 1,2)")
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way (before/after)")
    parser.add_argument("--repetitions", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("extra", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    repos = [REPO_ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    print(f"cores available {len(os.sched_getaffinity(0))}, load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    caches = Path(tempfile.mkdtemp(prefix="shrinkbench-main-job-caches-"))
    for repo in repos:
        warm_caches(repo, caches / repo.name)
    plan = [(repo, n) for repo in repos for n in workers]
    runs: list[Run] = []
    for rep in range(args.repetitions):
        for repo, n in plan if rep % 2 == 0 else reversed(plan):
            runs.append(run_main_job(repo, n, args.extra, caches / repo.name))
            print(describe(runs[-1]), flush=True)
    shutil.rmtree(caches)

    print("\nsummary (medians over repetitions)")
    wall = {(repo, n): statistics.median(r.wall for r in runs if (r.repo, r.workers) == (repo, n)) for repo, n in plan}
    cpu = {(repo, n): statistics.median(r.cpu for r in runs if (r.repo, r.workers) == (repo, n)) for repo, n in plan}
    for repo, n in plan:
        print(f"  {repo} -n {n}: wall {wall[repo, n]:.1f} s, CPU {cpu[repo, n]:.1f} s")
    for repo in repos:
        if 1 in workers and 2 in workers:
            ratio = wall[repo, 1] / wall[repo, 2]
            print(f"  {repo}: -n 1 / -n 2 wall time {ratio:.2f} (target >= {SCALING_TARGET}; meaningful only on an idle machine)")
    if args.baseline:
        for n in workers:
            print(f"  -n {n}: {args.baseline} {wall[repos[1], n]:.1f} s -> {REPO_ROOT} {wall[REPO_ROOT, n]:.1f} s "
                  f"(x{wall[repos[1], n] / wall[REPO_ROOT, n]:.2f})")
    print(f"  load average at the end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
