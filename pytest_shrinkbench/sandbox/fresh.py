"""A fork server in a fresh interpreter: what replaces a server that died, never a fork of the harness.

The first server is forked from the pytest process in ``pytest_configure``, before any subject,
held-out data or key exists there. Once the session runs, the harness holds all three: forking a
replacement from it would hand every later child the harness's memory (a method that crashed the
server would find the key in its next case's memory). So a dead server is replaced by a new
interpreter (``python -m pytest_shrinkbench.sandbox.fresh``, started with ``posix_spawn``: nothing
of the harness's memory is copied) that imports only what a server needs: torch, the package's
sandbox and suites, the ``conftest.py`` files pytest had imported when the first server was forked
(a project's suites and conftest methods register there) and installed suites. No subject, data,
key or row is ever loaded there; base models are prepared again from the harness's files, as for
the first server. Replacing rather than failing the session's remaining cases keeps the rule that a
method can fail its own case only, even where it can kill the server (no Landlock signal scope).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

SOCKET_FD = 3  # where the spawned server finds its end of the control socket


def conftests() -> list[tuple[str, str]]:
    """The conftest modules this process imported (name, file), in import order: a fresh server imports them too."""
    return [(name, str(module.__file__)) for name, module in list(sys.modules.items())
            if Path(str(getattr(module, "__file__", "") or "")).name == "conftest.py"]


def spawn(sock: socket.socket, spec: dict[str, Any]) -> int:
    """Start a fresh server on ``sock`` (its end of the control socket) with ``spec`` (hidden paths, walls,
    caps, sys.path, conftest modules); its pid. The socket becomes its descriptor 3."""
    actions = [(os.POSIX_SPAWN_DUP2, sock.fileno(), SOCKET_FD)]
    argv = [sys.executable, "-m", __name__, json.dumps(spec)]
    return os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions)


def _import_conftest(name: str, file: str) -> None:
    """Import a conftest the way pytest found it: by its module name on the harness's sys.path, else by path."""
    try:
        module = importlib.import_module(name)
        if Path(str(module.__file__)).resolve() == Path(file).resolve():
            return
    except Exception:  # noqa: BLE001  (by path below)
        pass
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def main(argv: list[str]) -> None:
    """The fresh server's whole life: load what the first server had, then serve until the harness closes the socket."""
    spec = json.loads(argv[0])
    sys.path[:] = spec["path"]
    from ..suites import user as user_suites
    from . import child
    from .contain import Caps
    from .runner import _warm_up
    from .serve import serve

    user_suites.discover()
    for name, file in spec["conftests"]:
        try:
            _import_conftest(name, file)
        except Exception:  # noqa: BLE001  (a conftest that only imports under pytest: its suites' cases fail in children)
            pass
    sock = socket.socket(fileno=SOCKET_FD)
    serve(sock, child.main, child.prepare, [Path(h) for h in spec["hidden"]], spec["landlock"], Caps(**spec["caps"]), spec["cuda"],
          _warm_up)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    finally:
        os._exit(0)
