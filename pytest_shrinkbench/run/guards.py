"""Guards around one case: wall time (a hanging method), memory (a runaway allocation) and the
process-global state a method could leave behind for the next case (global hooks, threads, grad mode).

A benchmark harness runs other people's code; these make a misbehaving method fail its own
case with a clear message instead of stalling the session, killing it, or skewing later cases.
"""

from __future__ import annotations

import resource
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.modules.module as module_globals
import torch.optim.optimizer as optimizer_globals

from ..errors import CaseFailure

# torch's process-wide hook registries (dicts): a hook a method registers there would run in every
# later case of the same worker.
_GLOBAL_HOOK_REGISTRIES = [
    getattr(owner, name)
    for owner in (module_globals, optimizer_globals)
    for name in dir(owner)
    if name.startswith("_global_") and name.endswith("hooks") and isinstance(getattr(owner, name), dict)
]


class CaseTimeout(CaseFailure):
    """A case ran past ``--shrink-timeout``."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the running code after ``seconds`` (0 = no limit).

    Uses SIGALRM, so it needs the main thread (where pytest and xdist workers run tests) and
    interrupts Python code and sleeps; a method stuck inside one C call is interrupted when
    that call returns.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"timed out after {seconds:g} s (--shrink-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def isolated_globals() -> Iterator[None]:
    """Undo, after the case, what a method changed process-wide: global module and optimizer hooks,
    the torch thread count (it changes numbers) and the grad mode."""
    hooks = [dict(registry) for registry in _GLOBAL_HOOK_REGISTRIES]
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    try:
        yield
    finally:
        for registry, saved in zip(_GLOBAL_HOOK_REGISTRIES, hooks):
            registry.clear()
            registry.update(saved)
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)


def limit_memory(gib: float) -> int:
    """Cap this process's address space at ``gib`` GiB, so an oversized allocation raises instead of
    waking the OOM killer; return the previous soft limit. Not for CUDA processes: the driver
    reserves far more address space than it uses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(gib * 2**30)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return soft


def restore_memory(soft: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))
