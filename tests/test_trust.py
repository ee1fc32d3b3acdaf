"""Peers are authenticated by key: pinned keys, trust stores, trust on first use, and the secure default."""

from __future__ import annotations

import contextlib
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mls2p import ConfigurationError, ProfileConfig, TwoPartySession
from mls2p.identity import fingerprint, load_or_create_key
from mls2p.testing import sent
from mls2p.trust import (
    TrustOnFirstUse,
    TrustPolicy,
    decode_identity,
    encode_identity,
    load_trust_store,
    merge_pins,
    parse_pin,
    read_pins,
)
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import CredentialError


def keypair() -> tuple[bytes, bytes]:
    return get_suite(1).generate_signature_key_pair()


def test_a_pinned_name_with_another_key_is_refused_naming_both_fingerprints() -> None:
    _, real = keypair()
    _, forged = keypair()
    pins = PinnedKeys({b"client": {key_fingerprint(real)}})
    pins.validate(Credential.basic(b"client"), real, 1)
    with pytest.raises(CredentialError) as refused:
        pins.validate(Credential.basic(b"client"), forged, 1)
    assert key_fingerprint(forged) in str(refused.value) and key_fingerprint(real) in str(refused.value)
    with pytest.raises(CredentialError, match="not in the trust store"):
        pins.validate(Credential.basic(b"server"), real, 1)


def test_profile_config_refuses_to_trust_nobody_in_particular() -> None:
    priv, _ = keypair()
    with pytest.raises(ConfigurationError, match="insecure_accept_any_peer"):
        ProfileConfig(credential=Credential.basic(b"me"), signature_priv=priv)
    with pytest.raises(ConfigurationError, match="contradicts"):
        ProfileConfig(credential=Credential.basic(b"me"), signature_priv=priv, insecure_accept_any_peer=True,
                      authentication_service=PinnedKeys({}))


def test_insecure_accept_any_peer_works_and_warns_for_every_peer(caplog) -> None:
    priv_a, _ = keypair()
    priv_b, _ = keypair()
    alice, hello = TwoPartySession.initiator(ProfileConfig(credential=Credential.basic(b"alice"),
                                                           signature_priv=priv_a, insecure_accept_any_peer=True))
    bob = TwoPartySession.responder(ProfileConfig(credential=Credential.basic(b"bob"), signature_priv=priv_b,
                                                  insecure_accept_any_peer=True))
    with caplog.at_level(logging.WARNING):
        alice.receive(sent(bob.receive(hello[0].data))[0])  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in caplog.records if "WITHOUT authenticating" in r.getMessage()]
    assert any("alice" in w for w in warnings) and any("bob" in w for w in warnings)


def test_own_identity_need_not_be_pinned() -> None:
    (priv_a, pub_a), (priv_b, pub_b) = keypair(), keypair()
    alice, hello = TwoPartySession.initiator(ProfileConfig(
        credential=Credential.basic(b"alice"), signature_priv=priv_a,
        authentication_service=PinnedKeys({b"bob": {key_fingerprint(pub_b)}})))
    bob = TwoPartySession.responder(ProfileConfig(
        credential=Credential.basic(b"bob"), signature_priv=priv_b,
        authentication_service=PinnedKeys({b"alice": {key_fingerprint(pub_a)}})))
    alice.receive(sent(bob.receive(hello[0].data))[0])  # type: ignore[union-attr]
    assert alice.epoch == bob.epoch == 1


def test_trust_store_file_and_command_line_pins(tmp_path) -> None:
    _, key = keypair()
    print_ = key_fingerprint(key)
    store = tmp_path / "peers"
    store.write_text(f"# comment\nclient {print_}\n\nserver {print_.upper()}  # same key, upper case\n")
    pins = load_trust_store(store)
    pins.validate(Credential.basic(b"client"), key, 1)
    pins.validate(Credential.basic(b"server"), key, 1)
    assert parse_pin(f"client={print_}") == (b"client", print_)
    store.write_text("client sha256:1234\n")
    with pytest.raises(ConfigurationError, match=":1: "):
        load_trust_store(store)
    with pytest.raises(ConfigurationError, match="NAME=FINGERPRINT"):
        parse_pin("client")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_trust_store(tmp_path / "missing")


def test_trust_on_first_use_pins_and_then_refuses_a_changed_key(tmp_path) -> None:
    _, first = keypair()
    _, second = keypair()
    path = tmp_path / "state" / "trusted-peers"
    tofu = TrustOnFirstUse(path)
    tofu.validate(Credential.basic(b"client"), first, 1)  # accepted tentatively, nothing recorded
    assert not path.exists()
    tofu.confirmed(Credential.basic(b"client"), first)  # the connection was confirmed: pinned now
    tofu.validate(Credential.basic(b"client"), first, 1)
    reloaded = TrustOnFirstUse(path)  # survives a restart
    with pytest.raises(CredentialError) as refused:
        reloaded.validate(Credential.basic(b"client"), second, 1)
    assert key_fingerprint(first) in str(refused.value) and key_fingerprint(second) in str(refused.value)
    assert (path.stat().st_mode & 0o077) == 0 or path.parent.stat().st_mode & 0o077 == 0


