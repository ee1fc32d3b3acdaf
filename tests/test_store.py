"""Session stores: atomic, private, fenced (compare-and-set), and the in-memory twin behaves the same."""

from __future__ import annotations

import os
import stat

import pytest

from mls2p.errors import StaleStateError, StoreError
from mls2p.store import FileSessionStore, MemorySessionStore


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    return MemorySessionStore() if request.param == "memory" else FileSessionStore(tmp_path / "state")


def test_save_load_delete(store) -> None:
    gid = b"\x01\x02"
    assert store.load(gid) is None
    store.save(gid, b"first", replaces=None)
    store.save(gid, b"second", replaces=b"first")
    assert store.load(gid) == b"second"
    assert store.group_ids() == [gid]
    store.delete(gid, replaces=b"second")
    assert store.load(gid) is None
    store.delete(gid, replaces=None)  # deleting what is not there is not an error


def test_a_write_based_on_stale_state_is_refused_and_changes_nothing(store) -> None:
    gid = b"\x07"
    store.save(gid, b"epoch 5", replaces=None)
    store.save(gid, b"epoch 6", replaces=b"epoch 5")  # one connection moved on
    with pytest.raises(StaleStateError, match="continued elsewhere"):
        store.save(gid, b"epoch 6 (other)", replaces=b"epoch 5")  # the other still thinks it is at 5
    with pytest.raises(StaleStateError):
        store.save(gid, b"fresh", replaces=None)
    with pytest.raises(StaleStateError):
        store.delete(gid, replaces=b"epoch 5")
    assert store.load(gid) == b"epoch 6"


def test_file_store_is_private_and_leaves_no_temporaries(tmp_path) -> None:
    store = FileSessionStore(tmp_path / "state")
    store.save(b"\xaa", b"x" * 1000, replaces=None)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    files = sorted(os.listdir(tmp_path / "state"))
    assert files == [".lock", "aa.mlsstate"]
    for name in files:
        assert stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode) == 0o600


def test_failed_write_keeps_old_state(tmp_path, monkeypatch) -> None:
    store = FileSessionStore(tmp_path)
    store.save(b"\x01", b"old", replaces=None)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="disk on fire"):
        store.save(b"\x01", b"new", replaces=b"old")
    monkeypatch.undo()
    assert store.load(b"\x01") == b"old"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []
