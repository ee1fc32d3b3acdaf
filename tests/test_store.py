"""Session stores: atomic, private, and the in-memory twin behaves the same."""

from __future__ import annotations

import os
import stat

import pytest

from mls2p.errors import StoreError
from mls2p.store import FileSessionStore, MemorySessionStore


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    return MemorySessionStore() if request.param == "memory" else FileSessionStore(tmp_path / "state")


def test_save_load_delete(store) -> None:
    gid = b"\x01\x02"
    assert store.load(gid) is None
    store.save(gid, b"first")
    store.save(gid, b"second")
    assert store.load(gid) == b"second"
    assert store.group_ids() == [gid]
    store.delete(gid)
    assert store.load(gid) is None
    store.delete(gid)  # deleting twice is not an error


def test_file_store_is_private_and_leaves_no_temporaries(tmp_path) -> None:
    store = FileSessionStore(tmp_path / "state")
    store.save(b"\xaa", b"x" * 1000)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    files = os.listdir(tmp_path / "state")
    assert files == ["aa.mlsstate"]
    assert stat.S_IMODE(os.stat(tmp_path / "state" / files[0]).st_mode) == 0o600


def test_failed_write_keeps_old_state(tmp_path, monkeypatch) -> None:
    store = FileSessionStore(tmp_path)
    store.save(b"\x01", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="disk on fire"):
        store.save(b"\x01", b"new")
    monkeypatch.undo()
    assert store.load(b"\x01") == b"old"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []
