"""Workers share measurements through the session's folder, believing only what the harness signed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from pytest_shrinkbench.plugin.reuse import SessionMeasurements, StoredRows
from pytest_shrinkbench.results.schema import LEVEL_LANDLOCK
from pytest_shrinkbench.results.signing import sign

RECORD = {"top1": 0.9, "top5": 1.0, "case_key": "c" * 32}


def worker(folder: Path, cache: Path) -> SessionMeasurements:
    return SessionMeasurements(StoredRows(None, cache, None), folder)


def test_one_workers_measurements_are_found_by_another(tmp_path: Path) -> None:
    one, two = worker(tmp_path / "x", tmp_path / "cache"), worker(tmp_path / "x", tmp_path / "cache")
    (tmp_path / "x").mkdir()
    assert two.find("k1") is None
    one.publish("k1", RECORD)
    assert two.find("k1") == RECORD


@pytest.mark.parametrize("tamper", ["unsigned", "other key", "edited", "renamed"])
def test_a_record_the_harness_did_not_sign_as_is_ignored(tmp_path: Path, tamper: str) -> None:
    """A method without walls can write files where the workers look: it still cannot lend numbers."""
    folder = tmp_path / "x"
    folder.mkdir()
    reader = worker(folder, tmp_path / "cache")
    record = {**RECORD, "measurement_key": "k1"}
    planted = {"unsigned": record, "other key": sign(record, b"0" * 32),
               "edited": {**sign(record, reader.stored.key), "top1": 1.0},
               "renamed": sign({**record, "measurement_key": "k2"}, reader.stored.key)}[tamper]
    (folder / "k1.json").write_text(json.dumps(planted))
    assert reader.find("k1") is None


def test_a_key_being_computed_is_locked_for_other_workers(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    one = worker(folder, tmp_path / "cache")
    with one.lock("k1"):
        with pytest.raises(Timeout):
            FileLock(str(folder / "k1.lock")).acquire(timeout=0.2)
        with FileLock(str(folder / "k2.lock")).acquire(timeout=0.2):  # other keys are free
            pass


def test_the_store_lends_measurements_only_from_signed_rows_confined_enough(tmp_path: Path) -> None:
    """A row forged into the store under a real measurement key (a method without walls can write the store) lends nothing."""
    from pytest_shrinkbench.results.schema import LEVEL_PROCESS
    from pytest_shrinkbench.results.store import ResultsStore
    from tests.helpers import row

    stored = StoredRows(tmp_path / "store.sqlite", tmp_path / "cache", None)
    store = ResultsStore(tmp_path / "store.sqlite")
    store.put({**row("forged", 1, 0, top1=1.0), "measurement_key": "k1", "sandbox": LEVEL_LANDLOCK, "mac": "0" * 64})
    store.put(sign({**row("walls", 1, 0, top1=0.5), "measurement_key": "k2", "sandbox": LEVEL_PROCESS}, stored.key))
    store.put(sign({**row("honest", 1, 0, top1=0.9), "measurement_key": "k3", "sandbox": LEVEL_LANDLOCK}, stored.key))
    assert stored.measured("k1") is None and stored.measured("k2") is None
    assert stored.measured("k3")["top1"] == 0.9
    taken = SessionMeasurements(stored, None).find("k3")
    assert taken["top1"] == 0.9 and len(taken["case_key"]) == 32
    store.close()
    stored.close()
