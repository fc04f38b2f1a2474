"""The GPU check: one command that validates the CUDA path and prints its numbers, ready for the day a GPU is lent.

Why: GPU machines are lent rarely and briefly (about 15 minutes, all included), and no part of the CUDA path
(``--shrink-device=cuda``, one GPU per xdist worker, a method's walled child on a GPU machine,
``--shrink-latency`` on CUDA) had ever run. There is no time to write a check then; this is it. It runs four
steps in order, each in a process group of its own under a global deadline (``--budget``, default 450 s: the
whole run stays under 8 minutes and stops by itself; a step that would pass the deadline is killed with
everything it started, and later steps say they were not run), and prints one table:

1. ``cuda-path``: the embedded suites under ``-n 2`` with the sandbox on (``--shrink-require-sandbox=process``):
   a probe method fails unless its model is on the device in its child (so the child computes its masks
   there), the masks cross the boundary, and the harness fine-tunes on the device (every row's ``device``).
2. ``cifar10-resnet20``: one ResNet-20 case per method on CIFAR-10-format files the script writes (no download;
   torchvision's md5 check is bypassed in the check's own processes only, as the tests do, and only for files
   under its temporary folder), with the time of a case split as ``bench_throughput.py`` splits it (prune,
   fine-tune, other) and the subject's load (base training included) on its own.
3. ``latency``: ``--shrink-latency`` on the device, dense against pruned, for global magnitude and the structured
   l1-filter, on digits-cnn and cifar10-resnet20 (the step-2 base model, from the same cache).
4. ``semi-structured``: 2:4 ``torch.sparse.to_sparse_semi_structured`` matmuls against dense for LLM-sized shapes
   (fp16), where torch supports them on the device (CUDA, compute capability >= 8.0); otherwise the step says
   plainly why not.

Without CUDA (or with ``--device cpu``) the same steps run on the CPU at a tiny size (``--tiny``, the default
there): tests/e2e/test_gpu_check.py runs that, so the script cannot rot. Run from the repository root::

    python benchmarks/gpu_check.py                  # on the GPU machine: --device auto picks cuda
    python benchmarks/gpu_check.py --device cpu     # the tiny CPU rehearsal

A check and a measurement, not a gate: exit status 0 when every step passed (or was honestly unsupported), 1
otherwise. Not a test: pytest collects only ``test_*.py`` from ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from tests.vision_fakes import CIFAR_MD5_BYPASS, write_cifar10  # noqa: E402  (the tests' CIFAR-10 writer)

STEPS = ("cuda-path", "cifar10-resnet20", "latency", "semi-structured")
LIMITS = {"cuda-path": 150, "cifar10-resnet20": 150, "latency": 120, "semi-structured": 60}  # seconds, at full size
SEMI_STRUCTURED_SHAPES = ((2048, 4096, 4096), (2048, 4096, 11008), (2048, 11008, 4096))  # tokens, in, out (LLaMA-7B's)


@dataclass(frozen=True)
class Size:
    """How big each step is: a GPU-sized check, or a CPU rehearsal of the same code paths in seconds."""

    cifar_train: int
    cifar_test: int
    epochs: int
    batch: int
    suites: str  # the embedded suites of step 1
    latency_suites: str  # the suites of step 3
    shapes: tuple[tuple[int, int, int], ...]
    timing: tuple[str, ...]  # pytest-benchmark options of step 3
    latency_batch: int


FULL = Size(10_000, 2_000, 2, 128, "digits-mlp,digits-cnn", "digits-cnn,cifar10-resnet20", SEMI_STRUCTURED_SHAPES, ("--benchmark-max-time=0.5",), 256)
TINY = Size(64, 32, 1, 32, "digits-mlp", "digits-mlp,cifar10-resnet20", ((32, 64, 64),), ("--benchmark-min-rounds=3", "--benchmark-max-time=0.02"), 16)

PROBE = '''from pytest_shrinkbench import method


@method("gpu-probe")
def gpu_probe(ctx):
    """Global magnitude, computed where the child holds the model: fails unless that is the checked device."""
    device = next(iter(ctx.prunable.values())).device
    if device.type != {device!r}:
        raise RuntimeError(f"the method's model is on {{device}} in its child, expected {device}")
    return ctx.keep_top({{n: w.detach().abs() for n, w in ctx.prunable.items()}})
'''


def recipe_args(size: Size) -> dict:
    """The short recipe of cifar10-resnet20 in this check, base and fine-tuning (the suite's own fine-tune is 30 epochs)."""
    return dict(optimizer="sgd", lr=0.05, epochs=size.epochs, batch_size=size.batch)


def conftest_source(size: Size) -> str:
    return (CIFAR_MD5_BYPASS + "from pytest_shrinkbench.suites import override_suite\n"
            "from pytest_shrinkbench.suites.recipe import Recipe\n"
            f"override_suite('cifar10-resnet20', base_recipe=Recipe(**{recipe_args(size)!r}), "
            f"finetune_recipe=Recipe(**{recipe_args(size)!r}))\n")


def prepare(work: Path, size: Size, device: str) -> None:
    """The check's files, all under ``work``: CIFAR-10-format data, and a project with the probe method and conftest."""
    write_cifar10(work / "data", train=size.cifar_train, test=size.cifar_test)
    project = work / "project"
    (project / "methods").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\nshrink_results = results\n")
    (project / "conftest.py").write_text(conftest_source(size))
    (project / "methods" / "probe.py").write_text(PROBE.format(device=device))


def cache_of(work: Path) -> Path:
    """The base-model cache of the check: ``--cache`` (linked from the work folder), else a fresh one there."""
    return (work / "cache").resolve()


def clean_environment() -> dict[str, str]:
    """This process's environment without pytest-xdist's worker variables: a session the check starts must not
    believe it is a worker of the session that started the check (its test runs under ``-n 2``)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_") and k != "PYTEST_CURRENT_TEST"}


def pytest_session(work: Path, results: str, args: list[str], timeout: float) -> tuple[list[dict], str]:
    """A pytest session in the check's project (its own cache); returns its rows and the last lines of its output."""
    env = {**clean_environment(), "SHRINKBENCH_CACHE": str(cache_of(work)), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--shrink-store=none",
                           f"--shrink-results={results}", *args], cwd=work / "project", env=env, capture_output=True,
                          text=True, timeout=timeout)
    rows = [json.loads(line) for f in sorted((work / "project" / results).glob("*.jsonl")) for line in f.read_text().splitlines()]
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    if done.returncode != 0:
        raise RuntimeError(f"pytest exited {done.returncode}: {tail}")
    return rows, tail


