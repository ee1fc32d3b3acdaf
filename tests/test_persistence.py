"""Stored session state: format 1 with fixed codes, files of the previous release, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from mls2p import State, StoredStateError, TwoPartySession
from mls2p.persistence import APQ_FORMAT, FORMAT, ROLE_CODES, STATE_CODES
from mls2p.testing import Pair, config, pump, sent
from mlscore.codec import Reader

V1 = Path(__file__).parent / "data" / "profile-state-v1"


def load(name: str, who: bytes) -> TwoPartySession:
    # The fixtures' keys were made by an earlier process: nothing here pinned them.
    return TwoPartySession.from_state((V1 / name).read_bytes(), config(who, insecure_accept_any_peer=True))


def in_sync(a: TwoPartySession, b: TwoPartySession) -> bool:
    return a.epoch == b.epoch and a.export_secret("x", b"", 16) == b.export_secret("x", b"", 16)


def test_codes_are_the_ones_release_0_1_wrote() -> None:
    assert FORMAT == 1 and APQ_FORMAT == 2  # classical sessions are still written in format 1
    state = Pair().alice.to_state()
    assert state is not None and state[:2] == b"\x00\x01"
    assert STATE_CODES == {State.SYNCED: 3, State.AWAITING_EPOCH_KEY_UPDATE: 4,
                           State.AWAITING_RESUMPTION_RESPONSE: 5}
    assert set(ROLE_CODES.values()) == {1, 2}


def test_release_0_1_files_resume_after_phase_1() -> None:
    alice, bob = load("alice-synced-epoch1.bin", b"alice"), load("bob-synced-epoch1.bin", b"bob")
    assert alice.state is bob.state is State.SYNCED and alice.epoch == bob.epoch == 1
    assert alice.group_id == bytes.fromhex((V1 / "group-id.hex").read_text().strip())
    pump(bob, alice, sent(bob.resume()))
    assert in_sync(alice, bob) and alice.epoch == 3


def test_release_0_1_files_recover_a_commit_in_flight() -> None:
    alice = load("alice-awaiting-eku-epoch1.bin", b"alice")
    bob = load("bob-synced-epoch2-applied.bin", b"bob")
    assert alice.state is State.AWAITING_EPOCH_KEY_UPDATE and alice.pending is not None
    assert bob.state is State.SYNCED and bob.epoch == 2
    pump(alice, bob, sent(alice.resume()))  # alice resends her pending commit; bob applies rule 1
    assert in_sync(alice, bob) and alice.epoch == 3


@pytest.mark.parametrize("profile", [{}, {"apq": "require"}], ids=["classical", "apq"])
def test_round_trip_in_every_stored_state(profile: dict[str, str]) -> None:
    pair = Pair(**profile)
    assert pair.alice.to_state() is not None
    for step in (lambda: None, pair.alice.update, pair.bob.resume):
        step()
        for session in (pair.alice, pair.bob):
            state = session.to_state()
            assert state is not None
            again = TwoPartySession.from_state(state, session.config)
            assert again.to_state() == state and again.state is session.state and again.apq is session.apq


def stored_groups(state: bytes) -> list[bytes]:
    """The Group.to_state() values inside a stored session: the current group and any pending one."""
    r = Reader(state)
    r.fixed(5)  # format, state, initial role, current role
    group = r.opaque()
    r.optional(Reader.opaque)
    pending = r.optional(lambda r2: (r2.opaque(), r2.u8(), r2.opaque()))
    r.finish()
    return [group] + ([pending[2]] if pending else [])


@pytest.mark.parametrize("name", ["alice-synced-epoch1.bin", "alice-awaiting-eku-epoch1.bin"])
def test_release_0_1_files_are_saved_again_with_group_state_format_2(name: str) -> None:
    old = (V1 / name).read_bytes()
    session = load(name, b"alice")
    state = session.to_state()
    assert state is not None
    assert [g[:2] for g in stored_groups(old)] == [b"\x00\x01"] * len(stored_groups(old))
    assert [g[:2] for g in stored_groups(state)] == [b"\x00\x02"] * len(stored_groups(old))
    for group in (session.group, session.pending.group if session.pending else None):
        if group is None:
            continue
        secrets = group._secrets  # format 1 held these; format 2 holds none of them
        for secret in (secrets.encryption_secret, secrets.resumption_psk, secrets.welcome_secret):
            assert secret in old and secret not in state
    assert TwoPartySession.from_state(state, session.config).to_state() == state


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b"\x00\x03" + b[2:], "format 3; this release reads formats 1, 2"),
    (lambda b: b"\x00\x02" + b[2:], "corrupt"),  # format 1's fields but not the APQ one format 2 adds
    (lambda b: b[:2] + b"\x01" + b[3:], "unknown state code 1"),
    (lambda b: b[:3] + b"\x07" + b[4:], "unknown role code 7"),
    (lambda b: b + b"\x00", "corrupt"),
    (lambda b: b[:40], "corrupt"),
])
def test_unreadable_state_is_refused_with_a_reason(mutate, message: str) -> None:
    data = (V1 / "alice-synced-epoch1.bin").read_bytes()
    with pytest.raises(StoredStateError, match=message):
        TwoPartySession.from_state(mutate(data), config(b"alice"))


def test_nothing_to_store_before_phase_1_or_after_close() -> None:
    alice, _ = TwoPartySession.initiator(config(b"alice"))
    assert alice.to_state() is None
    pair = Pair()
    pair.alice.close()
    assert pair.alice.to_state() is None and pair.alice_store.group_ids() == []
