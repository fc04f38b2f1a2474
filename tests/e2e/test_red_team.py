"""The red team: planted cheats (tests/e2e/redteam_methods.py) each fail their own case or are neutralised,
and every honest case of the same session is bit-identical to a clean session's."""

from __future__ import annotations

import ast
import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from pytest_shrinkbench.results.signing import key_path, load_key, sign
from pytest_shrinkbench.sandbox.cgroups import MEMORY, PIDS, find_bases
from tests.helpers import rows_by_method, run_files

CHEATS = (Path(__file__).parent / "redteam_methods.py").read_text()
HONEST = ["global-magnitude", "layer-magnitude"]
# Where the machine gives cgroups (root, or a delegated folder), caps hold over all of a case's processes; the
# red team's caps are small enough to hit and large enough for an honest case.
CGROUP = set().union(*(b.controllers for b in find_bases())) if find_bases() else set()
MEMORY_GIB = 2 if MEMORY in CGROUP else 8
CASE = ["--shrink-suite=digits-mlp", "--shrink-ratios=4", "--shrink-seeds=0", f"--shrink-max-memory={MEMORY_GIB}",
        "--shrink-max-processes=256", "--shrink-max-disk=0.05"]
METRICS = ("top1", "top5", "top1_pre", "top5_pre", "params_nonzero", "compression", "flops_sparse", "speedup")
# Cheats that fail their own case, and the reason each must give.
FAILS = {
    "cheat-subclass-masks": "mask of 'fc1.weight' is a Lying, not a plain torch.Tensor",
    "cheat-swapped-parameters": "method 'cheat-swapped-parameters' modified the model in place (fc1.weight)",
    "cheat-pipe-flood": "method 'cheat-pipe-flood''s process sent a malformed answer (a message of 1099511627776 bytes",
    "crash-exits": "method 'crash-exits''s process ended before it answered: it exited with code 3",
    "crash-segfault": "method 'crash-segfault''s process ended before it answered: it was killed by SIGSEGV",
    # Round 3 (part A): what the harness reads and trusts
    "leak-output-link": "method 'leak-output-link''s process ended before it answered: it exited with code 3; its last output: "
                        "\\x1b[2J\\x1b[Hshrinkbench leaderboard: every method but mine failed",
    "leak-output-flood": "method 'leak-output-flood''s process ended before it answered: it exited with code 3",
    "cheat-overlapping-records": "method 'cheat-overlapping-records''s process sent a malformed answer (tensor records "
                                 "overlap at byte 0)",
    "cheat-escape-codes": "\\x1b[2J\\x1b[H\\x1b[32mshrinkbench leaderboard: cheat-escape-codes ranks first\\x1b[0m\\r\\nAAAA",
    "cheat-import-hangs": "method file {methods}/import_hangs.py did not finish importing within 20 s (--shrink-import-timeout)",
    # Round 3 (part B): caps
    "cap-disk-many-files": "method 'cap-disk-many-files' ran into its disk cap (0.05 GiB in its folder, --shrink-max-disk)",
    "cap-disk-one-file": "method 'cap-disk-one-file' ran into its disk cap (0.05 GiB in its folder, --shrink-max-disk)",
    **({"cap-fork-bomb": "method 'cap-fork-bomb' ran into its"} if PIDS in CGROUP or os.geteuid() != 0 else {}),
    **({"cap-memory-over-processes": "method 'cap-memory-over-processes'"} if MEMORY in CGROUP else {}),
}
IMPORT_TIMEOUT = "--shrink-import-timeout=20"  # the hanging import's deadline (the default, 120 s, would slow the test)
NAMES = [line.split('"')[1] for line in CHEATS.splitlines() if line.startswith("@method(")]
# The catalogue's second file (finding 9), read from its text: importing the catalogue here would register its cheats.
IMPORT_HANGS = next(node.value.value for node in ast.parse(CHEATS).body
                    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "IMPORT_HANGS")


def metrics(row: dict) -> dict:
    return {k: row[k] for k in METRICS}


