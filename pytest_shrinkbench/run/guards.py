"""The case's wall-time limit, enforced from the harness's side.

The method's child is killed when the limit passes (the alarm interrupts the harness while it
waits for an answer, and the child is killed on the way out); the harness's own fine-tuning and
checks count towards the same limit. No method code runs in this process, so nothing can cancel
the alarm (in the in-process debugging mode it can: that mode's rows are unverified).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from ..errors import CaseFailure


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
