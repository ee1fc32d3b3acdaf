"""APQ-MLS core for two members (mlscore.apq, draft-ietf-mls-combiner): structures, FULL and PARTIAL commits,
joining, and what each member refuses.  Our code on both ends: no other APQ implementation runs here."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mls2p.testing import apq_two_party, bundle
from mlscore.apq import (
    APQ_COMPONENT,
    APQInfo,
    APQInfoUpdate,
    APQMessagePair,
    APQMode,
    APQPair,
    APQUpdateType,
    apq_info_logic,
    apq_info_of,
    derive_apq_psk,
    key_package_pair,
)
from mlscore.errors import DecodeError, MLSError, ValidationError
from mlscore.framing import MLSMessage, WireFormat
from mlscore.group import Group
from mlscore.messages import AppDataUpdate, AppDataUpdateOperation, KeyPackage, PreSharedKey
from mlscore.schedule.psk import PreSharedKeyID

T_SUITE, PQ_SUITE, PQ_DSA_SUITE = 1, 0x0051, 0x0055  # X25519 / ML-KEM-1024 + Ed25519 / ML-KEM-1024 + ML-DSA-87
INFO = APQInfo(b"t" * 16, b"q" * 16, APQMode.CONFIDENTIALITY, T_SUITE, PQ_SUITE, 3, 2)


def test_apq_info_and_its_updates_encode_as_the_draft_says() -> None:
    assert INFO.to_bytes() == (b"\x10" + b"t" * 16 + b"\x10" + b"q" * 16 + b"\x00" + b"\x00\x01" + b"\x00\x51"
                               + (3).to_bytes(8, "big") + (2).to_bytes(8, "big"))
    assert APQInfo.from_bytes(INFO.to_bytes()) == INFO
    full = APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=INFO)
    assert full.to_bytes() == b"\x00" + INFO.to_bytes() and APQInfoUpdate.from_bytes(full.to_bytes()) == full
    assert APQInfoUpdate(APQUpdateType.NEW_T_EPOCH, epoch=7).to_bytes() == b"\x01" + (7).to_bytes(8, "big")
    with pytest.raises(DecodeError):
        APQInfoUpdate.from_bytes(b"\x03" + bytes(8))
    with pytest.raises(DecodeError):
        APQInfo.from_bytes(INFO.to_bytes()[:-1])


def test_the_component_logic_changes_only_the_epochs() -> None:
    full = APQInfoUpdate(APQUpdateType.FULL_UPDATE, info=INFO).to_bytes()
    assert apq_info_logic(None, [full]) == INFO.to_bytes()
    moved = apq_info_logic(INFO.to_bytes(), [APQInfoUpdate(APQUpdateType.NEW_PQ_EPOCH, epoch=9).to_bytes(),
                                            APQInfoUpdate(APQUpdateType.NEW_T_EPOCH, epoch=8).to_bytes()])
    assert APQInfo.from_bytes(moved) == replace(INFO, t_epoch=8, pq_epoch=9)
    with pytest.raises(ValidationError, match="more than the two epochs"):
        apq_info_logic(INFO.to_bytes(), [APQInfoUpdate(APQUpdateType.FULL_UPDATE,
                                                       info=replace(INFO, pq_cipher_suite=0x0052)).to_bytes()])
    with pytest.raises(ValidationError):  # one epoch alone, or epochs with nothing to apply them to
        apq_info_logic(INFO.to_bytes(), [APQInfoUpdate(APQUpdateType.NEW_T_EPOCH, epoch=8).to_bytes()])
    with pytest.raises(ValidationError):
        apq_info_logic(None, [APQInfoUpdate(APQUpdateType.NEW_T_EPOCH, epoch=8).to_bytes(),
                              APQInfoUpdate(APQUpdateType.NEW_PQ_EPOCH, epoch=9).to_bytes()])


def pair_of_two(pq_suite: int = PQ_SUITE, mode: APQMode = APQMode.CONFIDENTIALITY) -> tuple[APQPair, APQPair]:
    return apq_two_party(T_SUITE, pq_suite, mode)


def in_step(a: APQPair, b: APQPair) -> None:
    assert (a.t.epoch, a.pq.epoch) == (b.t.epoch, b.pq.epoch)
    assert a.t.epoch_authenticator == b.t.epoch_authenticator
    assert a.pq.epoch_authenticator == b.pq.epoch_authenticator
    assert a.t.export_secret("apq", b"", 32) == b.t.export_secret("apq", b"", 32)
    assert apq_info_of(a.t) == apq_info_of(b.t) == apq_info_of(a.pq) == apq_info_of(b.pq)


@pytest.mark.parametrize(("pq_suite", "mode"), [(PQ_SUITE, APQMode.CONFIDENTIALITY),
                                                (PQ_DSA_SUITE, APQMode.CONFIDENTIALITY_AND_AUTHENTICITY)])
def test_full_and_partial_commits_both_ways(pq_suite: int, mode: APQMode) -> None:
    alice, bob = pair_of_two(pq_suite, mode)
    in_step(alice, bob)
    assert (alice.t.epoch, alice.pq.epoch) == (1, 1) and alice.info.mode == mode
    for round_number in range(6):
        sender, receiver = (alice, bob) if round_number % 2 == 0 else (bob, alice)
        if round_number % 3 == 2:  # every third rekey is FULL, the others PARTIAL
            full = sender.commit_full()
            receiver = receiver.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())
            sender = full.pair
            assert apq_info_of(sender.t) == replace(sender.info, t_epoch=sender.t.epoch, pq_epoch=sender.pq.epoch)
        else:
            message, sender = sender.commit_partial()
            receiver = receiver.process_partial(message.to_bytes())
        alice, bob = (sender, receiver) if round_number % 2 == 0 else (receiver, sender)
        in_step(alice, bob)
    assert alice.t.epoch == 7 and alice.pq.epoch == 3  # 6 rekeys, 2 of them FULL; the PQ group moved only then
    message, alice = alice.commit_partial()
    bob = bob.process_partial(message.to_bytes())
    in_step(alice, bob)
    info = apq_info_of(alice.t)
    assert info is not None and (alice.t.epoch, info.t_epoch, info.pq_epoch) == (8, 7, 3)  # the last FULL's


def test_a_t_commit_without_the_pq_psk_is_refused_and_changes_nothing() -> None:
    """A FULL commit whose T half leaves out the APQ PSK would leave the T group classical: refused."""
    alice, bob = pair_of_two()
    full = alice.commit_full()
    update = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE, APQInfoUpdate(
        APQUpdateType.FULL_UPDATE, info=replace(alice.info, t_epoch=alice.t.epoch + 1,
                                                pq_epoch=alice.pq.epoch + 1)).to_bytes())
    classical = alice.t.commit([update])  # the right APQInfo, but no PSK
    before = (bob.t.epoch, bob.pq.epoch)
    with pytest.raises(ValidationError, match="does not carry the PQ group's PSK"):
        bob.process_full(full.pq_message.to_bytes(), classical.message.to_bytes())
    assert (bob.t.epoch, bob.pq.epoch) == before
    bob = bob.process_full(full.pq_message.to_bytes(), full.t_message.to_bytes())  # the real one still works
    in_step(full.pair, bob)
    assert not bob._psks and not full.pair._psks  # no PSK (an old secret) is kept once its commit is through


def test_a_psk_from_another_pq_epoch_does_not_open_the_t_commit() -> None:
    alice, bob = pair_of_two()
    stale_id, stale_psk = derive_apq_psk(Group.from_state(alice.pq.to_state(), config=alice.pq.config),
                                         T_SUITE)  # the current PQ epoch, not the next one
    with alice._psks.offering(stale_id, stale_psk):
        wrong = alice.t.commit([PreSharedKey(PreSharedKeyID.application(APQ_COMPONENT, stale_id, bytes(32)))])
    pq_only = alice.pq.commit([])
    with pytest.raises(ValidationError):
        bob.process_full(pq_only.message.to_bytes(), wrong.message.to_bytes())


def test_a_partial_commit_may_not_touch_apq_info() -> None:
    alice, bob = pair_of_two()
    update = AppDataUpdate(APQ_COMPONENT, AppDataUpdateOperation.UPDATE, APQInfoUpdate(
        APQUpdateType.FULL_UPDATE, info=replace(alice.info, t_epoch=alice.t.epoch + 1)).to_bytes())
    sneaky = alice.t.commit([update])
    with pytest.raises(ValidationError, match="must not change APQInfo"):
        bob.process_partial(sneaky.message.to_bytes())


@pytest.mark.parametrize(("t_suite", "pq_suite", "mode", "why"), [
    (T_SUITE, 0x0053, APQMode.CONFIDENTIALITY, "pure ML-KEM"),  # X-Wing is a hybrid KEM
    (0x0051, PQ_SUITE, APQMode.CONFIDENTIALITY, "classical"),  # the T group on a PQ suite
    (T_SUITE, PQ_SUITE, APQMode.CONFIDENTIALITY_AND_AUTHENTICITY, "PQ signature"),  # mode 1 signing with Ed25519
])
def test_suites_the_combiner_refuses(t_suite: int, pq_suite: int, mode: APQMode, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        APQPair.create(bundle(b"alice", t_suite), bundle(b"alice", pq_suite), mode=mode)


# -- the APQMessagePair wire format (section 6) ---------------------------------------------------------------

def test_a_full_rekey_and_a_join_travel_as_message_pairs() -> None:
    alice = APQPair.create(bundle(b"alice", T_SUITE), bundle(b"alice", PQ_SUITE))
    bob_t, bob_pq = bundle(b"bob", T_SUITE), bundle(b"bob", PQ_SUITE)
    offer = key_package_pair(bob_t, bob_pq).to_message_bytes()
    assert offer[:4] == b"\x00\x01\x00\x07" and offer[4:6] == b"\x00\x05"  # mls10, apq_message_pair, key packages
    offered = APQMessagePair.from_message_bytes(offer)
    t_kp, pq_kp = offered.t_message.body, offered.pq_message.body
    assert isinstance(t_kp, KeyPackage) and isinstance(pq_kp, KeyPackage)
    added = alice.commit_full(add=(t_kp, pq_kp))
    welcomes = added.welcomes()
    assert welcomes is not None
    bob = APQPair.join_pair(welcomes.to_message_bytes(), bob_t, bob_pq)
    alice = added.pair
    in_step(alice, bob)
    full = bob.commit_full()
    alice = alice.process_full_pair(full.messages().to_message_bytes())
    in_step(alice, full.pair)
    with pytest.raises(ValidationError, match="pair of Welcomes"):
        APQPair.join_pair(full.messages(), bob_t, bob_pq)
    with pytest.raises(ValidationError, match="pair of commits"):
        alice.process_full_pair(welcomes)


def test_message_pairs_the_draft_says_to_reject() -> None:
    alice, bob = pair_of_two()
    full = alice.commit_full()
    t_commit, pq_commit = full.t_message, full.pq_message
    with pytest.raises(ValidationError, match="is PUBLIC_MESSAGE, not WELCOME"):  # halves of another format
        APQMessagePair(WireFormat.WELCOME, t_commit, pq_commit)
    application = alice.t.protect(b"not in a pair")
    with pytest.raises(ValidationError, match="application"):
        APQMessagePair(WireFormat.PRIVATE_MESSAGE, application, application)
    good = full.messages().to_message_bytes()
    for bad in (good + b"\x00",  # trailing bytes
                good[:-1],  # cut short
                b"\x00\x02" + good[2:],  # another protocol version
                good[:2] + b"\x00\x01" + good[4:],  # an ordinary MLSMessage is not a pair
                good[:4] + b"\x00\x07" + good[6:]):  # a pair of pairs
        with pytest.raises(MLSError):
            APQMessagePair.from_message_bytes(bad)
    with pytest.raises(MLSError):  # the generic MLSMessage reader does not accept the pair's wire format
        MLSMessage.from_bytes(good)
    bob = bob.process_full_pair(good)
    in_step(full.pair, bob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_the_pair_decoder_raises_only_mls_errors(data: bytes) -> None:
    """Anything it accepts is canonical: it encodes back to the same bytes."""
    message = b"\x00\x01\x00\x07" + data
    try:
        pair = APQMessagePair.from_message_bytes(message)
    except MLSError:
        return
    assert pair.to_message_bytes() == message