def failed_rows(rows: list[dict]) -> list[str]:
    return [f"{r['method']}/{r['suite']}/x{r['ratio']:g}: {r.get('message')}" for r in rows if r.get("status") != "passed"]


# ----------------------------------------------------------------------------- the steps (each in its own process)


def step_cuda_path(work: Path, size: Size, device: str) -> dict:
    start = time.perf_counter()
    rows, _ = pytest_session(work, "cuda-path", ["--shrink-method=gpu-probe,l1-filter", f"--shrink-suite={size.suites}",
                                                 "--shrink-ratios=4", "--shrink-seeds=0", "-n", "2", f"--shrink-device={device}",
                                                 "--shrink-require-sandbox=process"], LIMITS["cuda-path"])
    problems = failed_rows(rows) + [f"{r['method']}/{r['suite']} ran on {r.get('device')}" for r in rows
                                    if not str(r.get("device")).startswith(device)]
    if problems or not rows:
        raise RuntimeError("; ".join(problems) or "no rows")
    devices = sorted({r["device"] for r in rows})
    return {"result": f"{len(rows)} cases passed under -n 2 on {', '.join(devices)}, methods {sorted({r['sandbox'] for r in rows})[0]}; "
                      f"probe saw its model on {device} in its child",
            "seconds": time.perf_counter() - start}


