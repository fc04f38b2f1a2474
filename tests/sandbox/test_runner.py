"""The harness's side of the boundary: discovery in a child, a fresh child per case, how a child ended."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

from pytest_shrinkbench.errors import CaseFailure
from pytest_shrinkbench.sandbox.hugepages import COLLAPSE_EVERY
from pytest_shrinkbench.sandbox.protocol import Setup
from pytest_shrinkbench.sandbox.runner import Sandbox
from pytest_shrinkbench.suites.subject import load_subject
from tests.helpers import MEMORY_SEARCH as SEARCH
from tests.helpers import needle

METHODS = '''
import subprocess, sys
from pytest_shrinkbench import method


@method("honest")
def honest(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("leaves-a-daemon")
def leaves_a_daemon(ctx):
    """Starts a process in a new session that would outlive it, and says its pid (as /proc names it) through an error."""
    child = subprocess.Popen([sys.executable, "-c", "import os, time; print(os.readlink('/proc/self'), flush=True); "
                              "time.sleep(300)"], start_new_session=True, stdout=subprocess.PIPE)
    raise RuntimeError(f"daemon {int(child.stdout.readline())}")
'''


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("methods")
    (folder / "planted.py").write_text(METHODS)
    box = Sandbox("landlock")
    box.start()
    box.discover([folder])
    yield box
    box.close()


def setup(box: Sandbox, name: str, shrink_cache: Path) -> Setup:
    subject = load_subject("digits-mlp", cache_dir=shrink_cache)
    inputs, targets = subject.batch(0)
    return Setup(box.method(name), "digits-mlp", subject.sha256, 0, "cpu", 1, inputs, targets, subject.state)


def test_discovery_imports_method_files_in_a_child_never_here(sandbox: Sandbox) -> None:
    info = sandbox.method("honest")
    assert info.origin.startswith("file:") and info.origin.endswith("planted.py")
    assert not any(name.startswith("shrinkbench_methods") for name in sys.modules), "a method file was imported here"
    assert "global-magnitude" in sandbox.methods and sandbox.method("global-magnitude").baseline


def test_each_case_gets_a_fresh_child_and_nothing_it_started_survives(sandbox: Sandbox, shrink_cache: Path) -> None:
    calls = sandbox.open(setup(sandbox, "leaves-a-daemon", shrink_cache))
    answer = calls.call(4.0, 0, None)
    calls.close()
    daemon = int(answer.error.rsplit(" ", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{daemon}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{daemon}").exists(), "a process the method started outlived its case"


def test_a_child_that_dies_is_described_with_how_it_ended(sandbox: Sandbox, shrink_cache: Path) -> None:
    calls = sandbox.open(setup(sandbox, "global-magnitude", shrink_cache))
    calls.call(4.0, 0, None)  # the child is alive and has answered once
    os.kill(calls._child.pid, 9)
    with pytest.raises(CaseFailure, match="process ended before it answered: it was killed by SIGKILL"):
        calls.call(4.0, 0, None)
    calls.close()


def test_a_process_with_an_openmp_pool_may_not_start_multi_threaded_children(shrink_cache: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(1000, 1000) @ torch.randn(1000, 1000)  # starts the pool
        box = Sandbox("process")
        box.start()
        box.discover([])
        late = setup(box, "global-magnitude", shrink_cache)
        late.threads = 2
        with pytest.raises(RuntimeError, match="ran multi-threaded torch before its sandbox's fork server started"):
            box.open(late)
        box.close()
    finally:
        torch.set_num_threads(threads)


def test_the_public_apis_sandbox_knows_a_method_registered_after_it_started(shrink_cache: Path) -> None:
    """A notebook user runs a case, then defines a second method and runs it: the second is found too."""
    from pytest_shrinkbench import CaseSpec, method, run_case
    from pytest_shrinkbench.sandbox.methods import METHODS
    from pytest_shrinkbench.sandbox.runner import default_sandbox

    subject = load_subject("digits-mlp", cache_dir=shrink_cache)
    first = default_sandbox()

    def late(ctx):
        return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})

    method("registered-late")(late)
    try:
        row = run_case(CaseSpec("registered-late", "digits-mlp", 2.0, 0), subject)
        assert default_sandbox() is not first and row["compression"] == pytest.approx(2.0, rel=0.005)
    finally:
        METHODS.retain(lambda m: m.fn is not late)


def test_a_server_that_collapsed_its_memory_into_huge_pages_still_gives_every_child_the_same_model(
        sandbox: Sandbox, shrink_cache: Path) -> None:
    """Past COLLAPSE_EVERY children the server's memory is moved into huge pages: the children forked after
    that see the same prepared model and answer exactly as the first did."""
    case = setup(sandbox, "global-magnitude", shrink_cache)
    answers = []
    for _ in range(COLLAPSE_EVERY + 2):
        calls = sandbox.open(case)
        answers.append(calls.call(8.0, 0, None).masks)
        calls.close()
    assert all(set(a) == set(answers[0]) and all(torch.equal(a[n], answers[0][n]) for n in a) for a in answers)


SEARCHES = SEARCH + '''
from pytest_shrinkbench import method

@method("searches-memory")
def searches_memory(ctx):
    if holds_the_secret():
        raise RuntimeError("found the harness's secret in its own memory")
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})


@method("leaves-a-deep-folder")
def leaves_a_deep_folder(ctx):
    """A folder 1,500 levels deep (shutil.rmtree raised RecursionError in the server and ended it)."""
    folder = os.getcwd()
    for _ in range(1500):
        os.mkdir("d")
        os.chdir("d")
    os.chdir(folder)
    raise RuntimeError(f"folder {folder}")
'''


def test_a_dead_server_is_replaced_by_a_fresh_interpreter_holding_nothing_of_the_harness(
        tmp_path: Path, shrink_cache: Path) -> None:
    """The finding: the harness forked a new server from itself, and a later case found the key in its memory."""
    import signal

    secret = os.urandom(32)
    held = [secret, secret.hex()]  # as the harness holds its key: the bytes, and the text read from its file
    (tmp_path / "needle.json").write_text(needle(secret))
    (tmp_path / "searches.py").write_text(SEARCHES)
    box = Sandbox("landlock")
    box.start()
    box.discover([tmp_path])
    case = setup(box, "searches-memory", shrink_cache)
    pid = os.fork()  # the control: a plain fork of this process finds it
    if pid == 0:
        namespace: dict = {"__file__": str(tmp_path / "searches.py")}
        exec(SEARCH, namespace)
        os._exit(0 if namespace["holds_the_secret"]() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the search must find what this process holds"
    first = box._server.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while box._server.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    calls = box.open(case)
    answer = calls.call(4.0, 0, None)
    calls.close()
    assert answer.error is None and set(answer.masks) == set(case.state) - {n for n in case.state if "bias" in n}
    assert box._server.pid != first and box._server.restarts == 1
    box.close()
    assert held  # kept alive (and in this process's memory) until here


def test_a_folder_too_deep_for_rmtree_is_removed_and_the_server_lives_on(shrink_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "searches.py").write_text(SEARCHES)
    box = Sandbox("landlock")
    box.start()
    box.discover([tmp_path])
    server = box._server.pid
    calls = box.open(setup(box, "leaves-a-deep-folder", shrink_cache))
    folder = Path(calls.call(4.0, 0, None).error.rsplit(" ", 1)[1])
    calls.close()
    deadline = time.monotonic() + 20
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists() and box._server.alive and box._server.pid == server
    calls = box.open(setup(box, "global-magnitude", shrink_cache))
    assert calls.call(4.0, 0, None).error is None
    calls.close()
    box.close()


SLOW_IMPORT = '''
import os, time
from pytest_shrinkbench import method

while os.path.exists(os.path.join(os.path.dirname(__file__), "hang-now")):
    time.sleep(0.05)

@method("slow-import")
def slow_import(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''


def test_a_cases_child_has_the_same_import_deadline_as_discovery(tmp_path: Path, shrink_cache: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_IMPORT)
    box = Sandbox("landlock", import_timeout=2)
    box.start()
    box.discover([tmp_path])
    (tmp_path / "hang-now").touch()  # from now on, its import never ends
    calls = box.open(setup(box, "slow-import", shrink_cache))
    with pytest.raises(CaseFailure, match=r"process did not import the method's module within 2 s \(--shrink-import-timeout\)"):
        calls.call(4.0, 0, None)
    calls.close()
    box.close()