def test_identity_key_file_is_private_and_stable(tmp_path) -> None:
    path = tmp_path / "id" / "signature.key"
    key = load_or_create_key(path, 1)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path, 1) == key
    assert fingerprint(key, 1) == key_fingerprint(get_suite(1).signature_public_key(key))
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_or_create_key(path, 1)


# -- security round 3: one decision, first use recorded only after confirmation ---------------------

def test_a_pinned_name_is_decided_by_its_pin_never_by_first_use(tmp_path) -> None:
    _, pinned = keypair()
    _, impostor = keypair()
    policy = TrustPolicy(pins={b"client": {key_fingerprint(pinned)}},
                         first_use=TrustOnFirstUse(tmp_path / "tofu"))
    policy.validate(Credential.basic(b"client"), pinned, 1)
    with pytest.raises(CredentialError, match="presented key"):
        policy.validate(Credential.basic(b"client"), impostor, 1)
    policy.confirmed(Credential.basic(b"client"), impostor)  # a pinned name is never recorded
    assert not (tmp_path / "tofu").exists()
    policy.validate(Credential.basic(b"newcomer"), impostor, 1)  # unpinned names: first use decides
    policy.confirmed(Credential.basic(b"newcomer"), impostor)
    assert read_pins(tmp_path / "tofu") == {b"newcomer": {key_fingerprint(impostor)}}


def test_pins_from_several_sources_are_one_union() -> None:
    _, one = keypair()
    _, two = keypair()
    policy = TrustPolicy(pins=merge_pins({b"peer": {key_fingerprint(one)}}, {b"peer": {key_fingerprint(two)}}))
    policy.validate(Credential.basic(b"peer"), one, 1)
    policy.validate(Credential.basic(b"peer"), two, 1)


def test_first_use_is_bounded_in_entries_and_identity_length(tmp_path) -> None:
    _, key = keypair()
    tofu = TrustOnFirstUse(tmp_path / "tofu", max_entries=2)
    for name in (b"a", b"b"):
        tofu.validate(Credential.basic(name), key, 1)
        tofu.confirmed(Credential.basic(name), key)
    with pytest.raises(CredentialError, match="holds 2 identities"):
        tofu.validate(Credential.basic(b"c"), key, 1)
    with pytest.raises(CredentialError, match="1 to 255 bytes"):
        TrustOnFirstUse(tmp_path / "other").validate(Credential.basic(b"x" * 256), key, 1)
    lines = (tmp_path / "tofu").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("#")  # a header, then one appended line per pin


def test_two_unconfirmed_first_uses_of_one_name_pin_only_the_first_confirmed(tmp_path) -> None:
    _, first = keypair()
    _, second = keypair()
    tofu = TrustOnFirstUse(tmp_path / "tofu")
    tofu.validate(Credential.basic(b"x"), first, 1)
    tofu.validate(Credential.basic(b"x"), second, 1)  # both tentative
    tofu.confirmed(Credential.basic(b"x"), second)
    with pytest.raises(CredentialError, match="pinned to another key"):
        tofu.confirmed(Credential.basic(b"x"), first)
    assert read_pins(tmp_path / "tofu") == {b"x": {key_fingerprint(second)}}


def test_an_identity_with_hash_and_spaces_round_trips_through_the_trust_file(tmp_path) -> None:
    _, key = keypair()
    identity = b"we#ird name%\n\xff"
    tofu = TrustOnFirstUse(tmp_path / "tofu")
    tofu.validate(Credential.basic(identity), key, 1)
    tofu.confirmed(Credential.basic(identity), key)
    restarted = TrustOnFirstUse(tmp_path / "tofu")  # the file still parses after a restart
    assert restarted.pins == {identity: {key_fingerprint(key)}}
    load_trust_store(tmp_path / "tofu").validate(Credential.basic(identity), key, 1)


@given(st.binary(max_size=300))
def test_identity_encoding_round_trips_any_bytes(identity: bytes) -> None:
    word = encode_identity(identity)
    assert decode_identity(word) == identity
    assert word.isascii() and " " not in word and "#" not in word and "\n" not in word


@given(st.text(max_size=40))
def test_identity_decoding_never_fails_unexpectedly(text: str) -> None:
    with contextlib.suppress(ConfigurationError):
        decode_identity(text)
