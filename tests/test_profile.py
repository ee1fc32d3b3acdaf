"""The two-party profile session: every rule of phases 1-3 of draft-kohbrok-mls-two-party-profile-01."""

from __future__ import annotations

import pytest

from mls2p import KeysChanged, ResumptionIgnored, Role, State, TwoPartySession, UnexpectedMessage
from mls2p.testing import Pair, config, keys, pump, sent
from mls2p.wire import ProfileMessage, ProfileMessageType
from mlscore.errors import DecodeError, EpochError, MLSError, StateError, ValidationError


def snapshot(session: TwoPartySession) -> tuple[object, ...]:
    """Everything a refused message must leave as it was (the stored form includes every secret)."""
    return session.state, session.current_role, session.epoch, session.to_state()


def test_phase1_establishes_epoch_1_on_both_sides() -> None:
    alice, hello = TwoPartySession.initiator(config(b"alice"))
    bob = TwoPartySession.responder(config(b"bob"))
    reply = bob.receive(hello[0].data)
    assert keys(reply) == [1] and bob.state is State.SYNCED
    assert keys(alice.receive(sent(reply)[0])) == [1] and alice.state is State.SYNCED
    assert alice.export_secret("x", b"", 32) == bob.export_secret("x", b"", 32)
    assert [m for _, m in alice.group.members()] and len(alice.group.members()) == 2


def test_rekey_switch_points() -> None:
    pair = Pair()
    update = pair.alice.update()
    assert pair.alice.state is State.AWAITING_EPOCH_KEY_UPDATE and keys(update) == []
    reply = pair.bob.receive(sent(update)[0])
    # The replier sends its EpochKeyUpdate first, then switches.
    assert [type(a).__name__ for a in reply] == ["SendMessage", "KeysChanged"] and keys(reply) == [2]
    assert pair.alice.epoch == 1  # the committer has not switched yet
    assert keys(pair.alice.receive(sent(reply)[0])) == [2]
    assert pair.in_sync() and pair.alice.epoch == 2


def test_hundred_ping_pong_rekeys() -> None:
    pair = Pair()
    for i in range(100):
        side, other = (pair.alice, pair.bob) if i % 2 == 0 else (pair.bob, pair.alice)
        pump(side, other, sent(side.update()))
    assert pair.in_sync() and pair.alice.epoch == 101


@pytest.mark.parametrize("initiator_first", [True, False])
def test_concurrent_updates_current_initiator_wins(initiator_first: bool) -> None:
    pair = Pair()
    a_update, b_update = sent(pair.alice.update())[0], sent(pair.bob.update())[0]
    # Alice is the current initiator: she ignores Bob's commit, Bob drops his and applies hers.
    assert pair.alice.receive(b_update) == []
    assert pair.alice.state is State.AWAITING_EPOCH_KEY_UPDATE
    reply = pair.bob.receive(a_update)
    assert pair.bob.pending is None and keys(reply) == [2]
    pair.alice.receive(sent(reply)[0])
    assert pair.in_sync()


def test_forged_epoch_key_update_changes_nothing() -> None:
    pair = Pair()
    update = sent(pair.alice.update())[0]
    ack = sent(pair.bob.receive(update))[0]
    before, stored = snapshot(pair.alice), pair.alice_store.load(pair.group_id)
    forged = ProfileMessage(ProfileMessageType.EPOCH_KEY_UPDATE, ProfileMessage.from_bytes(update).body)  # a commit
    with pytest.raises(ValidationError):
        pair.alice.receive(forged.to_bytes())
    assert snapshot(pair.alice) == before and pair.alice_store.load(pair.group_id) == stored
    assert keys(pair.alice.receive(ack)) == [2] and pair.in_sync()  # the genuine one still works


def test_message_not_allowed_in_state_is_refused_and_changes_nothing() -> None:
    pair = Pair()
    before = snapshot(pair.bob)
    with pytest.raises(UnexpectedMessage, match="EpochKeyUpdate received is not allowed in state synced"):
        pair.bob.receive(ProfileMessage(ProfileMessageType.EPOCH_KEY_UPDATE, b"").to_bytes())
    assert snapshot(pair.bob) == before
    pump(pair.alice, pair.bob, sent(pair.alice.update()))
    assert pair.in_sync()


def test_commit_with_wrong_safe_aad_type_rejected() -> None:
    pair = Pair()
    update = sent(pair.alice.update())[0]
    as_response = ProfileMessage(ProfileMessageType.RESUMPTION_RESPONSE, ProfileMessage.from_bytes(update).body)
    with pytest.raises(MLSError):
        pair.bob.receive(as_response.to_bytes())


