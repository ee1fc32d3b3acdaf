"""The two-party profile session: every rule of phases 1-3 of draft-kohbrok-mls-two-party-profile-01."""

from __future__ import annotations

import pytest

from mlscore.errors import EpochError, MLSError, StateError, ValidationError
from mlscore.profile import KeysChanged, ResumptionIgnored, Role, State, TwoPartySession
from mlscore.profile_wire import ProfileMessage, ProfileMessageType

from .profile_net import Pair, config, keys, pump, sent


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


def test_epoch_key_update_checks() -> None:
    pair = Pair()
    update = sent(pair.alice.update())[0]
    ack = sent(pair.bob.receive(update))[0]
    forged = ProfileMessage(ProfileMessageType.EPOCH_KEY_UPDATE, update[2:])  # a commit, not an EKU
    with pytest.raises(MLSError):
        pair.alice.receive(forged.to_bytes())
    assert pair.alice.state is State.CLOSED
    assert pair.alice_store.group_ids() == []  # fatal: the state is deleted, never resumable
    with pytest.raises(StateError):
        pair.alice.receive(ack)


def test_message_not_allowed_in_state_is_fatal() -> None:
    pair = Pair()
    with pytest.raises(StateError, match="EpochKeyUpdate not allowed"):
        pair.bob.receive(ProfileMessage(ProfileMessageType.EPOCH_KEY_UPDATE, b"").to_bytes())
    assert pair.bob.state is State.CLOSED and pair.bob.group is None


def test_commit_with_wrong_safe_aad_type_rejected() -> None:
    pair = Pair()
    update = sent(pair.alice.update())[0]
    as_response = ProfileMessage(ProfileMessageType.RESUMPTION_RESPONSE, ProfileMessage.from_bytes(update).body)
    with pytest.raises(MLSError):
        pair.bob.receive(as_response.to_bytes())


def test_garbage_is_fatal_with_our_error() -> None:
    pair = Pair()
    with pytest.raises(MLSError):
        pair.bob.receive(b"\x03\x05hello")
    assert pair.bob.state is State.CLOSED


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


def test_resumption_request_for_a_different_epoch_is_fatal() -> None:
    pair = Pair()
    old = Pair()  # an unrelated group's request
    request = sent(old.alice.resume())[0]
    with pytest.raises((EpochError, ValidationError)):
        pair.bob.receive(request)
    assert pair.bob.state is State.CLOSED


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


def test_rekey_policy_by_bytes_and_time() -> None:
    import dataclasses

    from mlscore.profile import RekeyPolicy

    waiting, _ = TwoPartySession.initiator(config(b"a", rekey=RekeyPolicy(max_bytes=1000)))
    assert not waiting.rekey_due(0.0, 5000)  # never before the group exists
    pair = Pair()
    pair.alice.config = dataclasses.replace(pair.alice.config, rekey=RekeyPolicy(max_bytes=1000, max_seconds=10.0))
    assert not pair.alice.rekey_due(100.0, 400)
    assert pair.alice.rekey_due(101.0, 700)  # 1100 bytes
    assert not pair.alice.rekey_due(102.0, 10)  # counters restart after a trigger
    assert pair.alice.rekey_due(111.5, 0)  # 10 s since the last trigger
    pair.alice.update()
    assert not pair.alice.rekey_due(200.0, 10**6)  # a rekey is already in flight
