"""Helpers for tests, demos and benchmarks: throwaway keys and PKI, in-memory session pairs.

Never for production keys.  ``ThrowawayCA`` issues X.509 certificates whose
subject key is an MLS signature key, so X.509 credentials can be exercised
end to end without external tooling; :class:`Pair` drives two sessions
against each other in memory, with no transport and no clock.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlscore.apq import APQMode, APQPair
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.group import Group, GroupConfig
from mlscore.key_package import KeyPackageBundle, create_key_package
from mlscore.messages import Add

from .bootstrap import persist_to
from .config import ProfileConfig
from .session import KeysChanged, SendMessage, SessionAction, TwoPartySession
from .store import MemorySessionStore

_CURVES: dict[int, type[ec.EllipticCurve]] = {2: ec.SECP256R1, 5: ec.SECP521R1, 7: ec.SECP384R1}
_SignaturePublicKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | ec.EllipticCurvePublicKey


def public_key_object(suite_id: int, signature_pub: bytes) -> _SignaturePublicKey:
    """The `cryptography` public key object for an MLS signature key."""
    if suite_id in (1, 3):
        return ed25519.Ed25519PublicKey.from_public_bytes(signature_pub)
    if suite_id in (4, 6):
        return ed448.Ed448PublicKey.from_public_bytes(signature_pub)
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[suite_id](), signature_pub)


@dataclass
class ThrowawayCA:
    """A root CA (ECDSA P-256) that issues leaf and intermediate certificates."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate
    parent: ThrowawayCA | None = None

    @classmethod
    def root(cls, name: str, now: datetime.datetime, days: int = 365) -> ThrowawayCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = _ca_builder(subject, subject, key.public_key(), key.public_key(), now, days).sign(
            key, hashes.SHA256())
        return cls(name, key, certificate)

    def intermediate(self, name: str, now: datetime.datetime, days: int = 365) -> ThrowawayCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = _ca_builder(subject, self.certificate.subject, key.public_key(), self.key.public_key(),
                                  now, days).sign(self.key, hashes.SHA256())
        return ThrowawayCA(name, key, certificate, self)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def chain(self) -> list[bytes]:
        """This CA and its parents below the root, for a leaf's credential."""
        out = []
        ca: ThrowawayCA | None = self
        while ca is not None and ca.parent is not None:
            out.append(ca.der)
            ca = ca.parent
        return out

    def issue(self, identity: str, suite_id: int, signature_pub: bytes, now: datetime.datetime,
              days: int = 30, *, not_before: datetime.datetime | None = None) -> Credential:
        """An X.509 credential (leaf + intermediates) for an MLS signature key."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
        start = not_before or now - datetime.timedelta(hours=1)
        leaf = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                .public_key(public_key_object(suite_id, signature_pub))
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                      ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"mls:{identity}"),
                                                            x509.DNSName(identity)]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return Credential.x509((leaf.public_bytes(serialization.Encoding.DER), *self.chain()))


def _ca_builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                issuer_key: ec.EllipticCurvePublicKey, now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))


def self_signed_certificate(hostname: str, *, days: int = 2, now: datetime.datetime | None = None
                            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA certificate for ``hostname`` (a DNS name or an IP address) valid for ``days``."""
    import ipaddress

    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate, key


def self_signed_server_certificate(directory: str, hostname: str = "localhost",
                                   now: datetime.datetime | None = None) -> tuple[str, str]:
    """A self-signed ECDSA server certificate for ``hostname`` (PEM files: cert, key) for TLS tests."""
    from pathlib import Path

    certificate, key = self_signed_certificate(hostname, now=now)
    folder = Path(directory)
    cert_path, key_path = folder / f"{hostname}.pem", folder / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


# -- groups in memory ----------------------------------------------------------------------------

def bundle(name: bytes, suite_id: int = 1) -> KeyPackageBundle:
    """A KeyPackage (with its private keys) for a basic credential ``name``."""
    signature_priv, _ = get_suite(suite_id).generate_signature_key_pair()
    return create_key_package(suite_id, Credential.basic(name), signature_priv)


def two_party(suite_id: int = 1, config: GroupConfig | None = None) -> tuple[Group, Group]:
    """Alice creates a group and adds Bob; both at epoch 1."""
    alice = Group.create(bundle(b"alice", suite_id), config=config)
    bob_bundle = bundle(b"bob", suite_id)
    result = alice.commit([Add(bob_bundle.key_package)], force_path=False)
    assert result.welcome is not None
    bob = Group.join(result.welcome.to_bytes(), bob_bundle, config=config)
    return result.group, bob


def apq_two_party(t_suite: int = 1, pq_suite: int = 0x0051, mode: APQMode = APQMode.CONFIDENTIALITY,
                  config: GroupConfig | None = None) -> tuple[APQPair, APQPair]:
    """Alice creates an APQ-MLS pair and adds Bob by a FULL commit; Bob joins from the two Welcomes."""
    alice = APQPair.create(bundle(b"alice", t_suite), bundle(b"alice", pq_suite), mode=mode, config=config)
    bob_t, bob_pq = bundle(b"bob", t_suite), bundle(b"bob", pq_suite)
    added = alice.commit_full(add=(bob_t.key_package, bob_pq.key_package))
    assert added.pq_welcome is not None and added.t_welcome is not None
    return added.pair, APQPair.join(added.pq_welcome, added.t_welcome, bob_t, bob_pq, config=config)


