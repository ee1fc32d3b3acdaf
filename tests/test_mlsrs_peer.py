"""The mls-rs adapter on its own: two MlsRsPeer instances run the whole two-party flow.

This proves the adapter (bytes in, bytes out, errors as ours) before our own
implementation is plugged in against it.  Tests that need the wheel are
skipped, with the reason, where it does not exist.
"""

from __future__ import annotations

import pytest

from interop import mlsrs_peer
from interop.mlsrs_peer import MLSRS_AVAILABLE, MLSRS_REASON, MlsRsPeer
from mlscore.codec import Writer
from mlscore.errors import (
    CryptoError,
    DecodeError,
    EpochError,
    InvalidSignatureError,
    ReplayError,
    StateError,
    TreeError,
    UnsupportedError,
    ValidationError,
)

needs_mlsrs = pytest.mark.skipif(not MLSRS_AVAILABLE, reason=MLSRS_REASON or "mls-rs wheel present")

LABEL, CONTEXT = b"mlsrs-peer test", b"context"


def _pair(ratchet_tree_extension: bool = True) -> tuple[MlsRsPeer, MlsRsPeer]:
    """alice creates a group and adds bob; both are at epoch 1."""
    alice = MlsRsPeer.new(b"alice", ratchet_tree_extension=ratchet_tree_extension)
    bob = MlsRsPeer.new(b"bob", ratchet_tree_extension=ratchet_tree_extension)
    alice.create_group(b"group")
    _, welcome = alice.add(bob.key_package())
    alice.merge_pending()
    bob.join(welcome, None if ratchet_tree_extension else alice.ratchet_tree())
    return alice, bob


def _same_exporter(a: MlsRsPeer, b: MlsRsPeer) -> bytes:
    secret = a.export(LABEL, CONTEXT, 32)
    assert secret == b.export(LABEL, CONTEXT, 32)
    return secret


@needs_mlsrs
@pytest.mark.parametrize("ratchet_tree_extension", [True, False], ids=["tree-in-welcome", "tree-out-of-band"])
def test_two_party_flow(ratchet_tree_extension: bool) -> None:
    alice, bob = _pair(ratchet_tree_extension)
    assert alice.epoch == bob.epoch == 1
    assert alice.group_id == bob.group_id == b"group"
    seen = {_same_exporter(alice, bob)}
    for round_number in range(20):
        sender, receiver = (alice, bob) if round_number % 2 == 0 else (bob, alice)
        commit = sender.commit_update()
        assert sender.epoch == round_number + 1  # nothing moves before the merge
        sender.merge_pending()
        assert receiver.process(commit) is None
        assert sender.epoch == receiver.epoch == round_number + 2
        seen.add(_same_exporter(alice, bob))
    assert len(seen) == 21  # a fresh exporter secret at every epoch
    assert bob.process(alice.encrypt(b"to bob")) == b"to bob"
    assert alice.process(bob.encrypt(b"to alice")) == b"to alice"
    assert alice.process(bob.encrypt(b"")) == b""


@needs_mlsrs
def test_exporter_depends_on_label_context_and_length() -> None:
    alice, _ = _pair()
    base = alice.export(LABEL, CONTEXT, 32)
    assert len(alice.export(LABEL, CONTEXT, 77)) == 77
    assert alice.export(LABEL + b"!", CONTEXT, 32) != base
    assert alice.export(LABEL, CONTEXT + b"!", 32) != base
    assert alice.export(LABEL, CONTEXT, 16) != base[:16]  # the length is part of KDFLabel


@needs_mlsrs
def test_random_group_id_and_epoch_zero() -> None:
    peer = MlsRsPeer.new(b"solo")
    peer.create_group()
    assert peer.epoch == 0
    assert len(peer.group_id) == 32
    with pytest.raises(StateError):
        peer.create_group()


@needs_mlsrs
def test_tampered_and_replayed_commits_are_rejected() -> None:
    alice, bob = _pair()
    commit = alice.commit_update()
    alice.merge_pending()
    tampered = bytearray(commit)
    tampered[-5] ^= 0x01  # inside the membership tag
    with pytest.raises(CryptoError):
        bob.process(bytes(tampered))
    assert bob.process(commit) is None
    with pytest.raises(EpochError):
        bob.process(commit)
    assert alice.epoch == bob.epoch == 2


