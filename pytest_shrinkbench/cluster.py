"""``pytest-shrinkbench submit``: a run's N shards as one Slurm job array, through submitit.

submitit (``pip install "pytest-shrinkbench[slurm]"``) writes the sbatch script, submits the array,
requeues a preempted or timed-out task, and collects results and logs; this module only says what each
task runs: ``python -m pytest --shrink-shard=K/N --shrink-results=OUT/shard-K
--shrink-cache-mode=readonly ARGS`` in the folder ``submit`` was called from, so the run's ini file,
conftest and relative paths resolve as they would for a local run. Each shard keeps its own results
folder and store, so submitting again (after a crash, a timeout, a new method) reruns only what the
stores do not hold. With ``--wait`` it merges the shards with the report command when all have ended.
The same code runs the array as local processes (``--cluster=local``) where there is no Slurm.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

# Set by submit for each shard: a user's own value would make the shards overwrite each other.
PER_SHARD = ("--shrink-shard", "--shrink-results", "--shrink-store")


class ShardJob:
    """What one array task runs; submitit pickles it and calls it on the node."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.command, self.cwd = command, cwd

    def __call__(self) -> int:
        return subprocess.run(self.command, cwd=self.cwd, check=False).returncode

    def checkpoint(self) -> Any:
        """Preempted or out of time: submitit requeues the task, which resumes from its shard's store."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def shard_folder(output: Path, index: int) -> Path:
    return output / f"shard-{index}"


def shard_command(index: int, count: int, output: Path, pytest_args: list[str]) -> list[str]:
    """The pytest command line of shard ``index`` of ``count`` (the user's arguments last: theirs win)."""
    return [sys.executable, "-m", "pytest", f"--shrink-shard={index}/{count}",
            f"--shrink-results={shard_folder(output, index)}", "--shrink-cache-mode=readonly", *pytest_args]


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    """The ``submit`` command's own options (everything after ``--`` goes to pytest)."""
    cmd.add_argument("--shards", type=int, required=True, help="N: how many shards (array tasks) to split the run into")
    cmd.add_argument("--output", type=Path, default=Path("shrinkbench-shards"),
                     help="folder of the shards' results (shard-K/), logs (logs/) and merged report (report/)")
    cmd.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                     help="slurm (default), or local: the tasks as processes of this machine")
    cmd.add_argument("--partition", help="Slurm partition")
    cmd.add_argument("--gpus-per-task", type=int, default=None, help="GPUs per shard (with -n G after --, one per xdist worker)")
    cmd.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per shard")
    cmd.add_argument("--mem-gb", type=float, default=None, help="memory per shard, GB")
    cmd.add_argument("--time", type=int, default=60 * 24, help="time limit per shard in minutes (default 1440); a task "
                     "that reaches it is requeued and resumes from its store")
    cmd.add_argument("--parallelism", type=int, default=None, help="at most this many shards running at once")
    cmd.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="any other sbatch option, e.g. --slurm account=lab --slurm qos=high (repeatable)")
    mode = cmd.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="wait for every shard, then merge them into OUTPUT/report")
    mode.add_argument("--detach", action="store_true", help="submit and return (the default)")
    cmd.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then the run's pytest arguments (--shrink-method=..., -n 8, ...)")


def submit(args: argparse.Namespace, report: Callable[[list[str]], int]) -> int:
    """Submit the shards; with ``--wait``, return ``report([shard folders..., -o, OUTPUT/report])``'s status."""
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    given = [a for a in pytest_args if a.split("=")[0] in PER_SHARD]
    if given or args.shards < 1:
        why = f"submit sets {', '.join(PER_SHARD)} for each shard (got {given[0]!r})" if given else "--shards must be >= 1"
        print(f"pytest-shrinkbench submit: {why}", file=sys.stderr)
        return 2
    try:
        import submitit
    except ImportError:
        print('pytest-shrinkbench submit needs submitit: pip install "pytest-shrinkbench[slurm]"', file=sys.stderr)
        return 2
    output = args.output.absolute()
    executor = submitit.AutoExecutor(folder=output / "logs" / "%j", cluster=args.cluster)
    extra = dict(item.split("=", 1) for item in args.slurm if "=" in item)
    executor.update_parameters(
        name="shrinkbench", timeout_min=args.time, nodes=1, tasks_per_node=1, cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_task, mem_gb=args.mem_gb, slurm_partition=args.partition,
        slurm_array_parallelism=args.parallelism, slurm_additional_parameters=extra or None,
    )
    jobs = []
    with executor.batch():
        for index in range(1, args.shards + 1):
            jobs.append(executor.submit(ShardJob(shard_command(index, args.shards, output, pytest_args), Path(os.getcwd()))))
    folders = [shard_folder(output, k) for k in range(1, args.shards + 1)]
    for index, job in enumerate(jobs, start=1):
        print(f"shard {index}/{args.shards}: job {job.job_id} -> {folders[index - 1]}")
    if not args.wait:
        print(f"when they have ended, merge them with: pytest-shrinkbench report {output}/shard-*/ -o {output / 'report'}")
        return 0
    for index, job in enumerate(jobs, start=1):
        try:
            print(f"shard {index}/{args.shards}: pytest exited {job.result()}")
        except Exception as exc:  # noqa: BLE001  (a task that died: the report names what it lacks)
            print(f"shard {index}/{args.shards}: FAILED: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1]}")
    found = [str(folder) for folder in folders if folder.is_dir()]
    if not found:
        print(f"pytest-shrinkbench submit: no shard left results under {output}", file=sys.stderr)
        return 3
    return report([*found, "-o", str(output / "report")])
