"""Rows the harness can tell it wrote: a signature over every field, a key created once, unreadable to methods."""

from __future__ import annotations

import stat
from pathlib import Path

from pytest_shrinkbench.results.signing import key_path, load_key, sign, verify
from tests.helpers import row


def test_a_signed_row_verifies_and_any_edit_breaks_it(tmp_path: Path) -> None:
    key = load_key(key_path(tmp_path))
    signed = sign(row("m", 4, 0, 0.9), key)
    assert verify(signed, key)
    assert verify({**signed, "reused": True}, key), "being reused is not part of what was measured"
    for field, value in (("top1", 1.0), ("method_hash", "other"), ("sandbox", "process+landlock"), ("status", "passed ")):
        assert not verify({**signed, field: value}, key), field
    assert not verify({k: v for k, v in signed.items() if k != "mac"}, key)
    assert not verify(signed, load_key(key_path(tmp_path / "elsewhere")))


def test_the_key_is_created_once_private_to_its_owner(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    first = load_key(path)
    assert load_key(path) == first and len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.parent.name == "keys"
