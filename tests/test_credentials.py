"""X.509 credentials: chains to trust roots, key binding, suite fit, time, and every rejection."""

from __future__ import annotations

import datetime

import pytest

from mls2p.testing import ThrowawayCA
from mlscore.credentials import AnyOf, Credential, PinnedKeys, X509AuthenticationService, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import CredentialError

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def root() -> ThrowawayCA:
    return ThrowawayCA.root("test root", NOW)


@pytest.mark.parametrize("suite_id", [1, 2, 4, 5, 7])
@pytest.mark.parametrize("via_intermediate", [False, True])
def test_valid_chain_accepted(root: ThrowawayCA, suite_id: int, via_intermediate: bool) -> None:
    _, pub = get_suite(suite_id).generate_signature_key_pair()
    issuer = root.intermediate("intermediate", NOW) if via_intermediate else root
    credential = issuer.issue("alice", suite_id, pub, NOW)
    assert len(credential.certificates) == (2 if via_intermediate else 1)
    X509AuthenticationService([root.der], now=NOW).validate(credential, pub, suite_id)


def test_credential_round_trips(root: ThrowawayCA) -> None:
    _, pub = get_suite(1).generate_signature_key_pair()
    credential = root.intermediate("i", NOW).issue("alice", 1, pub, NOW)
    assert Credential.from_bytes(credential.to_bytes()) == credential


@pytest.mark.parametrize(("when", "message"), [
    (NOW + datetime.timedelta(days=60), "expired|not valid"),
    (NOW - datetime.timedelta(days=2), "not valid|before"),
])
def test_time_outside_validity_rejected(root: ThrowawayCA, when: datetime.datetime, message: str) -> None:
    _, pub = get_suite(1).generate_signature_key_pair()
    credential = root.issue("alice", 1, pub, NOW)
    with pytest.raises(CredentialError, match="chain rejected"):
        X509AuthenticationService([root.der], now=when).validate(credential, pub, 1)


def test_untrusted_root_rejected(root: ThrowawayCA) -> None:
    other = ThrowawayCA.root("other root", NOW)
    _, pub = get_suite(1).generate_signature_key_pair()
    with pytest.raises(CredentialError, match="chain rejected"):
        X509AuthenticationService([root.der], now=NOW).validate(other.issue("mallory", 1, pub, NOW), pub, 1)


def test_certificate_for_another_key_rejected(root: ThrowawayCA) -> None:
    suite = get_suite(1)
    _, pub = suite.generate_signature_key_pair()
    _, other = suite.generate_signature_key_pair()
    with pytest.raises(CredentialError, match="not the MLS signature key"):
        X509AuthenticationService([root.der], now=NOW).validate(root.issue("alice", 1, pub, NOW), other, 1)


def test_key_type_must_fit_the_suite(root: ThrowawayCA) -> None:
    _, pub = get_suite(2).generate_signature_key_pair()
    credential = root.issue("alice", 2, pub, NOW)
    with pytest.raises(CredentialError, match="does not match cipher suite 7"):
        X509AuthenticationService([root.der], now=NOW).validate(credential, pub, 7)


def test_garbage_empty_and_basic_rejected(root: ThrowawayCA) -> None:
    service = X509AuthenticationService([root.der], now=NOW)
    with pytest.raises(CredentialError, match="malformed"):
        service.validate(Credential.x509((b"not a certificate",)), b"", 1)
    with pytest.raises(CredentialError, match="empty"):
        service.validate(Credential.x509(()), b"", 1)
    with pytest.raises(CredentialError, match=r"not X\.509"):
        service.validate(Credential.basic(b"alice"), b"", 1)
    with pytest.raises(CredentialError, match="no trust roots"):
        X509AuthenticationService([], now=NOW)


def test_expected_names(root: ThrowawayCA) -> None:
    _, pub = get_suite(1).generate_signature_key_pair()
    credential = root.issue("alice", 1, pub, NOW)
    X509AuthenticationService([root.der], now=NOW, expected_names={"mls:alice"}).validate(credential, pub, 1)
    with pytest.raises(CredentialError, match="expected"):
        X509AuthenticationService([root.der], now=NOW, expected_names={"mls:bob"}).validate(credential, pub, 1)


def test_any_of(root: ThrowawayCA) -> None:
    _, alice_key = get_suite(1).generate_signature_key_pair()
    pins = PinnedKeys({b"alice": {key_fingerprint(alice_key)}})
    service = AnyOf(pins, X509AuthenticationService([root.der], now=NOW))
    service.validate(Credential.basic(b"alice"), alice_key, 1)
    with pytest.raises(CredentialError, match="not in the trust store"):
        service.validate(Credential.basic(b"eve"), alice_key, 1)


def test_x509_validity_is_checked_at_the_time_each_validation_passes(root: ThrowawayCA) -> None:
    _, pub = get_suite(1).generate_signature_key_pair()
    credential = root.issue("alice", 1, pub, NOW, days=30)
    service = X509AuthenticationService([root.der])  # no frozen time
    service.validate(credential, pub, 1, int(NOW.timestamp()))
    with pytest.raises(CredentialError, match="rejected"):
        service.validate(credential, pub, 1, int((NOW + datetime.timedelta(days=60)).timestamp()))
    with pytest.raises(CredentialError, match="no time"):
        service.validate(credential, pub, 1)


def test_a_certificate_with_an_impossible_version_is_a_credential_error(root: ThrowawayCA) -> None:
    _, pub = get_suite(1).generate_signature_key_pair()
    der = bytearray(root.issue("alice", 1, pub, NOW).certificates[0])
    index = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))  # [0] EXPLICIT INTEGER 2 (v3)
    der[index + 4] = 7  # not v1/v2/v3: cryptography raises InvalidVersion, not ValueError
    with pytest.raises(CredentialError, match="malformed certificate"):
        X509AuthenticationService([root.der], now=NOW).validate(Credential.x509((bytes(der),)), pub, 1)


def test_profile_with_x509_credentials(root: ThrowawayCA) -> None:
    """Both sides authenticate each other with certificates through the whole profile."""
    from mls2p import ProfileConfig, TwoPartySession
    from mls2p.testing import pump, sent

    service = X509AuthenticationService([root.der], now=NOW)
    configs = []
    for name in ("alice", "bob"):
        priv, pub = get_suite(1).generate_signature_key_pair()
        configs.append(ProfileConfig(credential=root.issue(name, 1, pub, NOW), signature_priv=priv,
                                     authentication_service=service))
    alice, hello = TwoPartySession.initiator(configs[0])
    bob = TwoPartySession.responder(configs[1])
    pump(alice, bob, sent(hello))
    pump(alice, bob, sent(alice.update()))
    assert alice.epoch == bob.epoch == 2

    untrusted = ThrowawayCA.root("evil", NOW)
    priv, pub = get_suite(1).generate_signature_key_pair()
    _mallory, hello = TwoPartySession.initiator(ProfileConfig(credential=untrusted.issue("mallory", 1, pub, NOW),
                                                             signature_priv=priv, insecure_accept_any_peer=True))
    victim = TwoPartySession.responder(configs[1])
    with pytest.raises(CredentialError):
        victim.receive(sent(hello)[0])
