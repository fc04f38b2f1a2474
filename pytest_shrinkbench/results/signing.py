"""Rows the harness can tell it wrote: an HMAC over each stored row, with a key no method can read.

A stored row is *reused* by later sessions instead of being measured again, so a row forged into
the store would be believed. The controller signs every row it writes (HMAC-SHA256 over the row's
canonical JSON, every field but the signature itself and the ``reused`` flag); a stored row is
reused only if its signature verifies. The key is 32 random bytes in ``<cache>/keys/results.key``
(mode 0600), created on first use. The method's child cannot read it: the Landlock walls hide that
file (see :mod:`pytest_shrinkbench.sandbox.walls`), and the fork server was started before any
process of the harness read it.

What this protects against: a method (or anything it spawns) writing rows into the store or the
results files — with Landlock it cannot write there at all, and it cannot forge a signature either;
rows copied in from elsewhere (another machine's store, another key); rows of older harness versions.
What it does not: without Landlock (``process`` level) the child runs as the same user and can read
the key file like any other, so a determined method could forge a row — such rows say ``process``
and ``--shrink-require-sandbox=landlock`` refuses them; and a user editing their own store with the
key at hand (not the threat: the user is not the adversary, a method is).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from filelock import FileLock

KEY_FOLDER = "keys"
KEY_FILE = "results.key"
UNSIGNED_FIELDS = ("mac", "reused")


def key_path(cache_dir: Path) -> Path:
    """Where the signing key lives: its own folder in the cache, so that hiding it hides nothing else."""
    return Path(cache_dir) / KEY_FOLDER / KEY_FILE


def load_key(path: Path) -> bytes:
    """The key at ``path``, created (atomically, once among concurrent processes) if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with FileLock(str(path.parent / ".results.key.lock")):
            if not path.exists():
                partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
                os.replace(partial, path)
    return bytes.fromhex(path.read_text().strip())


def _message(row: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in row.items() if k not in UNSIGNED_FIELDS}, sort_keys=True, separators=(",", ":")).encode()


def sign(row: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``row`` with its signature in ``mac``."""
    return {**row, "mac": hmac.new(key, _message(row), hashlib.sha256).hexdigest()}


def verify(row: dict[str, Any], key: bytes) -> bool:
    """Whether ``row`` carries a valid signature under ``key``."""
    mac = row.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac, hmac.new(key, _message(row), hashlib.sha256).hexdigest())
