"""Removing a child's folder, whatever the method left in it: depth, links, permissions.

The fork server removes each child's private folder after the case, with the harness's rights, so
the folder's contents are hostile input. :func:`shutil.rmtree` recurses once per level (a folder
1,500 levels deep raises ``RecursionError``, which ``ignore_errors`` does not catch, and ends the
server) and gives up on a folder whose permissions the method removed. :func:`remove_tree` holds
two descriptors at most and no recursion: it empties the top folder by pulling each subfolder's
entries up into it (a rename within one file system), so every entry is moved once whatever the
depth. It never follows a link (every open is ``O_NOFOLLOW``, every name is resolved against a
descriptor), gives back the owner's rights where the method took them away, and never raises.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_TRIES = 64  # fresh names tried for one pulled-up entry before it is left (a name taken by a folder)


def remove_tree(folder: Path) -> bool:
    """Remove ``folder`` and everything in it without following a link; True when nothing is left.

    Never raises (an entry it cannot remove stays, and it says so by returning False): the fork server
    calls it after every case, and nothing a method leaves behind may end the server."""
    try:
        return _remove(Path(folder))
    except Exception:  # noqa: BLE001  (the server must survive whatever is there)
        return False


def _remove(folder: Path) -> bool:
    parent = os.open(folder.parent, _DIRECTORY)
    try:
        if not _is_directory(folder.name, parent):
            return _unlink(folder.name, parent)
        top = _open_directory(folder.name, parent)
        if top is None:
            return False
        try:
            _empty(top)
        finally:
            os.close(top)
        os.rmdir(folder.name, dir_fd=parent)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
    finally:
        os.close(parent)


def _empty(top: int) -> None:
    """Unlink every non-folder in ``top``; replace each subfolder by its entries, pulled up, until none is left."""
    fresh = 0
    while True:
        names = os.listdir(top)
        if not names:
            return
        progress = False
        for name in names:
            if not _is_directory(name, top):
                progress |= _unlink(name, top)
                continue
            sub = _open_directory(name, top)
            if sub is None:
                continue
            try:
                for inner in os.listdir(sub):
                    for _ in range(_NAME_TRIES):
                        fresh += 1
                        try:
                            os.rename(inner, f".removing-{fresh}", src_dir_fd=sub, dst_dir_fd=top)
                            progress = True
                            break
                        except OSError:
                            continue
            finally:
                os.close(sub)
            try:
                os.rmdir(name, dir_fd=top)
                progress = True
            except OSError:
                pass
        if not progress:
            return  # what is left cannot be removed by this user: leave it, never loop


def _is_directory(name: str, directory: int) -> bool:
    return stat.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)


def _open_directory(name: str, directory: int) -> int | None:
    """A descriptor on the subfolder ``name`` (never a link), its owner's rights given back first (the method
    may have removed them: a folder it cannot read or write would otherwise stay)."""
    _give_back_rights(name, directory)
    try:
        return os.open(name, _DIRECTORY, dir_fd=directory)
    except OSError:
        return None


def _give_back_rights(name: str, directory: int) -> None:
    """chmod 0700 the folder ``name`` itself, never a link's target: through an ``O_PATH`` descriptor where
    Linux has one (chmod has no no-follow form there), else with the platform's lchmod."""
    try:
        if hasattr(os, "O_PATH") and os.path.isdir("/proc/self/fd"):
            handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            try:
                os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)
            finally:
                os.close(handle)
        elif os.chmod in os.supports_follow_symlinks:
            os.chmod(name, stat.S_IRWXU, dir_fd=directory, follow_symlinks=False)
    except OSError:
        pass


def _unlink(name: str, directory: int) -> bool:
    try:
        os.unlink(name, dir_fd=directory)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False