@needs_mlsrs
def test_malformed_bytes_raise_decode_errors() -> None:
    alice, bob = _pair()
    message = alice.encrypt(b"hello")
    with pytest.raises(DecodeError):
        bob.process(message + b"\x00")  # mls-rs alone would ignore the trailing byte
    with pytest.raises(DecodeError):
        bob.process(message[:10])
    with pytest.raises(DecodeError):
        bob.process(b"")
    assert bob.process(message) == b"hello"


@needs_mlsrs
def test_forged_application_message_burns_its_generation() -> None:
    """An mls-rs quirk interop tests must avoid: a failed AEAD open consumes the key."""
    alice, bob = _pair()
    message = alice.encrypt(b"hello")
    forged = bytearray(message)
    forged[-3] ^= 0x01
    with pytest.raises(CryptoError):
        bob.process(bytes(forged))
    with pytest.raises(ReplayError):
        bob.process(message)
    assert bob.process(alice.encrypt(b"next")) == b"next"


@needs_mlsrs
def test_create_then_merge_is_explicit() -> None:
    alice, bob = _pair()
    with pytest.raises(StateError):
        alice.merge_pending()
    commit = alice.commit_update()
    assert alice.has_pending_commit
    with pytest.raises(StateError):
        alice.commit_update()
    old_epoch_message = alice.encrypt(b"still epoch 1")
    alice.merge_pending()
    assert not alice.has_pending_commit
    bob.process(commit)
    assert bob.process(old_epoch_message) == b"still epoch 1"  # mls-rs keeps past epochs


@needs_mlsrs
def test_crossed_commits_resolve_to_the_delivered_one() -> None:
    alice, bob = _pair()
    winner = alice.commit_update()
    bob.commit_update()  # loses: the delivery service orders alice's first
    alice.merge_pending()
    assert bob.process(winner) is None
    assert not bob.has_pending_commit
    assert alice.epoch == bob.epoch == 2
    _same_exporter(alice, bob)
    alice.process(bob.commit_update())
    bob.merge_pending()
    assert alice.epoch == bob.epoch == 3


@needs_mlsrs
def test_misuse_is_reported_as_our_errors() -> None:
    peer = MlsRsPeer.new(b"lonely")
    with pytest.raises(StateError):
        peer.encrypt(b"no group")
    alice = MlsRsPeer.new(b"alice", ratchet_tree_extension=False)
    alice.create_group()
    _, welcome = alice.add(peer.key_package())
    alice.merge_pending()
    with pytest.raises(TreeError):
        peer.join(welcome)  # the Welcome has no tree and none was given
    peer.join(welcome, alice.ratchet_tree())
    with pytest.raises(StateError):
        peer.process(MlsRsPeer.new(b"x").key_package())  # not a group message
    with pytest.raises(StateError):
        alice.process(alice.encrypt(b"own"))  # mls-rs refuses its own messages


def test_error_messages_map_to_our_classes() -> None:
    cases = {
        "plaintext message for incorrect epoch": EpochError,
        "invalid signature found": InvalidSignatureError,
        "invalid membership tag": CryptoError,
        "key not available, invalid generation 0": ReplayError,
        "commit already pending": StateError,
        "Unsupported group extension ExtensionType(65282)": UnsupportedError,
        "ratchet tree not provided or discovered in GroupInfo": TreeError,
        "UnexpectedEOF": DecodeError,
        "something new": ValidationError,
    }
    for message, cls in cases.items():
        assert mlsrs_peer._error_class(f"A mls-rs error occurred: {message}") is cls


def test_epoch_is_read_only_from_a_matching_group_context() -> None:
    def snapshot(version: int, suite: int, group_id: bytes, epoch: int) -> bytes:
        return Writer().u16(1).u16(version).u16(suite).opaque(group_id).u64(epoch).raw(b"rest").getvalue()

    assert mlsrs_peer._epoch_from_snapshot(b"g", snapshot(1, 1, b"g", 7)) == 7
    for wrong in (snapshot(2, 1, b"g", 7), snapshot(1, 3, b"g", 7), snapshot(1, 1, b"h", 7)):
        with pytest.raises(UnsupportedError):
            mlsrs_peer._epoch_from_snapshot(b"g", wrong)


def test_without_the_wheel_the_module_imports_and_refuses_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlsrs_peer, "MLSRS_AVAILABLE", False)
    monkeypatch.setattr(mlsrs_peer, "MLSRS_REASON", "no wheel for this platform")
    with pytest.raises(UnsupportedError, match="no wheel"):
        MlsRsPeer.new(b"alice")
