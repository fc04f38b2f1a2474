"""A child's folder is removed whatever the method left in it, and removing it never ends the fork server."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from pytest_shrinkbench.sandbox.cleanup import remove_tree


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    """A child's folder as a hostile method leaves it: 1,500 levels deep, folders without rights, links to a file
    and a folder outside, a FIFO; and the outside they point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("the harness's")
    folder = tmp_path / "child"
    folder.mkdir()
    deep = folder
    for _ in range(1500):
        deep = deep / "d"
        deep.mkdir()
    (deep / "bottom").write_text("x")
    os.symlink(outside, deep / "to-outside")
    os.symlink(outside / "keep", folder / "to-keep")
    os.mkfifo(folder / "fifo")
    locked = folder / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "file").write_text("y")
    os.chmod(locked, 0)
    os.chmod(folder / "locked", 0o500)
    return folder, outside


def test_a_deep_linked_locked_folder_is_removed_and_nothing_outside_is_touched(hostile: tuple[Path, Path]) -> None:
    folder, outside = hostile
    assert remove_tree(folder) is True
    assert not folder.exists() and (outside / "keep").read_text() == "the harness's"


def test_shutil_rmtree_is_what_ended_the_server(hostile: tuple[Path, Path]) -> None:
    """The finding this module answers: rmtree recurses once per level, and ignore_errors does not catch that."""
    folder, _ = hostile
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with pytest.raises(RecursionError):
            shutil.rmtree(folder / "d", ignore_errors=True)
    finally:
        sys.setrecursionlimit(limit)
    assert remove_tree(folder) is True


def test_removing_what_is_not_a_folder_or_not_there_never_raises(tmp_path: Path) -> None:
    link = tmp_path / "link"
    os.symlink(tmp_path / "elsewhere", link)
    assert remove_tree(link) is True and not os.path.lexists(link)
    assert remove_tree(tmp_path / "never-made") is True
