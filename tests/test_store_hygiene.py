"""Store hygiene: restoring tampered states (free in group format 2, bounded in format 1), expiry of
abandoned sessions, private folders, and a sealing key's write count.  Time is injected and work is
counted; nothing here measures speed."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mls2p import StoredStateError, TwoPartySession
from mls2p.config import ProfileConfig
from mls2p.errors import ConfigurationError, StaleStateError
from mls2p.identity import load_or_create_key
from mls2p.sealing import DEFAULT_WARN_AFTER_WRITES, SealingKey, StateSealer, load_keyring, new_key_line
from mls2p.store import DEFAULT_MAX_IDLE_SECONDS, FileSessionStore, open_store
from mls2p.testing import Pair, config, two_party
from mlscore.codec import Reader, Writer
from mlscore.crypto import CipherSuite
from mlscore.errors import DecodeError
from mlscore.group import Group, GroupConfig
from mlscore.schedule.secret_tree import MAX_GENERATION, RatchetType

DOCS = Path(__file__).resolve().parent.parent / "docs"


# -- 1. a stored generation costs nothing to restore (format 2); format 1's is refused beyond a limit ---

DATA = Path(__file__).resolve().parent / "data"
V1_SESSIONS = {"synced": ("alice-synced-epoch1.bin", b"alice"),  # release 0.1: group state format 1
               "pending commit": ("alice-awaiting-eku-epoch1.bin", b"alice")}
V1_GROUP = DATA / "group-state-v1" / "alice-epoch2.bin"


def with_generation(group_state: bytes, generation: int) -> bytes:
    """A format-1 Group.to_state() whose two stored sending generations (its last 8 bytes) are ``generation``."""
    assert group_state[:2] == b"\x00\x01"
    return group_state[:-8] + generation.to_bytes(4, "big") * 2


def at_generation(group_state: bytes, generation: int) -> bytes:
    """A format-2 Group.to_state() whose secret tree holds every ratchet of every leaf at ``generation``."""
    assert group_state[:2] == b"\x00\x02"
    group = Group.from_state(group_state)
    head = group_state[:-len(group._secret_tree.to_state())]
    ratchets = [(leaf, kind) for leaf in range(group.tree.n_leaves) for kind in RatchetType]
    w = Writer().opaque(b"")  # no node secret left
    w.vector(ratchets, lambda w2, item: w2.u32(item[0]).u8(item[1]).opaque(bytes(group.suite.hash_len))
             .u64(generation).opaque(b""))
    return head + w.getvalue()


def tampered(stored: bytes, edit: Callable[[bytes, int], bytes], generation: int) -> bytes:
    """A stored session (persistence format 1) with every group's state edited by ``edit(state, generation)``."""
    r = Reader(stored)
    head = r.fixed(5)  # format, state, initial role, current role
    group = r.opaque()
    last_applied = r.optional(Reader.opaque)
    pending = r.optional(lambda r2: (r2.opaque(), r2.u8(), r2.opaque()))
    r.finish()
    w = Writer().raw(head).opaque(edit(group, generation)).optional(last_applied, Writer.opaque)
    w.optional(pending, lambda w2, p: w2.opaque(p[0]).u8(p[1]).opaque(edit(p[2], generation)))
    return w.getvalue()


@pytest.fixture
def derivations(monkeypatch) -> list[int]:
    """Counts every secret-tree derivation (one per ratchet step), whatever the suite."""
    calls: list[int] = []
    original = CipherSuite.derive_tree_secret

    def counting(self: CipherSuite, secret: bytes, label: bytes | str, generation: int, length: int) -> bytes:
        calls.append(generation)
        return original(self, secret, label, generation, length)

    monkeypatch.setattr(CipherSuite, "derive_tree_secret", counting)
    return calls


@pytest.fixture(params=["synced", "pending commit"])
def stored(request) -> tuple[bytes, TwoPartySession]:
    """A live session's stored state (group state format 2), with one group or two."""
    pair = Pair()
    if request.param == "pending commit":
        pair.alice.update()  # ConnectionUpdate sent, its epoch kept pending: two groups in the state
        assert pair.alice.pending is not None
    state = pair.alice.to_state()
    assert state is not None
    return state, pair.alice


@pytest.fixture(params=sorted(V1_SESSIONS))
def stored_v1(request) -> tuple[bytes, ProfileConfig, int]:
    """A release 0.1 session file (group state format 1), its config and how many groups it holds."""
    name, who = V1_SESSIONS[request.param]
    # The fixtures' keys were made by an earlier process: nothing here pinned them.
    return (DATA / "profile-state-v1" / name).read_bytes(), config(who, insecure_accept_any_peer=True), \
        1 if request.param == "synced" else 2


LIMIT = Group.max_restored_generation(GroupConfig())


def test_the_format_1_restore_limit_is_the_secret_trees_maximum_forward_distance() -> None:
    assert LIMIT == GroupConfig().maximum_forward_distance == 1000
    assert Group.max_restored_generation(GroupConfig(maximum_forward_distance=10**9)) == Group.MAX_RESTORED_GENERATION