@pytest.fixture
def targets(project: pytest.Pytester, shrink_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A clean session of the honest methods, then what the cheats attack: its store (and a real case key in
    it), its results file, the cached base model, methods/, the signing key, and a listening TCP port.
    The cache is this test's own copy, so that nothing else writes the files it watches."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in shrink_cache.glob("digits-mlp-*"):
        (cache / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("SHRINKBENCH_CACHE", str(cache))
    project.mkdir("methods")
    clean = project.runpytest_subprocess(f"--shrink-method={','.join(HONEST)}", *CASE)
    clean.assert_outcomes(passed=len(HONEST))
    (run,) = run_files(project.path / "results")
    store = project.path / "results" / "store.sqlite"
    with sqlite3.connect(store) as db:
        (victim,) = db.execute("SELECT key FROM results WHERE method = 'global-magnitude'").fetchone()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "listening.sock"))
    unix.listen()
    unix.settimeout(0.5)
    hidden = tmp_path / "held-out" / "answers.txt"
    hidden.parent.mkdir()
    hidden.write_text("the held-out labels")
    project.path.joinpath("pytest.ini").write_text(f"[pytest]\nshrink_results = results\nshrink_hidden_paths = {hidden.parent}\n")
    found = {
        "store": str(store), "victim": victim, "results_file": str(project.path / "results" / run),
        "checkpoint": str(next(cache.glob("digits-mlp-*.pt"))), "methods": str(project.path / "methods"),
        "key": str(key_path(cache)), "port": listener.getsockname()[1], "udp_port": udp.getsockname()[1],
        "unix_socket": str(tmp_path / "listening.sock"), "hidden": str(hidden), "token": "ci-token-3f9a1c77e2",
        "memory_share": (MEMORY_GIB * 2**30 * 3 // 10) if MEMORY in CGROUP else 2**24,
    }
    monkeypatch.setenv("CI_JOB_TOKEN", found["token"])  # what a CI job holds, and no method may see
    project.path.joinpath("methods", "redteam.json").write_text(json.dumps(found))
    before = {name: Path(found[name]).read_bytes() for name in ("results_file", "checkpoint", "key")}
    yield found, rows_by_method(project.path / "results"), before, (listener, udp, unix)
    for sock in (listener, udp, unix):
        sock.close()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_every_cheat_fails_alone_or_is_neutralised(project: pytest.Pytester, targets, workers: list[str]) -> None:
    found, clean, before, (listener, udp, unix) = targets
    project.path.joinpath("methods", "cheats.py").write_text(CHEATS)
    project.path.joinpath("methods", "import_hangs.py").write_text(IMPORT_HANGS)
    result = project.runpytest_subprocess(f"--shrink-method={','.join(HONEST + NAMES)}", *CASE, "--shrink-rerun",
                                          "--shrink-require-sandbox=landlock", IMPORT_TIMEOUT, *workers)
    result.assert_outcomes(passed=len(HONEST) + len(NAMES) - len(FAILS), failed=len(FAILS))
    rows = {r["method"]: r for r in run_files(project.path / "results")[max(run_files(project.path / "results"))]}
    assert len(NAMES) >= 45 and rows.keys() == set(HONEST + NAMES)
    for name in HONEST:  # the honest cases did not notice the cheats, nor did discovery (no hijacked name or step count)
        assert metrics(rows[name]) == metrics(clean[name]), name
        assert (rows[name]["method_hash"], rows[name]["prune_steps"]) == (clean[name]["method_hash"], 1), name
    for name, reason in FAILS.items():
        reason = reason.format(methods=(project.path / "methods").resolve())
        assert rows[name]["status"] == "failed", name
        assert rows[name]["message"].startswith(f"[method={name} suite=digits-mlp ratio=x4 seed=0] {reason}"), rows[name]["message"]
    # no key, no terminal escape and no unbounded text reached a row or the terminal
    key = before["key"].decode().strip()
    assert all(key not in (row["message"] or "") and "\x1b" not in (row["message"] or "") for row in rows.values())
    assert key not in result.stdout.str() and "\x1b" not in result.stdout.str()
    assert len(rows["cheat-escape-codes"]["message"]) < 2200
    result.stdout.fnmatch_lines(["*method 'layer-magnitude' of method file *cheats.py: not run from that file: module "
                                 "pytest_shrinkbench.baselines.layer_magnitude defines it*"])
    for name in set(NAMES) - set(FAILS) - {"visible-new-weights"}:  # every other cheat bought nothing
        assert rows[name]["status"] == "passed", (name, rows[name]["message"])
        assert metrics(rows[name]) == metrics(clean["global-magnitude"]), name
        assert rows[name]["weights_changed"] == 0 and rows[name]["sandbox"] == "process+landlock", name
        assert rows[name]["walls"] == rows["global-magnitude"]["walls"], name
    visible = rows["visible-new-weights"]
    assert visible["status"] == "passed" and visible["weights_changed"] > 0
    result.stdout.fnmatch_lines(["*visible-new-weights*new weights*"])
    # nothing outside the children changed, and nobody connected
    for name, content in before.items():
        assert Path(found[name]).read_bytes() == content, f"{name} was changed"
    assert not (project.path / "methods" / "planted.py").exists() and not (project.path / "methods" / "sub.py").exists()
    with pytest.raises(socket.timeout):
        listener.accept()
    with pytest.raises(socket.timeout):
        udp.recvfrom(64)
    with pytest.raises(socket.timeout):
        unix.accept()
    assert not survivors(), "a process a method started outlived its case"
    with sqlite3.connect(found["store"]) as db:
        assert db.execute("SELECT COUNT(*) FROM results WHERE key = 'forged'").fetchone()[0] == 0
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the failed cases; the sandbox requirement held


def survivors() -> list[int]:
    """Processes the cheats left behind (they name themselves ``rt-survivor``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "rt-survivor":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


FORGER = '''
import json, os, sqlite3
from pytest_shrinkbench import method

@method("forger")
def forger(ctx):
    """Without walls it can write the store: it puts a perfect row under global magnitude's real case key."""
    targets = json.loads(open(os.path.join(os.path.dirname(__file__), "redteam.json")).read())
    db = sqlite3.connect(targets["store"])
    (row,) = db.execute("SELECT row FROM results WHERE key = ?", (targets["victim"],)).fetchone()
    forged = {**json.loads(row), "top1": 1.0, "mac": "0" * 64}
    db.execute("UPDATE results SET row = ? WHERE key = ?", (json.dumps(forged), targets["victim"]))
    db.commit()
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''


def test_without_landlock_rows_say_process_the_gate_refuses_them_and_forged_rows_are_not_reused(
    project: pytest.Pytester, targets,
) -> None:
    found, clean, _, _ = targets
    project.path.joinpath("methods", "forger.py").write_text(FORGER)
    result = project.runpytest_subprocess("--shrink-method=forger", *CASE, "--shrink-sandbox=process",
                                          "--shrink-require-sandbox=landlock")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--shrink-require-sandbox=landlock: 1 of 1 cases ran at process, below process+landlock*"])
    assert rows_by_method(project.path / "results")["forger"]["sandbox"] == "process"
    with sqlite3.connect(found["store"]) as db:  # the wall-less method did forge the row...
        (row,) = db.execute("SELECT row FROM results WHERE key = ?", (found["victim"],)).fetchone()
    assert json.loads(row)["top1"] == 1.0
    again = project.runpytest_subprocess("--shrink-method=global-magnitude", *CASE)
    again.assert_outcomes(passed=1)  # ...but it is not reused: its signature does not verify
    latest = run_files(project.path / "results")[max(run_files(project.path / "results"))]
    assert latest[0]["reused"] is False and metrics(latest[0]) == metrics(clean["global-magnitude"])


HANGS = '''
import signal, time
from pytest_shrinkbench import method

@method("hangs")
def hangs(ctx):
    while True:
        time.sleep(0.05)

@method("cancels-the-timer")
def cancels_the_timer(ctx):
    """Switches off every alarm it can reach, then hangs."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        pass
'''


def test_a_hanging_method_is_killed_at_the_time_limit_even_if_it_cancels_timers(project: pytest.Pytester) -> None:
    """A generous limit: a busy machine must not time out the honest case too."""
    project.mkdir("methods").joinpath("hangs.py").write_text(HANGS)
    result = project.runpytest_subprocess("--shrink-method=hangs,cancels-the-timer,global-magnitude", *CASE,
                                          "--shrink-timeout=15")
    result.assert_outcomes(passed=1, failed=2)
    rows = rows_by_method(project.path / "results")
    for name in ("hangs", "cancels-the-timer"):
        assert rows[name]["message"] == f"[method={name} suite=digits-mlp ratio=x4 seed=0] timed out after 15 s (--shrink-timeout)"
    assert rows["global-magnitude"]["status"] == "passed"


KILLER = '''
import os, signal, time
from pytest_shrinkbench import method

@method("aa-kills-the-server")
def kills_the_server(ctx):
    """Without Landlock's signal scope it can kill its fork server: the harness used to fork a new one from itself.
    It then dies with its server (its parent-death signal) before it answers."""
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)
'''


def test_without_landlock_a_method_that_kills_the_server_fails_alone_and_a_fresh_server_runs_the_rest(
    project: pytest.Pytester, targets,
) -> None:
    """Finding 2: the next cases run in a fresh interpreter's children, their numbers those of a clean session. Where
    each case is in a PID namespace of its own, the server is out of the method's sight and it fails alone all the same."""
    _, clean, _, _ = targets
    project.path.joinpath("methods", "killer.py").write_text(KILLER)
    result = project.runpytest_subprocess(f"--shrink-method=aa-kills-the-server,{','.join(HONEST)}", *CASE,
                                          "--shrink-sandbox=process", "--shrink-rerun")
    result.assert_outcomes(passed=len(HONEST), failed=1)
    rows = rows_by_method(project.path / "results")
    killer = rows["aa-kills-the-server"]
    if "pid-namespace" in (killer.get("walls") or ""):  # its server is outside its PID namespace: nothing to kill
        assert killer["message"].endswith("'aa-kills-the-server' returned NoneType; expected a dict of masks or (masks, new_weights)")
    else:
        assert killer["message"] == ("[method=aa-kills-the-server suite=digits-mlp ratio=x4 seed=0] method "
                                     "'aa-kills-the-server''s process ended before it answered: it ended "
                                     "with its fork server (which was killed or crashed)")
    for name in HONEST:
        assert rows[name]["status"] == "passed" and metrics(rows[name]) == metrics(clean[name]), name


# Round 3 (part B): rows record the walls in force, and reuse compares them

def test_a_row_made_behind_weaker_walls_is_measured_again_one_behind_the_same_walls_is_reused(
    project: pytest.Pytester, targets,
) -> None:
    """Finding 10: a row signed by the harness but made where fewer walls stood (an older Landlock ABI, no
    namespaces) is not reused by a session behind more; a row of identical walls still is."""
    found, clean, _, _ = targets
    same = project.runpytest_subprocess("--shrink-method=global-magnitude", *CASE)
    assert same.parseoutcomes().get("reused") == 1
    latest = run_files(project.path / "results")[max(run_files(project.path / "results"))]
    assert latest[0]["reused"] is True and "landlock:" in latest[0]["walls"]
    with sqlite3.connect(found["store"]) as db:
        (row,) = db.execute("SELECT row FROM results WHERE key = ?", (found["victim"],)).fetchone()
        weaker = sign({**json.loads(row), "walls": "landlock:3 memory-cap"}, load_key(Path(found["key"])))
        db.execute("UPDATE results SET row = ? WHERE key = ?", (json.dumps(weaker), found["victim"]))
    again = project.runpytest_subprocess("--shrink-method=global-magnitude", *CASE, "--shrink-require-sandbox=landlock")
    again.assert_outcomes(passed=1)
    assert again.ret == pytest.ExitCode.OK
    latest = run_files(project.path / "results")[max(run_files(project.path / "results"))]
    assert latest[0]["reused"] is False and metrics(latest[0]) == metrics(clean["global-magnitude"])
    assert latest[0]["walls"] == json.loads(row)["walls"]
