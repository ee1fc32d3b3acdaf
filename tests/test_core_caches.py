"""What the core computes once and reuses must stay exact: stored states, decoded encodings, parsed keys."""

from __future__ import annotations

from typing import cast

import pytest

from mls2p.testing import bundle, two_party
from mlscore.crypto import SigningKey, get_suite
from mlscore.errors import CryptoError
from mlscore.framing import MLSMessage
from mlscore.group import ApplicationMessage, CommitMessage, Group


def test_stored_state_follows_the_sending_ratchet_after_it_was_encoded_once() -> None:
    alice, bob = two_party()
    before = alice.to_state()
    alice.protect(b"first")
    after = alice.to_state()
    assert after != before  # the application generation moved on
    restored = Group.from_state(after)
    processed = bob.process(restored.protect(b"second").to_bytes())
    assert isinstance(processed, ApplicationMessage) and processed.data == b"second"


def test_destroy_drops_the_encoded_state_with_the_secrets() -> None:
    alice, _ = two_party()
    alice.to_state()
    alice.destroy()
    assert alice._stored_epoch is None


def test_a_decoded_message_keeps_exactly_the_bytes_it_came_from() -> None:
    alice, _ = two_party()
    wire = alice.commit().message.to_bytes()
    decoded = MLSMessage.from_bytes(wire)
    assert decoded.to_bytes() == wire
    fresh = MLSMessage(decoded.body)  # a new object: encoded from its fields, not from the cache
    assert fresh.to_bytes() == wire


def test_the_parsed_signing_key_signs_like_the_raw_one_and_hides_itself() -> None:
    suite = get_suite(1)
    raw, public = suite.generate_signature_key_pair()
    signer = suite.signing_key(raw)
    assert isinstance(signer, SigningKey) and raw.hex() not in repr(signer)
    for key in (raw, signer):
        suite.verify_with_label(public, "label", b"content", suite.sign_with_label(key, "label", b"content"))
    assert suite.signature_public_key(signer) == public


def test_a_commit_result_builds_its_group_info_only_when_asked() -> None:
    alice, bob = two_party()
    result = alice.commit()
    info = result.group_info
    info.verify(alice.suite, result.group.own_leaf_node.signature_key)
    assert info.group_context == result.group.context
    processed = cast(CommitMessage, bob.process(result.message.to_bytes()))
    assert processed.group.epoch == info.group_context.epoch


def test_keys_parsed_for_one_suite_cannot_sign_for_another() -> None:
    signer = get_suite(1).signing_key(bundle(b"x").signature_priv)
    with pytest.raises(CryptoError):
        get_suite(2).sign_with_label(signer, "label", b"content")
