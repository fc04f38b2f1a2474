"""A method's child process: forked by the fork server, walled, then it imports the method and calls it.

Everything here before :func:`_walls_up` returns is the harness's own code running in a fresh
process; from then on the process belongs to the method and nothing it does reaches the harness
except the answers it sends (:mod:`.protocol`). The checks made here — that the method changed
neither the architecture nor the model in place — are courtesies for an honest method's author
(clear messages); the harness never relies on them, as it never uses this process's model.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from ..suites.registry import SUITES
from .calling import answer_call, case_context
from .contain import Containment
from .context import PruneContext
from .discovery import describe, load_method
from .protocol import Answer, Call, Discover, Ready, Setup, decode, receive, send
from .serve import PR_SET_PDEATHSIG, prctl
from .walls import Walls, limit_memory

# Base models the fork server built once per subject (key: the base weights' identity); children inherit them.
PREPARED: dict[str, nn.Module] = {}
# Where tools write their caches and scratch files: all pointed into the child's private folder.
SCRATCH_VARIABLES = ("TMPDIR", "TMP", "TEMP", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "MPLCONFIGDIR")


def main(to_read: int, to_write: int, log: int, folder: Path, walls: Walls, contain: Containment) -> NoReturn:
    """The child's whole life: walls up, then one discovery or one case's calls. Never returns."""
    status = 0
    try:
        _walls_up(log, walls, folder, contain)
        first = receive(to_read)
        address_space = contain.address_space(cuda=isinstance(first, Setup) and first.device != "cpu")
        if address_space is not None:
            limit_memory(address_space)
        if isinstance(first, Discover):
            send(to_write, describe(first.target))
        elif isinstance(first, Setup):
            _serve_case(first, to_read, to_write)
        else:
            raise TypeError(f"a child starts with Discover or Setup, not {type(first).__name__}")
    except BaseException:  # noqa: BLE001  (the child must end here, whatever happened)
        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(status)


def _walls_up(log: int, walls: Walls, folder: Path, contain: Containment) -> None:
    """Become a disposable, walled process: own process group, output to the case's log, scratch files in
    the private folder, then the walls (irreversible). It inherits no descriptor of the harness: the fork
    server closed them all before it forked anything."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    prctl(PR_SET_PDEATHSIG, 9)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    for name in SCRATCH_VARIABLES:
        os.environ[name] = str(folder)
    tempfile.tempdir = str(folder)
    os.chdir(folder)
    contain.enter_child()
    walls.apply(folder)


def prepare(key: str, suite: str, path: Path) -> str | None:
    """In the fork server: build ``suite``'s model with the base weights the harness wrote to ``path``
    (its own file, in the protocol's plain encoding), for every later child to inherit."""
    try:
        state = decode(path.read_bytes())
        model = SUITES.get(suite).build_model()
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001  (reported to the harness, which fails the suite's cases)
        return f"{type(exc).__name__}: {exc}"
    PREPARED[key] = model
    return None


def model_for(setup: Setup) -> nn.Module:
    """The case's model: the server's prepared one (this process's own copy since the fork), or built here."""
    model = PREPARED.get(setup.base) if setup.state is None else None
    if model is None:
        if setup.state is None:
            raise LookupError(f"no prepared model for the base weights {setup.base[:12]} and no state sent")
        model = SUITES.get(setup.suite).build_model()
        model.load_state_dict(setup.state)
    return model.to(setup.device)


def _serve_case(setup: Setup, to_read: int, to_write: int) -> None:
    """Answer each call of the case's method until the harness closes the pipe."""
    torch.set_num_threads(setup.threads)
    method = load_method(setup.method)
    send(to_write, Ready())  # the import is over: it has a deadline of its own
    model = model_for(setup)
    torch.manual_seed(setup.seed)  # a method's global RNG starts from the case's seed, right before its first call
    ctx: PruneContext | None = None
    while True:
        try:
            call: Call = receive(to_read)
        except EOFError:
            return
        if ctx is None:
            ctx = case_context(setup, model, call.compression, method.steps)
        else:
            with torch.no_grad():
                model.load_state_dict(call.state)
            ctx.advance(call.compression)
        answer = answer_call(method, ctx)
        try:
            send(to_write, answer)
        except TypeError as exc:  # what the method returned is not plain data: say so instead
            send(to_write, Answer(error=f"method {method.name!r} returned something that is not masks: {exc}"))