@pytest.mark.parametrize("generation", [LIMIT + 1, 1 << 16, MAX_GENERATION, MAX_GENERATION + 1])
def test_a_format_2_generation_of_any_size_restores_without_any_derivation(
        stored, derivations: list[int], generation: int) -> None:
    state, alice = stored
    restored = TwoPartySession.from_state(tampered(state, at_generation, generation), alice.config)
    assert restored.state is alice.state and derivations == []
    group = restored.group
    assert group is not None and group._secret_tree.generation(group.own_leaf, RatchetType.APPLICATION) == generation


@pytest.mark.parametrize("generation", [LIMIT + 1, 1 << 16, MAX_GENERATION])
def test_a_format_1_generation_beyond_the_limit_is_refused_before_any_derivation(
        stored_v1, derivations: list[int], generation: int) -> None:
    state, profile, _ = stored_v1
    with pytest.raises(StoredStateError, match=f"generation {generation} is beyond {LIMIT}"):
        TwoPartySession.from_state(tampered(state, with_generation, generation), profile)
    assert derivations == []


def test_restoring_the_highest_accepted_format_1_generation_costs_two_steps_per_generation(
        stored_v1, derivations: list[int]) -> None:
    state, profile, groups = stored_v1
    TwoPartySession.from_state(tampered(state, with_generation, LIMIT), profile)
    # Two sending ratchets per group, each stepped LIMIT times; the untampered files cost at most one step.
    assert len(derivations) == groups * 2 * LIMIT
    derivations.clear()
    TwoPartySession.from_state(state, profile)
    assert len(derivations) <= 1


def test_a_core_user_who_sends_more_per_epoch_needs_no_larger_limit_with_format_2(derivations: list[int]) -> None:
    old = with_generation(V1_GROUP.read_bytes(), 1500)
    with pytest.raises(DecodeError, match="beyond 1000"):
        Group.from_state(old)
    assert derivations == []
    restored = Group.from_state(old, GroupConfig(maximum_forward_distance=2000))
    assert restored.epoch == 2 and len(derivations) == 2 * 1500
    derivations.clear()
    alice, _ = two_party()
    again = Group.from_state(at_generation(alice.to_state(), 1500))  # the default config
    assert again.epoch == alice.epoch and derivations == []
    assert again._secret_tree.generation(again.own_leaf, RatchetType.HANDSHAKE) == 1500


# -- 2. abandoned sessions expire (file store; the Redis TTL is in test_redis_store.py) ---------------

