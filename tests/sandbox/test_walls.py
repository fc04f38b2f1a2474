"""User stories of the walls around a method's child process.

Each walled scenario runs in a child forked here: it applies the walls (irreversible, so never in the
pytest process), tries something a hostile or careless method might, reports what happened through a
pipe, and leaves with ``os._exit``. The parent checks the report and the file system afterwards.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_shrinkbench.sandbox import walls as walls_module
from pytest_shrinkbench.sandbox.walls import (
    LEVEL_LANDLOCK,
    LEVEL_PROCESS,
    Walls,
    landlock_abi,
)

ABI = landlock_abi()
REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


def needs_abi(abi: int, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(ABI < abi, reason=f"{what} needs Landlock ABI >= {abi}; this kernel has {ABI}")


pytestmark = needs_abi(1, "walling the file system")


def forked(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a forked child and return what it returned (a crash fails the test with the
    child's traceback). The child never returns into pytest, and runs torch on one thread: the OpenMP
    pool of a process that forked after using it deadlocks (the harness pins one thread per case anyway)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        torch.set_num_threads(1)
        try:
            report = ("ok", body())
        except BaseException:  # noqa: BLE001  (whatever happens, report it: never unwind into pytest)
            report = ("crashed", traceback.format_exc())
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(report, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    status, payload = pickle.loads(data)
    assert status == "ok", payload
    return payload


def walled(walls: Walls, writable: Path, attempt: Callable[[], Any], max_memory_bytes: int | None = None) -> Any:
    """Apply ``walls`` in a forked child, then run ``attempt`` there: the level reached and its result."""
    return forked(lambda: {"level": walls.apply(writable, max_memory_bytes), "result": attempt()})


def outcomes(**attempts: Callable[[], Any]) -> Callable[[], dict[str, str]]:
    """Several attempts in one child: each gives "ok" or the name of the exception it raised."""

    def run() -> dict[str, str]:
        results = {}
        for name, attempt in attempts.items():
            try:
                attempt()
                results[name] = "ok"
            except Exception as error:  # noqa: BLE001  (the exception is the outcome)
                results[name] = type(error).__name__
        return results

    return run


def shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results store with its signing key, and the folder where each case gets its private temp dir."""
    root = tmp_path_factory.mktemp("site")
    for folder in ("secrets", "store", "cases/other-case"):
        (root / folder).mkdir(parents=True)
    (root / "secrets/signing.key").write_text("the key")
    (root / "secrets/README").write_text("not secret")
    (root / "store/results.jsonl").write_text('{"row": 1}\n')
    return root


@pytest.fixture(scope="module")
def walls(site: Path) -> Iterator[Walls]:
    """Prepared once, as the fork server does; every child inherits the descriptors."""
    prepared = Walls.prepare(hidden=[site / "secrets/signing.key"])
    assert prepared.level == LEVEL_LANDLOCK and prepared.abi == ABI and prepared.rules > 0
    yield prepared
    prepared.close()


@pytest.fixture
def writable(site: Path) -> Path:
    """The case's private temp dir, created by the caller after the walls were prepared."""
    return Path(tempfile.mkdtemp(dir=site / "cases"))