def step_cifar(work: Path, size: Size, device: str) -> dict:
    import torch
    import torchvision

    from pytest_shrinkbench import CaseSpec, load_subject, run_case
    from pytest_shrinkbench.sandbox.runner import default_sandbox
    from pytest_shrinkbench.suites import override_suite
    from pytest_shrinkbench.suites.recipe import Recipe

    torch.set_num_threads(1)  # as a session pins a case; the fork server must not inherit a thread pool
    data = work / "data"
    real = torchvision.datasets.cifar.check_integrity
    torchvision.datasets.cifar.check_integrity = (  # the fakes' md5 sums are not CIFAR-10's: only files of this check
        lambda fpath, md5=None: os.path.isfile(fpath) if Path(fpath).is_relative_to(data) else real(fpath, md5))
    recipe = Recipe(**recipe_args(size))  # as the project's conftest has it: step 3 finds this base model cached
    override_suite("cifar10-resnet20", base_recipe=recipe, finetune_recipe=recipe)
    default_sandbox()  # the fork server first, before this process initializes CUDA (a fork after that cannot use it)
    start = time.perf_counter()
    subject = load_subject("cifar10-resnet20", cache_dir=cache_of(work), device=device, data_root=data)
    load = time.perf_counter() - start
    parts = [f"{size.cifar_train}/{size.cifar_test} images, {size.epochs} epoch(s) batch {size.batch}; "
             f"subject load (base training) {load:.1f} s"]
    for method, ratio in (("global-magnitude", 4.0), ("l1-filter", 2.0), ("global-magnitude", 8.0)):
        begin = time.perf_counter()
        row = run_case(CaseSpec(method, "cifar10-resnet20", ratio, 0), subject)
        case = time.perf_counter() - begin
        if not str(row["device"]).startswith(device):
            raise RuntimeError(f"{method} x{ratio:g} ran on {row['device']}")
        parts.append(f"{method} x{ratio:g}: case {case:.2f} s = prune {row['prune_seconds']:.3f} + fine-tune "
                     f"{row['finetune_seconds']:.2f} + other {case - row['prune_seconds'] - row['finetune_seconds']:.2f}, top-1 {row['top1']:.3f}")
    return {"result": "; ".join(parts), "seconds": time.perf_counter() - start + load}


def step_latency(work: Path, size: Size, device: str) -> dict:
    start = time.perf_counter()
    rows, _ = pytest_session(work, "latency", ["--shrink-method=global-magnitude,l1-filter", f"--shrink-suite={size.latency_suites}",
                                               f"--shrink-data-root={work / 'data'}", "--shrink-ratios=4", "--shrink-seeds=0",
                                               f"--shrink-device={device}", "--shrink-latency", f"--shrink-latency-batch={size.latency_batch}",
                                               *size.timing], LIMITS["latency"])
    problems = failed_rows(rows) + [f"{r['method']}/{r['suite']}: {r.get('shrink_error') or 'not timed'}" for r in rows
                                    if r.get("status") == "passed" and not r.get("speedup_measured")]
    if problems or not rows:
        raise RuntimeError("; ".join(problems) or "no rows")
    parts = [f"{r['suite']} {r['method']} x4: dense {r['latency_dense_ms']:.3f} ms, pruned {r['latency_ms']:.3f} ms, measured "
             f"x{r['speedup_measured']:.2f} (theoretical x{r['speedup']:.2f})" for r in rows]
    return {"result": f"batch {size.latency_batch} on {rows[0]['device']}; " + "; ".join(parts), "seconds": time.perf_counter() - start}


def two_four(weight):
    """``weight`` with the two smallest of every four consecutive inputs zeroed (the 2:4 pattern)."""
    groups = weight.reshape(-1, 4)
    keep = groups.abs().topk(2, dim=1).indices
    mask = groups.new_zeros(groups.shape, dtype=groups.dtype).scatter_(1, keep, 1)
    return (groups * mask).reshape(weight.shape)


def step_semi_structured(work: Path, size: Size, device: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils import benchmark

    start = time.perf_counter()
    if device == "cuda" and torch.cuda.get_device_capability() < (8, 0):
        return {"status": "unsupported", "result": f"compute capability {torch.cuda.get_device_capability()} < (8, 0): "
                                                    "no 2:4 sparse kernels", "seconds": 0.0}
    dtype = torch.float16 if device == "cuda" else torch.float32
    parts = []
    for tokens, inputs, outputs in size.shapes:
        generator = torch.Generator(device=device).manual_seed(0)
        weight = two_four(torch.randn(outputs, inputs, device=device, dtype=dtype, generator=generator))
        x = torch.randn(tokens, inputs, device=device, dtype=dtype, generator=generator)
        try:
            sparse = torch.sparse.to_sparse_semi_structured(weight)
            sparse_out = F.linear(x, sparse)
        except Exception as exc:  # whatever torch raises for a device, dtype or shape it has no kernel for
            reason = str(exc).strip().splitlines()[0][:160]
            return {"status": "unsupported", "result": f"torch {torch.__version__} on {device}: to_sparse_semi_structured "
                                                        f"refused {outputs}x{inputs} {dtype}: {reason}", "seconds": time.perf_counter() - start}
        error = float((sparse_out - F.linear(x, weight)).abs().max())
        timings = {}
        for name, w in (("dense", weight), ("2:4", sparse)):
            timer = benchmark.Timer("F.linear(x, w)", globals={"F": F, "x": x, "w": w})
            timings[name] = timer.blocked_autorange(min_run_time=0.5 if device == "cuda" else 0.05).median * 1e3
        parts.append(f"{tokens}x{inputs} @ {inputs}x{outputs}: dense {timings['dense']:.3f} ms, 2:4 {timings['2:4']:.3f} ms, "
                     f"dense/2:4 x{timings['dense'] / timings['2:4']:.2f}, max |diff| {error:.2g}")
    return {"result": f"{dtype}; " + "; ".join(parts), "seconds": time.perf_counter() - start}


RUN = {"cuda-path": step_cuda_path, "cifar10-resnet20": step_cifar, "latency": step_latency, "semi-structured": step_semi_structured}


# ----------------------------------------------------------------------------- the driver


def run_step(name: str, work: Path, tiny: bool, device: str, timeout: float) -> dict:
    """One step in a process group of its own, killed with everything it started if it passes ``timeout``."""
    command = [sys.executable, __file__, "--step", name, "--work", str(work), "--device", device, "--tiny" if tiny else "--full"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**clean_environment(), "PYTHONPATH": str(REPO_ROOT)})
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"status": "timed out", "result": f"killed after {timeout:.0f} s (the deadline)", "seconds": timeout}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"status": "failed", "result": " | ".join(err.strip().splitlines()[-3:]) or f"exit {process.returncode}", "seconds": 0.0}
    return json.loads(lines[-1])


def one_step(name: str, work: Path, size: Size, device: str) -> None:
    """In the step's own process: run it, print its row as one JSON line."""
    try:
        row = {"status": "ok", **RUN[name](work, size, device)}
    except Exception as exc:  # a failed step is a row of the table, never the end of the check
        row = {"status": "failed", "result": f"{type(exc).__name__}: {str(exc)[:600]}", "seconds": 0.0}
    print(json.dumps(row), flush=True)


def table(rows: list[tuple[str, dict]], device: str) -> str:
    lines = ["| step | device | status | seconds | result |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {device} | {row['status']} | {row['seconds']:.1f} | {row['result']} |" for name, row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check (default 450)")
    size_choice = parser.add_mutually_exclusive_group()
    size_choice.add_argument("--tiny", action="store_true", default=None, help="tiny sizes (the default without CUDA)")
    size_choice.add_argument("--full", dest="tiny", action="store_false", help="GPU sizes (the default with CUDA)")
    parser.add_argument("--cache", type=Path, help="a base-model cache to use (default: a fresh one, trained here)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    if args.step:
        one_step(args.step, args.work, TINY if args.tiny else FULL, args.device)
        return 0

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tiny = device == "cpu" if args.tiny is None else args.tiny
    where = f"{torch.cuda.get_device_name()} (capability {torch.cuda.get_device_capability()})" if device == "cuda" else "CPU"
    print(f"gpu_check: torch {torch.__version__}, {where}, {'tiny' if tiny else 'full'} sizes, budget {args.budget:.0f} s", flush=True)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="shrinkbench-gpu-check-") as folder:
        work = Path(folder)
        prepare(work, TINY if tiny else FULL, device)
        if args.cache is not None:
            (work / "cache").symlink_to(args.cache.resolve(), target_is_directory=True)
        for name in STEPS:
            left = deadline - time.monotonic()
            if left < 5:
                row = {"status": "not run", "result": "the deadline had passed", "seconds": 0.0}
            else:
                row = run_step(name, work, tiny, device, min(left, LIMITS[name] * (1 if not tiny else 2)))
            rows.append((name, row))
            print(f"  {name}: {row['status']} ({row['seconds']:.1f} s)", flush=True)
    print(table(rows, device))
    return 0 if all(row["status"] in ("ok", "unsupported") for _, row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