class Clock:
    """An injected wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_800_000_000.0


def written_at(store: FileSessionStore, group_id: bytes, state: bytes, when: float) -> None:
    store.save(group_id, state, replaces=store.load(group_id))
    os.utime(store.directory / f"{group_id.hex()}{store.SUFFIX}", (when, when))


def test_the_default_limit_is_30_days_and_bad_limits_are_refused(tmp_path) -> None:
    assert DEFAULT_MAX_IDLE_SECONDS == 30 * 24 * 3600
    assert FileSessionStore(tmp_path / "s").max_idle_seconds == DEFAULT_MAX_IDLE_SECONDS
    assert open_store(tmp_path / "t", max_idle_seconds=None).max_idle_seconds is None
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ConfigurationError, match="max_idle_seconds"):
            FileSessionStore(tmp_path / "u", max_idle_seconds=bad)


def test_purge_deletes_only_what_is_idle_longer_than_the_limit(tmp_path) -> None:
    store = FileSessionStore(tmp_path / "s", max_idle_seconds=100, wall_clock=Clock(T0))
    written_at(store, b"\x01", b"abandoned", T0 - 150)
    written_at(store, b"\x02", b"recent", T0 - 50)
    written_at(store, b"\x03", b"at the limit", T0 - 100)
    leftover = store.directory / ".tmp-crashed"
    leftover.write_bytes(b"half a state")
    os.utime(leftover, (T0 - 1000, T0 - 1000))
    foreign = store.directory / "notes.txt"
    foreign.write_text("not ours")
    os.utime(foreign, (T0 - 1000, T0 - 1000))
    assert store.purge_expired(T0) == [b"\x01"]
    assert sorted(os.listdir(store.directory)) == [".lock", "02.mlsstate", "03.mlsstate", "notes.txt"]
    assert store.purge_expired(T0) == []
    assert store.purge_expired(T0 + 60) == [b"\x02", b"\x03"]  # ``now`` is the caller's, not a clock's


def test_an_expired_file_reads_as_absent_and_is_deleted_by_load(tmp_path) -> None:
    clock = Clock(T0)
    store = FileSessionStore(tmp_path / "s", max_idle_seconds=100, wall_clock=clock)
    written_at(store, b"\x01", b"old", T0 - 10)
    written_at(store, b"\x02", b"other", T0 - 10)
    assert store.load(b"\x01") == b"old" and store.group_ids() == [b"\x01", b"\x02"]
    clock.now = T0 + 91  # 101 s idle
    assert store.group_ids() == []
    assert store.load(b"\x01") is None
    assert not (store.directory / "01.mlsstate").exists()
    with pytest.raises(StaleStateError):  # an expired state fences as absent, as a key Redis expired
        store.save(b"\x02", b"next", replaces=b"other")
    written_at(store, b"\x02", b"fresh", clock.now)  # replaces None: the expired file counts as absent
    assert store.load(b"\x02") == b"fresh"


def test_without_a_limit_nothing_expires(tmp_path) -> None:
    store = FileSessionStore(tmp_path / "s", max_idle_seconds=None, wall_clock=Clock(T0))
    written_at(store, b"\x01", b"kept", 0)
    assert store.purge_expired(T0) == [] and store.load(b"\x01") == b"kept"


# -- 3. a folder others can write to is refused (world) or reported (group) ---------------------------

def folder(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703])
def test_a_world_writable_session_folder_is_refused_with_the_fix(tmp_path, mode: int) -> None:
    path = folder(tmp_path, mode)
    with pytest.raises(ConfigurationError, match=f"writable by every user .*run: chmod 700 {path}"):
        FileSessionStore(path)
    assert os.listdir(path) == []


def test_a_group_writable_session_folder_is_used_with_a_warning(tmp_path, caplog) -> None:
    path = folder(tmp_path, 0o770)
    with caplog.at_level(logging.WARNING, logger="mls2p.store"):
        store = FileSessionStore(path)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "writable by its group" in caplog.text and f"chmod 700 {path}" in caplog.text
    store.save(b"\x01", b"x", replaces=None)
    assert store.load(b"\x01") == b"x"


@pytest.mark.parametrize("mode", [0o700, 0o755])
def test_a_folder_only_its_owner_writes_is_quiet(tmp_path, caplog, mode: int) -> None:
    with caplog.at_level(logging.WARNING):
        FileSessionStore(folder(tmp_path, mode))
        load_or_create_key(tmp_path / "shared" / "signature.key", 1)
    assert caplog.records == []


def test_a_world_writable_key_folder_is_refused_before_a_key_is_made(tmp_path) -> None:
    path = folder(tmp_path, 0o777)
    with pytest.raises(ConfigurationError, match=f"key folder {path} is writable by every user"):
        load_or_create_key(path / "signature.key", 1)
    assert os.listdir(path) == []


def test_a_group_writable_key_folder_is_used_with_a_warning(tmp_path, caplog) -> None:
    path = folder(tmp_path, 0o770)
    with caplog.at_level(logging.WARNING, logger="mls2p.store"):
        key = load_or_create_key(path / "signature.key", 1)
    assert "key folder" in caplog.text and "writable by its group" in caplog.text
    assert key.hex() not in caplog.text


def test_a_new_key_folder_is_private(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        load_or_create_key(tmp_path / "new" / "signature.key", 1)
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0 and caplog.records == []


# -- 4. a sealing key's writes are counted and a rotation is asked for in time -------------------------

def test_writes_are_counted_per_key_and_one_warning_asks_for_a_rotation(caplog) -> None:
    new, old = SealingKey("2027-01", b"\x42" * 32), SealingKey("2026-12", b"\x24" * 32)
    sealer = StateSealer([new, old], warn_after_writes=3)
    with caplog.at_level(logging.WARNING, logger="mls2p.sealing"):
        for i in range(2):
            sealer.seal(bytes([i]), b"state")
        assert caplog.records == []
        for i in range(5):
            sealer.seal(bytes([i]), b"state")
    assert sealer.writes("2027-01") == 7 and sealer.writes("2026-12") == 0 and sealer.writes("nope") == 0
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "'2027-01'" in message and "rotate" in message and "2^32" in message
    assert "42" * 4 not in message and "24" * 4 not in message
    sealer.open(b"\x00", sealer.seal(b"\x00", b"opening is not a write"))
    assert sealer.writes("2027-01") == 8


def test_the_threshold_is_well_below_the_random_nonce_limit_and_documented(tmp_path) -> None:
    assert DEFAULT_WARN_AFTER_WRITES == 1 << 28
    assert StateSealer([SealingKey("k", bytes(32))]).warn_after_writes == DEFAULT_WARN_AFTER_WRITES
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("k") + "\n")
    keys.chmod(0o600)
    assert load_keyring(keys, warn_after_writes=5).warn_after_writes == 5
    for bad in (0, (1 << 32) + 1):
        with pytest.raises(ConfigurationError, match="warn_after_writes"):
            StateSealer([SealingKey("k", bytes(32))], warn_after_writes=bad)
    fleet = (DOCS / "fleet.md").read_text()
    assert "**When to rotate.**" in fleet and "2^28" in fleet and "SP 800-38D" in fleet