def test_a_method_writes_its_own_folder_and_nowhere_else(walls: Walls, site: Path, writable: Path) -> None:
    probe = REPO / "methods" / f"_walls_probe_{os.getpid()}.py"
    try:
        report = walled(walls, writable, outcomes(
            own_folder=lambda: (writable / "scratch.pt").write_bytes(b"x"),
            own_subfolder=lambda: (writable / "sub").mkdir() or (writable / "sub/f").write_text("x"),
            dev_null=lambda: Path("/dev/null").write_text("discarded"),  # as logging and CUDA do
            dev_urandom=lambda: os.read(os.open("/dev/urandom", os.O_RDWR), 8),
            other_case=lambda: (site / "cases/other-case/f").write_text("x"),
            beside_own_folder=lambda: (site / "cases/f").write_text("x"),
            key_folder=lambda: (site / "secrets/new.key").write_text("x"),
            results_store=lambda: (site / "store/results.jsonl").open("a").write("forged\n"),
            truncate_store=lambda: os.truncate(site / "store/results.jsonl", 0),
            remove_store=lambda: (site / "store/results.jsonl").unlink(),
            methods_folder=lambda: probe.write_text("x"),
        ))
    finally:
        probe.unlink(missing_ok=True)
    assert report["level"] == LEVEL_LANDLOCK
    results = report["result"]
    assert [results.pop(k) for k in ("own_folder", "own_subfolder", "dev_null", "dev_urandom")] == ["ok"] * 4
    assert results == dict.fromkeys(results, "PermissionError")
    assert (writable / "sub/f").read_text() == "x"
    assert (site / "store/results.jsonl").read_text() == '{"row": 1}\n'
    assert not any(p.exists() for p in (site / "cases/other-case/f", site / "cases/f", site / "secrets/new.key"))


def test_the_signing_key_is_hidden_and_the_rest_readable(walls: Walls, site: Path, writable: Path) -> None:
    results = walled(walls, writable, outcomes(
        key=lambda: (site / "secrets/signing.key").read_text(),
        key_via_own_proc_root=lambda: Path(f"/proc/self/root{site}/secrets/signing.key").read_text(),
        key_via_parent_proc_root=lambda: Path(f"/proc/{os.getppid()}/root{site}/secrets/signing.key").read_text(),
        key_neighbour=lambda: (site / "secrets/README").read_text(),
        key_folder_listing=lambda: os.listdir(site / "secrets"),
        torch_source=lambda: Path(torch.__file__).read_text(),
        etc=lambda: Path("/etc/passwd").read_text(),
        root_listing=lambda: os.listdir("/"),
        store=lambda: (site / "store/results.jsonl").read_text(),
    ))["result"]
    assert [results.pop(k) for k in ("key", "key_via_own_proc_root", "key_via_parent_proc_root")] == [
        "PermissionError"] * 3
    assert results == dict.fromkeys(results, "ok")  # listing the key's folder shows names, never contents
    assert (site / "secrets/signing.key").read_text() == "the key"  # hidden from the child only


@needs_abi(4, "TCP rules")
def test_no_tcp_connection_or_listening_port(walls: Walls, writable: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        results = walled(walls, writable, outcomes(
            connect=lambda: socket.create_connection(("127.0.0.1", port), timeout=5),
            bind=lambda: socket.create_server(("127.0.0.1", 0)),
        ))["result"]
    assert results == {"connect": "PermissionError", "bind": "PermissionError"}


def test_subprocesses_inherit_the_file_walls(walls: Walls, site: Path, writable: Path) -> None:
    report = walled(walls, writable, lambda: {
        "write_outside": shell(f"echo x > {site}/store/planted").returncode,
        "read_key": shell(f"cat {site}/secrets/signing.key").returncode,
        "write_inside": shell(f"echo x > {writable}/from-shell").returncode,
    })
    assert report["result"]["write_outside"] != 0 and report["result"]["read_key"] != 0
    assert report["result"]["write_inside"] == 0
    assert not (site / "store/planted").exists() and (writable / "from-shell").read_text() == "x\n"


@needs_abi(4, "TCP rules")
def test_subprocesses_inherit_the_network_walls(walls: Walls, writable: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        code = f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=5)"
        done = walled(walls, writable, lambda: subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False))["result"]
    assert done.returncode != 0 and "PermissionError" in done.stderr