# -- sessions in memory -------------------------------------------------------------------------

TEST_PINS: dict[bytes, set[str]] = {}
"""Identity -> fingerprints of every key :func:`config` made: test sessions trust each other by key."""


def trusted_test_peers() -> PinnedKeys:
    """Trust every key made by :func:`config` (and nothing else: a fresh key under a known name is refused)."""
    return PinnedKeys(TEST_PINS)


def config(name: bytes, suite_id: int = 1, **overrides: Any) -> ProfileConfig:
    """A ProfileConfig with a basic credential ``name`` and a fresh signature key, pinned in :data:`TEST_PINS`.

    Unless ``overrides`` say otherwise, it trusts every other key made here.  With APQ on an ML-DSA suite
    (mode 1), the ML-DSA key is made and pinned too.
    """
    signature_priv, signature_pub = get_suite(suite_id).generate_signature_key_pair()
    TEST_PINS.setdefault(name, set()).add(key_fingerprint(signature_pub))
    apq_suite = get_suite(overrides.get("apq_suite", 0x0051))
    if (overrides.get("apq", "off") != "off" and "apq_signature_priv" not in overrides
            and apq_suite.signature_scheme != get_suite(suite_id).signature_scheme):
        overrides["apq_signature_priv"], pq_pub = apq_suite.generate_signature_key_pair()
        TEST_PINS[name].add(key_fingerprint(pq_pub))
    if "insecure_accept_any_peer" not in overrides:
        overrides.setdefault("authentication_service", trusted_test_peers())
    return ProfileConfig(credential=Credential.basic(name), signature_priv=signature_priv,
                         cipher_suite=suite_id, **overrides)


def impersonator(name: bytes, suite_id: int = 1) -> ProfileConfig:
    """An attacker's config: a pinned name (``name``), but a fresh key that nobody pinned."""
    if name not in TEST_PINS:
        config(name, suite_id)  # the real owner of the name exists, whatever ran before
    signature_priv, _ = get_suite(suite_id).generate_signature_key_pair()
    return ProfileConfig(credential=Credential.basic(name), signature_priv=signature_priv, cipher_suite=suite_id,
                         authentication_service=trusted_test_peers())


def sent(actions: list[SessionAction]) -> list[bytes]:
    """The bytes of every SendMessage, in order."""
    return [a.data for a in actions if isinstance(a, SendMessage)]


def keys(actions: list[SessionAction]) -> list[int]:
    """The epoch of every KeysChanged, in order."""
    return [a.epoch for a in actions if isinstance(a, KeysChanged)]


def pump(a: TwoPartySession, b: TwoPartySession, a_out: list[bytes], b_out: list[bytes] | None = None) -> None:
    """Deliver messages both ways (a's to b, b's to a) until both sides are quiet."""
    b_pending = list(b_out or [])
    a_pending = list(a_out)
    while a_pending or b_pending:
        if a_pending:
            b_pending += sent(b.receive(a_pending.pop(0)))
        if b_pending:
            a_pending += sent(a.receive(b_pending.pop(0)))


class Pair:
    """Alice (initial initiator) and Bob, established, each persisting to its own store."""

    def __init__(self, suite_id: int = 1, **overrides: Any) -> None:
        self.alice_store = MemorySessionStore()
        self.bob_store = MemorySessionStore()
        self.alice_config = config(b"alice", suite_id, **overrides)
        self.bob_config = config(b"bob", suite_id, **overrides)
        self.alice, hello = TwoPartySession.initiator(self.alice_config, on_state_change=persist_to(self.alice_store))
        self.bob = TwoPartySession.responder(self.bob_config, on_state_change=persist_to(self.bob_store))
        pump(self.alice, self.bob, sent(hello))

    @property
    def group_id(self) -> bytes:
        group_id = self.alice.group_id or self.bob.group_id
        assert group_id is not None
        return group_id

    def restart(self) -> None:
        """Both processes die and come back from their stores (the connection is gone too)."""
        group_id = self.group_id
        alice_state, bob_state = self.alice_store.load(group_id), self.bob_store.load(group_id)
        assert alice_state is not None and bob_state is not None
        self.alice = TwoPartySession.from_state(alice_state, self.alice_config, on_state_change=persist_to(
            self.alice_store, loaded=alice_state, group_id=group_id))
        self.bob = TwoPartySession.from_state(bob_state, self.bob_config, on_state_change=persist_to(
            self.bob_store, loaded=bob_state, group_id=group_id))

    def in_sync(self) -> bool:
        a, b = self.alice, self.bob
        return (a.epoch == b.epoch and a.pending is None and b.pending is None
                and a.export_secret("check", b"", 16) == b.export_secret("check", b"", 16))
