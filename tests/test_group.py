"""The Group object: two-party flows, atomic failure, and RFC 9420 validation rules."""

from __future__ import annotations

import dataclasses

import pytest

from mls2p.testing import bundle, two_party
from mlscore.crypto import SUPPORTED_SUITES
from mlscore.errors import CryptoError, EpochError, MLSError, ReplayError, StateError, ValidationError
from mlscore.framing import MLSMessage, PrivateMessage, PublicMessage, WireFormat
from mlscore.group import ApplicationMessage, CommitMessage, Group, GroupConfig
from mlscore.messages import Add, Remove


def step(sender: Group, receiver: Group) -> tuple[Group, Group]:
    result = sender.commit()
    processed = receiver.process(result.message.to_bytes())
    assert isinstance(processed, CommitMessage)
    return result.group, processed.group


def test_hundred_alternating_commits_agree_on_every_exporter() -> None:
    alice, bob = two_party()
    assert alice.export_secret("test", b"ctx", 32) == bob.export_secret("test", b"ctx", 32)
    for round_number in range(100):
        if round_number % 2 == 0:
            alice, bob = step(alice, bob)
        else:
            bob, alice = step(bob, alice)
        assert alice.epoch == bob.epoch == round_number + 2
        assert alice.export_secret("test", b"ctx", 32) == bob.export_secret("test", b"ctx", 32)
        assert alice.epoch_authenticator == bob.epoch_authenticator
    assert alice.tree == bob.tree


@pytest.mark.parametrize("suite_id", SUPPORTED_SUITES)
@pytest.mark.parametrize("wire_format", [WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE])
def test_every_suite_and_wire_format(suite_id: int, wire_format: WireFormat) -> None:
    alice, bob = two_party(suite_id, GroupConfig(handshake_wire_format=wire_format))
    alice, bob = step(alice, bob)
    bob, alice = step(bob, alice)
    assert alice.export_secret("x", b"", 16) == bob.export_secret("x", b"", 16)
    message = alice.protect(b"hello", authenticated_data=b"aad")
    assert isinstance(message.body, PrivateMessage)
    received = bob.process(message.to_bytes())
    assert received == ApplicationMessage(b"hello", alice.own_leaf, b"aad")


def test_commit_leaves_the_committer_untouched_until_adopted() -> None:
    alice, bob = two_party()
    before = alice.export_secret("x", b"", 16)
    result = alice.commit()
    assert alice.epoch == 1 and result.group.epoch == 2
    assert alice.export_secret("x", b"", 16) == before
    # The old epoch still protects and the peer (still at epoch 1) reads it.
    assert bob.process(alice.protect(b"still epoch 1").to_bytes()).data == b"still epoch 1"


def test_application_messages_reject_replay_and_allow_reordering() -> None:
    alice, bob = two_party()
    first, second = alice.protect(b"1").to_bytes(), alice.protect(b"2").to_bytes()
    assert bob.process(second).data == b"2"
    assert bob.process(first).data == b"1"
    with pytest.raises(ReplayError):
        bob.process(first)


def test_tampered_messages_are_rejected_and_change_nothing() -> None:
    alice, bob = two_party()
    commit = alice.commit().message.to_bytes()
    for position in (len(commit) // 2, len(commit) - 3):
        tampered = bytearray(commit)
        tampered[position] ^= 0x01
        with pytest.raises(MLSError):
            bob.process(bytes(tampered))
    # The genuine commit still applies: nothing was half-applied.
    processed = bob.process(commit)
    assert isinstance(processed, CommitMessage)

    ciphertext = alice.protect(b"secret").to_bytes()
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(CryptoError):
        bob.process(tampered)
    assert bob.process(ciphertext).data == b"secret"


def test_wrong_epoch_and_wrong_group_rejected() -> None:
    alice, bob = two_party()
    _, bob2 = step(alice, bob)
    stale = alice.protect(b"old").to_bytes()
    with pytest.raises(EpochError, match="epoch 1"):
        bob2.process(stale)
    other_alice, _ = two_party()
    with pytest.raises(EpochError, match="another group"):
        bob2.process(other_alice.commit().message)


def test_own_commit_cannot_be_processed() -> None:
    alice, _ = two_party()
    with pytest.raises(StateError, match="own commit"):
        alice.process(alice.commit().message)


def test_bad_signature_on_public_commit_rejected() -> None:
    alice, bob = two_party()
    message = alice.commit().message.body
    assert isinstance(message, PublicMessage)
    forged = dataclasses.replace(message, auth=dataclasses.replace(message.auth, signature=bytes(64)))
    with pytest.raises(MLSError):
        bob.process(MLSMessage(forged))


def test_add_remove_and_three_members() -> None:
    alice, bob = two_party()
    carol_bundle = bundle(b"carol")
    result = alice.commit([Add(carol_bundle.key_package)])
    carol = Group.join(result.welcome, carol_bundle)
    bob_next = bob.process(result.message).group
    alice = result.group
    assert {g.export_secret("x", b"", 8) for g in (alice, bob_next, carol)} == {alice.export_secret("x", b"", 8)}
    result = carol.commit([Remove(bob_next.own_leaf)])
    alice = alice.process(result.message).group
    with pytest.raises(StateError, match="removes us"):
        bob_next.process(result.message)
    assert alice.export_secret("x", b"", 8) == result.group.export_secret("x", b"", 8)
    assert len(alice.members()) == 2


def test_duplicate_add_rejected() -> None:
    alice, _ = two_party()
    carol = bundle(b"carol")
    with pytest.raises(ValidationError, match="same client"):
        alice.commit([Add(carol.key_package), Add(carol.key_package)])


def test_destroyed_epoch_refuses_use() -> None:
    alice, _ = two_party()
    alice.destroy()
    with pytest.raises(StateError):
        alice.export_secret("x", b"", 16)
    with pytest.raises(StateError):
        alice.protect(b"x")


def test_repr_has_no_secrets() -> None:
    alice, _ = two_party()
    own = bundle(b"x")
    text = repr(alice) + repr(alice._secrets) + repr(own)
    secrets = [getattr(alice._secrets, f.name) for f in dataclasses.fields(alice._secrets)]
    signature_priv = own.signature_priv if isinstance(own.signature_priv, bytes) else own.signature_priv.raw
    secrets += [own.init_priv, own.encryption_priv, signature_priv]
    for secret in secrets:
        if secret:
            assert secret.hex() not in text and repr(secret) not in text


def test_add_of_a_member_lacking_required_capabilities_is_refused() -> None:
    from mlscore.extensions import Extension, ExtensionType, RequiredCapabilities
    from mlscore.group import Group
    from mlscore.key_package import create_key_package, default_capabilities

    required = Extension(ExtensionType.REQUIRED_CAPABILITIES,
                         RequiredCapabilities(extension_types=(0x0006,)).to_bytes())
    founder = bundle(b"founder")
    capable = default_capabilities(1, extensions=(0x0006,))
    founder = create_key_package(1, founder.key_package.leaf_node.credential, founder.signature_priv,
                                 capabilities=capable)
    group = Group.create(founder, extensions=[required])
    with pytest.raises(ValidationError, match="lacks required capabilities"):
        group.commit([Add(bundle(b"plain").key_package)])