@needs_abi(6, "signal and abstract-socket scopes")
def test_no_signal_or_abstract_socket_outside_the_child(walls: Walls, writable: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    name = f"\0shrinkbench-walls-test-{os.getpid()}"
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(name)
            listener.listen()
            results = walled(walls, writable, outcomes(
                probe_parent=lambda: os.kill(os.getppid(), 0),
                kill_bystander=lambda: os.kill(bystander.pid, signal.SIGKILL),
                abstract_socket=lambda: socket.socket(socket.AF_UNIX).connect(name),
                kill_own_child=lambda: subprocess.Popen(["sleep", "30"]).kill(),
            ))["result"]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert results == {"probe_parent": "PermissionError", "kill_bystander": "PermissionError",
                       "abstract_socket": "PermissionError", "kill_own_child": "ok"}


def test_the_memory_cap_holds(walls: Walls, writable: Path) -> None:
    vm_size_kib = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0])
    cap = max(4 * GIB, vm_size_kib * 1024 + GIB)  # 4 GiB unless torch and pytest already map more

    def attempt() -> dict[str, Any]:
        results = outcomes(
            raise_back=lambda: resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2),
            huge_tensor=lambda: torch.empty(2**33, dtype=torch.uint8),
            small_tensor=lambda: torch.ones(1024, 1024).sum(),
        )()
        return {**results, "limit": resource.getrlimit(resource.RLIMIT_AS)}

    report = walled(walls, writable, attempt, max_memory_bytes=cap)["result"]
    assert report == {"raise_back": "ValueError", "huge_tensor": "RuntimeError", "small_tensor": "ok",
                      "limit": (cap, cap)}


def test_the_child_holds_no_privileges_even_as_root(walls: Walls, writable: Path) -> None:
    """Capabilities would undo the walls: CAP_SYS_RESOURCE lifts the memory cap, CAP_NET_RAW sends
    packets around the TCP rules. No new privileges: a subprocess does not get them back as uid 0."""
    def status(text: str) -> dict[str, str]:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())
                if k in ("CapEff", "CapPrm", "NoNewPrivs")}

    report = walled(walls, writable, lambda: {
        "own": status(Path("/proc/self/status").read_text()),
        "subprocess": status(shell("cat /proc/self/status").stdout),
        "raw_socket": outcomes(raw=lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))(),
    })["result"]
    nothing = {"CapEff": "0" * 16, "CapPrm": "0" * 16, "NoNewPrivs": "1"}
    assert report == {"own": nothing, "subprocess": nothing, "raw_socket": {"raw": "PermissionError"}}


def test_without_landlock_only_the_process_walls_stand(site: Path, writable: Path) -> None:
    weak = Walls.prepare(hidden=[site / "secrets/signing.key"], landlock=False)
    assert (weak.level, weak.abi, weak.rules) == (LEVEL_PROCESS, 0, 0)
    report = walled(weak, writable, lambda: (
        (site / "cases/other-case/unwalled").write_text("x"), resource.getrlimit(resource.RLIMIT_AS)),
        max_memory_bytes=64 * GIB)
    assert report["level"] == LEVEL_PROCESS and report["result"][1] == (64 * GIB, 64 * GIB)
    assert (site / "cases/other-case/unwalled").read_text() == "x"  # the weaker level: writes are not walled


def test_a_key_created_after_prepare_stays_hidden(tmp_path: Path, writable: Path) -> None:
    (tmp_path / "notes.txt").write_text("readable")
    late = Walls.prepare(hidden=[tmp_path / "later/signing.key"])
    (tmp_path / "later").mkdir()
    (tmp_path / "later/signing.key").write_text("the key")
    results = walled(late, writable, outcomes(
        key=lambda: (tmp_path / "later/signing.key").read_text(),
        notes=lambda: (tmp_path / "notes.txt").read_text(),
    ))["result"]
    late.close()
    assert results == {"key": "PermissionError", "notes": "ok"}