def test_garbage_raises_our_error_and_changes_nothing() -> None:
    pair = Pair()
    before = snapshot(pair.bob)
    with pytest.raises(MLSError):
        pair.bob.receive(b"\x03\x05hello")  # a ConnectionUpdate whose body is not an MLSMessage
    with pytest.raises(DecodeError):
        pair.bob.receive(b"\x03\x09hello")  # a length beyond the end
    assert snapshot(pair.bob) == before


# -- phase 3: resumption at every kill point -------------------------------------------------

def resume(pair: Pair, resumer: str) -> None:
    pair.restart()
    side, other = (pair.alice, pair.bob) if resumer == "alice" else (pair.bob, pair.alice)
    request = sent(side.resume())
    assert side.state is State.AWAITING_RESUMPTION_RESPONSE and side.current_role is Role.INITIATOR
    pump(side, other, request)
    assert pair.in_sync(), (pair.alice, pair.bob)


@pytest.mark.parametrize("resumer", ["alice", "bob"])
def test_resume_when_synced(resumer: str) -> None:
    pair = Pair()
    resume(pair, resumer)
    assert pair.alice.epoch == 3  # resumption advances two epochs


@pytest.mark.parametrize("resumer", ["alice", "bob"])
def test_resume_after_commit_lost_before_delivery(resumer: str) -> None:
    pair = Pair()
    lost = sent(pair.alice.update())  # never delivered
    assert lost
    resume(pair, resumer)


@pytest.mark.parametrize("resumer", ["alice", "bob"])
def test_resume_after_peer_applied_but_ack_lost(resumer: str) -> None:
    pair = Pair()
    ack = sent(pair.bob.receive(sent(pair.alice.update())[0]))  # Bob applied; his ack is lost
    assert ack and pair.bob.epoch == 2 and pair.alice.epoch == 1
    resume(pair, resumer)
    # Alice resends her commit (rule 1 at Bob): 2 then Bob's response 3.  Bob commits fresh on
    # epoch 2 (rule 2 at Alice: her pending first), 3, then Alice's response 4.
    assert pair.alice.epoch == (3 if resumer == "alice" else 4)


@pytest.mark.parametrize("resumer", ["alice", "bob"])
def test_resume_twice_after_request_lost(resumer: str) -> None:
    pair = Pair()
    sent(pair.alice.update())
    pair.restart()
    side = pair.alice if resumer == "alice" else pair.bob
    sent(side.resume())  # the request is lost again
    resume(pair, resumer)


def test_both_resume_at_once_initial_initiator_wins() -> None:
    pair = Pair()
    sent(pair.bob.update())
    pair.restart()
    a_request, b_request = sent(pair.alice.resume())[0], sent(pair.bob.resume())[0]
    ignored = pair.alice.receive(b_request)
    assert isinstance(ignored[0], ResumptionIgnored)
    response = sent(pair.bob.receive(a_request))  # Bob (initial responder) yields
    pump(pair.alice, pair.bob, [], response)
    assert pair.in_sync() and pair.alice.current_role is Role.INITIATOR


def test_resumption_request_of_another_group_changes_nothing() -> None:
    pair = Pair()
    other = Pair()  # an unrelated group's request
    request = sent(other.alice.resume())[0]
    pair.restart()  # as a connection's first message (mid-connection any request is refused)
    before, stored = snapshot(pair.bob), pair.bob_store.load(pair.group_id)
    with pytest.raises((EpochError, ValidationError)):
        pair.bob.receive(request)
    assert snapshot(pair.bob) == before and pair.bob_store.load(pair.group_id) == stored
    resume(pair, "alice")  # the real peer can still resume


def test_replayed_resumption_request_changes_nothing() -> None:
    pair = Pair()
    pair.restart()
    request = sent(pair.alice.resume())[0]
    response = sent(pair.bob.receive(request))
    pump(pair.alice, pair.bob, [], response)
    assert pair.in_sync()
    pair.bob.connection_lost()  # an attacker replays the captured request on a new connection
    before, stored = snapshot(pair.bob), pair.bob_store.load(pair.group_id)
    with pytest.raises(EpochError):
        pair.bob.receive(request)
    assert snapshot(pair.bob) == before and pair.bob_store.load(pair.group_id) == stored
    resume(pair, "alice")


def test_phase1_break_discards_partial_state() -> None:
    alice, _ = TwoPartySession.initiator(config(b"alice"))
    alice.connection_lost()
    assert alice.state is State.CLOSED
    with pytest.raises(StateError):
        alice.resume()


def test_keys_changed_events_carry_epochs() -> None:
    pair = Pair()
    events = pair.bob.receive(sent(pair.alice.update())[0])
    assert any(isinstance(e, KeysChanged) and e.epoch == 2 for e in events)
