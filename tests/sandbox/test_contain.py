"""What holds a case's processes: the no-socket filter, the scrubbed environment, the stray sweep without a PID
namespace, a case's cgroup, and the walls a row records. Each runs in a forked process of its own, as the
fork server does, so that nothing here changes the test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from pytest_shrinkbench.results.schema import walls_cover
from pytest_shrinkbench.sandbox import environment
from pytest_shrinkbench.sandbox.cgroups import PIDS, CaseCgroup, find_bases
from pytest_shrinkbench.sandbox.contain import Caps, remove_stale
from pytest_shrinkbench.sandbox.seccomp import NoSockets
from pytest_shrinkbench.sandbox.serve import PR_SET_CHILD_SUBREAPER, STRAY_SWEEP_SECONDS, _kill_strays, prctl

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux walls")


def in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked process; its return value is the exit code (an exception: 99)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@linux_only
def test_behind_the_no_socket_filter_no_family_opens_a_socket_but_a_socketpair_still_works() -> None:
    nosockets = NoSockets.prepare()
    if nosockets is None:
        pytest.skip("no seccomp filter for this machine")

    def body() -> int:
        nosockets.install()
        refused = 0
        for family, kind in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET, socket.SOCK_STREAM),
                             (socket.AF_INET6, socket.SOCK_DGRAM), (socket.AF_UNIX, socket.SOCK_STREAM)):
            try:
                socket.socket(family, kind).close()
            except PermissionError:
                refused += 1
        left, right = socket.socketpair()
        left.sendall(b"x")
        return 0 if refused == 4 and right.recv(1) == b"x" else 1

    assert in_child(body) == 0


def test_the_scrubbed_environment_keeps_what_torch_needs_and_leaves_no_trace_of_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subprocess started with a secret in its environment scrubs itself: neither os.environ, nor its original
    environment block (/proc/self/environ), nor a subprocess of its own shows the secret."""
    script = ("import os, subprocess; from pytest_shrinkbench.sandbox import environment; environment.scrub(); "
              "block = open('/proc/self/environ', 'rb').read() if os.path.exists('/proc/self/environ') else b''; "
              "env = subprocess.run(['env'], capture_output=True, text=True).stdout; "
              "print('SECRET' in os.environ, b'hunter2hunter2' in block, 'hunter2hunter2' in env, os.environ.get('PATH') is not None, "
              "os.environ.get('CUDA_VISIBLE_DEVICES'))")
    env = {**os.environ, "SECRET": "hunter2hunter2", "CUDA_VISIBLE_DEVICES": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "True", "1"]
    assert environment.allowed("OMP_NUM_THREADS") and not environment.allowed("GITHUB_TOKEN")


# Builds a chain of 150 processes, each in a session of its own, then says so on descriptor READY (a small
# interpreter: forking it is quick, unlike forking a process that imported torch).
CHAIN = """
import os, sys, time
for _ in range(150):
    os.setsid()
    if os.fork() != 0:
        time.sleep(600)
        os._exit(0)
os.write(int(sys.argv[1]), b"+")
time.sleep(600)
"""


@linux_only
def test_without_a_pid_namespace_the_sweep_kills_a_chain_of_150_processes_each_in_its_own_session() -> None:
    """The fallback: as subreaper, the server kills every level of what a child left behind in one pass."""
    ready_r, ready_w = os.pipe()

    def body() -> int:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        subprocess.Popen([sys.executable, "-S", "-c", CHAIN, str(ready_w)], pass_fds=[ready_w])
        os.read(ready_r, 1)  # the whole chain exists
        chain = _descendants(os.getpid())
        started = time.monotonic()
        _kill_strays(set())
        swept = time.monotonic() - started
        alive = [pid for pid in chain if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]
        return 0 if len(chain) > 150 and not alive and swept < STRAY_SWEEP_SECONDS else 1

    assert in_child(body) == 0


def _descendants(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        try:
            children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except OSError:
            children = []
        found += children
        todo += children
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "Z"


@linux_only
def test_a_case_cgroup_caps_the_processes_of_a_case_and_says_so() -> None:
    bases = [b for b in find_bases() if PIDS in b.controllers]
    if not bases:
        pytest.skip("this process may not make cgroups with a pids controller here")
    cgroup = CaseCgroup(bases, f"shrinkbench-test-{os.getpid()}", None, 16)
    try:
        gate_r, gate_w = os.pipe()

        def body() -> int:
            os.read(gate_r, 1)  # wait until it is in the cgroup
            forked = 0
            for _ in range(64):
                try:
                    if os.fork() == 0:
                        time.sleep(600)
                        os._exit(0)
                    forked += 1
                except BlockingIOError:
                    break
            return 0 if forked < 16 else 1

        pid = os.fork()
        if pid == 0:
            os._exit(body())
        cgroup.adopt(pid)
        os.write(gate_w, b"+")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the cap let it fork 16 processes or more"
        assert cgroup.breached() == [PIDS]
        assert Caps(processes=16).describe(PIDS) == "its process cap (16 processes and threads, --shrink-max-processes)"
    finally:
        for base, folder in cgroup.folders:  # the forked children left behind: kill them, then remove the folders
            for line in (folder / "cgroup.procs").read_text().split():
                os.kill(int(line), signal.SIGKILL)
        time.sleep(0.1)
        cgroup.remove()


def test_a_row_covers_a_session_when_it_has_every_wall_and_a_landlock_abi_at_least_as_high() -> None:
    session = "environment landlock:6 pid-namespace"
    assert walls_cover("environment landlock:7 memory-cap pid-namespace", session)
    assert walls_cover(session, session)
    assert not walls_cover("environment landlock:3 pid-namespace", session)  # TCP and signals were open
    assert not walls_cover("environment landlock:7", session)  # no PID namespace
    assert not walls_cover(None, session)  # an older row: its walls are unknown
    assert walls_cover(None, "") and walls_cover("", "")  # the debugging mode has none to cover


def test_case_cgroups_a_dead_server_left_behind_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    """A server killed with its harness cannot clean up; the next one removes what it left (empty folders)."""
    dead = tmp_path / "shrinkbench-999999999-shrinkbench-child-x"
    live = tmp_path / f"shrinkbench-{os.getpid()}-shrinkbench-child-y"
    dead.mkdir()
    live.mkdir()
    remove_stale(tmp_path)
    assert not dead.exists() and live.exists()
