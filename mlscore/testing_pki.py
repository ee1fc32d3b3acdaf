"""Throwaway certificate authorities for tests and demos (never for production keys).

Issues X.509 certificates whose subject key is an MLS signature key, so that
X.509 credentials can be exercised end to end without external tooling.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .credentials import Credential

_CURVES = {2: ec.SECP256R1, 5: ec.SECP521R1, 7: ec.SECP384R1}


def public_key_object(suite_id: int, signature_pub: bytes):
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


def _ca_builder(subject: x509.Name, issuer: x509.Name, public_key: object, issuer_key: object,
                now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))  # type: ignore[arg-type]


def self_signed_server_certificate(directory: str, hostname: str = "localhost",
                                   now: datetime.datetime | None = None) -> tuple[str, str]:
    """A self-signed ECDSA server certificate for ``hostname`` (PEM files: cert, key) for TLS tests."""
    import ipaddress
    from pathlib import Path

    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    folder = Path(directory)
    cert_path, key_path = folder / f"{hostname}.pem", folder / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)