def test_symlinks_and_several_hidden_paths_do_not_leak(tmp_path: Path, writable: Path) -> None:
    for folder in ("secret", "keys"):
        (tmp_path / folder).mkdir()
    (tmp_path / "secret/signing.key").write_text("one")
    (tmp_path / "keys/other.key").write_text("two")
    (tmp_path / "keys/public.pem").write_text("public")
    (tmp_path / "plain.txt").write_text("plain")
    (tmp_path / "up").symlink_to(tmp_path)  # an ancestor of the keys
    (tmp_path / "to-secret").symlink_to(tmp_path / "secret")
    (tmp_path / "to-key").symlink_to(tmp_path / "secret/signing.key")
    several = Walls.prepare(hidden=[tmp_path / "to-secret/signing.key", tmp_path / "keys/other.key"])
    results = walled(several, writable, outcomes(
        via_ancestor_link=lambda: (tmp_path / "up/secret/signing.key").read_text(),
        via_folder_link=lambda: (tmp_path / "to-secret/signing.key").read_text(),
        via_file_link=lambda: (tmp_path / "to-key").read_text(),
        second_key=lambda: (tmp_path / "keys/other.key").read_text(),
        second_key_neighbour=lambda: (tmp_path / "keys/public.pem").read_text(),
        plain=lambda: (tmp_path / "plain.txt").read_text(),
        plain_via_ancestor_link=lambda: (tmp_path / "up/plain.txt").read_text(),
    ))["result"]
    several.close()
    assert results == {"via_ancestor_link": "PermissionError", "via_folder_link": "PermissionError",
                       "via_file_link": "PermissionError", "second_key": "PermissionError",
                       "second_key_neighbour": "ok", "plain": "ok", "plain_via_ancestor_link": "ok"}


def test_the_walled_child_still_runs_torch_and_has_a_temp_dir(walls: Walls, writable: Path) -> None:
    def attempt() -> dict[str, Any]:
        with tempfile.NamedTemporaryFile() as scratch:
            return {
                "matmul": (torch.ones(64, 64) @ torch.ones(64, 64)).sum().item(),
                "temp_file": scratch.name,
                # torch's import needs a usable temp dir: a fresh interpreter must find one too
                "subprocess_temp_dir": subprocess.run(
                    [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                    capture_output=True, text=True, timeout=30, check=True).stdout.strip(),
            }

    tempfile.gettempdir()  # the pytest process settles on /tmp, as a fork server would
    report = walled(walls, writable, attempt)["result"]
    assert report["matmul"] == 64.0**3
    assert Path(report["temp_file"]).parent == writable and report["subprocess_temp_dir"] == str(writable)


def test_the_walled_child_keeps_no_handles_from_the_server(walls: Walls, writable: Path) -> None:
    def attempt() -> int:
        before = set(os.listdir("/proc/self/fd"))
        walls.apply(writable)
        return len(before - set(os.listdir("/proc/self/fd")))

    assert forked(attempt) == walls.rules


def test_a_child_that_cannot_be_walled_refuses_to_run(walls: Walls, site: Path) -> None:
    def attempt() -> str:
        try:
            walls.apply(site / "cases/missing")
        except OSError as error:
            return str(error)
        return "walled, and the method would have run"

    assert "missing" in forked(attempt)


@pytest.mark.parametrize("abi", range(1, 7))
def test_an_older_kernel_gets_the_walls_its_abi_knows(
    abi: int, site: Path, writable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated on this kernel: a ruleset naming only an older ABI's rights still walls writes and the
    key; truncation by path is open below ABI 3, TCP below 4, signals below 6 (the documented limits)."""
    victim = site / "store" / f"truncatable-{abi}"
    victim.write_text("row")
    monkeypatch.setattr(walls_module, "landlock_abi", lambda: abi)
    older = Walls.prepare(hidden=[site / "secrets/signing.key"])
    with socket.create_server(("127.0.0.1", 0)) as server:
        results = walled(older, writable, outcomes(
            write=lambda: (site / "store/results.jsonl").open("a").write("forged\n"),
            key=lambda: (site / "secrets/signing.key").read_text(),
            truncate=lambda: os.truncate(victim, 0),
            connect=lambda: socket.create_connection(server.getsockname(), timeout=5).close(),
            signal=lambda: os.kill(os.getppid(), 0),
        ))["result"]
    older.close()
    walled_from = {"truncate": 3, "connect": 4, "signal": 6}
    assert results == {"write": "PermissionError", "key": "PermissionError",
                       **{k: "PermissionError" if abi >= v else "ok" for k, v in walled_from.items()}}


def test_hiding_the_root_is_refused() -> None:
    with pytest.raises(ValueError, match="hiding /"):
        Walls.prepare(hidden=[Path("/tmp/..")])
