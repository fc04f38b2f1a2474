"""Discovery: each method file imported in a child of its own, under a deadline; a reply can only name its own
file's methods, and the harness computes where each lives and its hash itself."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest

from pytest_shrinkbench.sandbox.discovery import accept, file_module, module_file, module_hash, planned_names
from pytest_shrinkbench.sandbox.runner import Sandbox

HONEST = '''
from pytest_shrinkbench import method

@method("victim")
def victim(ctx):
    return ctx.keep_top({n: w.detach().abs() for n, w in ctx.prunable.items()})
'''
# Writes its own reply straight into its pipe, then ends: it claims the victim, and the baseline's name and steps.
HIJACKER = '''
import os
from pytest_shrinkbench import method
from pytest_shrinkbench.sandbox.protocol import send

@method("hijacker")
def hijacker(ctx):
    return {}

forged = {"suites": [], "methods": [
    {"name": "hijacker", "module": __name__, "baseline": False, "steps": 1, "regrowth": False, "pattern": None, "calibrated": False},
    {"name": "victim", "module": "shrinkbench_methods.methods.a_honest", "baseline": False, "steps": 10**6, "regrowth": False, "pattern": None, "calibrated": False},
    {"name": "global-magnitude", "module": __name__, "baseline": True, "steps": 10**6, "regrowth": False, "pattern": None, "calibrated": False}]}
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        send(fd, forged)
    except OSError:
        pass
os._exit(0)
'''
CLAIMS_TOO = '''
from pytest_shrinkbench import method

@method("victim")
def mine(ctx):
    return {}
'''
HANGS = '''
import time
from pytest_shrinkbench import method

@method("hangs-at-import")
def hangs(ctx):
    return {}

while True:
    time.sleep(0.05)
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    methods = tmp_path / "methods"
    methods.mkdir()
    (methods / "a_honest.py").write_text(HONEST)
    (methods / "b_hijacker.py").write_text(HIJACKER)
    (methods / "c_hangs.py").write_text(HANGS)
    return methods


def discovered(folders: list[Path], timeout: float = 3.0) -> Sandbox:
    box = Sandbox("landlock", import_timeout=timeout)
    box.start()
    box.discover(folders)
    box.close()
    return box


def test_a_file_cannot_claim_another_files_method_or_a_baselines_settings(folder: Path) -> None:
    box = discovered([folder])
    victim = box.method("victim")
    assert victim.origin == f"file:{(folder / 'a_honest.py').resolve()}" and victim.steps == 1 and not victim.broken
    assert victim.source_hash == hashlib.sha256((folder / "a_honest.py").read_bytes()).hexdigest()[:12]
    baseline = box.method("global-magnitude")
    assert baseline.origin == "module:pytest_shrinkbench.baselines.global_magnitude" and baseline.steps == 1
    assert box.method("hijacker").origin.endswith("b_hijacker.py"), "the hijacker's own method is found"
    assert "not run from that file" in box.errors[f"method 'global-magnitude' of method file {(folder / 'b_hijacker.py').resolve()}"]


def test_a_name_two_files_claim_runs_under_neither(folder: Path) -> None:
    (folder / "d_claims_too.py").write_text(CLAIMS_TOO)
    box = discovered([folder])
    assert box.method("victim").broken.startswith("method 'victim' is defined by method file ")
    assert "a_honest.py and by method file " in box.method("victim").broken


def test_a_file_whose_import_hangs_costs_its_own_methods_only(folder: Path) -> None:
    started = time.monotonic()
    box = discovered([folder], timeout=3.0)
    assert time.monotonic() - started < 60
    hangs = box.method("hangs-at-import")
    assert hangs.broken == f"method file {(folder / 'c_hangs.py').resolve()} did not finish importing within 3 s (--shrink-import-timeout)"
    assert not box.method("victim").broken and not box.method("hijacker").broken


def test_a_reply_is_checked_field_by_field(folder: Path) -> None:
    target = f"file:{(folder / 'a_honest.py').resolve()}"
    own = file_module((folder / "a_honest.py").resolve())
    good = {"name": "x", "module": own, "baseline": False, "steps": 1, "regrowth": False, "pattern": None, "calibrated": False}
    assert [m.name for m in accept(target, {"methods": [good], "suites": []})[0]] == ["x"]
    for bad in ({**good, "origin": "file:/elsewhere.py"}, {**good, "source_hash": "0" * 12}, {**good, "steps": True},
                {**good, "steps": 0}, {**good, "pattern": "2/4"}, {**good, "pattern": "2:4", "steps": 3},
                {**good, "name": "\x1b[2J"}, {**good, "name": "a" * 500}, {**good, "baseline": "yes"}):
        with pytest.raises(ValueError):
            accept(target, {"methods": [bad], "suites": []})
    for reply in ("not a dict", {"methods": "x", "suites": []}, {"methods": []}):
        with pytest.raises(ValueError):
            accept(target, reply)
    assert accept(target, {"methods": [{**good, "module": "shrinkbench_methods.methods.other"}], "suites": []})[0] == []


def test_the_harness_finds_a_modules_source_without_importing_it() -> None:
    name = "pytest_shrinkbench.baselines.random_pruning"
    sys.modules.pop(name, None)
    assert module_file(name).name == "random_pruning.py" and name not in sys.modules
    assert len(module_hash(name)) == 12 and module_file("no_such_package.anything") is None


def test_the_names_a_broken_file_declares_are_read_from_its_syntax_tree(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('import pytest_shrinkbench as sb\n\n@sb.method("one")\ndef f(ctx): ...\n\n'
                    '@method("two", steps=3)\ndef g(ctx): ...\n\nraise ImportError("broken")\n')
    assert planned_names(path) == ["one", "two"]
    path.write_text("def broken(:\n")
    assert planned_names(path) == []
