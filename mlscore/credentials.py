"""Credentials (RFC 9420 section 5.3) and the authentication service interface.

The core never decides on its own whether an identity is acceptable: it asks
an :class:`AuthenticationService`.  :class:`BasicCredentialPolicy` is the
trivial one for tests and demos; X.509 chains are verified by
:class:`X509AuthenticationService`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, Self

from .codec import Reader, Struct, Writer
from .errors import CredentialError, DecodeError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes


class CredentialType(IntEnum):
    BASIC = 1
    X509 = 2


@dataclass(frozen=True)
class Credential(Struct):
    """A basic identity or an X.509 chain (leaf first).

    ``identity`` is set for basic credentials, ``certificates`` (DER) for X.509.
    """

    credential_type: int
    identity: bytes = b""
    certificates: tuple[bytes, ...] = ()

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, certificates: tuple[bytes, ...]) -> Credential:
        return cls(CredentialType.X509, certificates=tuple(certificates))

    def encode(self, w: Writer) -> None:
        w.u16(self.credential_type)
        if self.credential_type == CredentialType.BASIC:
            w.opaque(self.identity)
        elif self.credential_type == CredentialType.X509:
            w.vector(self.certificates, Writer.opaque)
        else:
            raise DecodeError(f"cannot encode credential type {self.credential_type}")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        credential_type = r.u16()
        if credential_type == CredentialType.BASIC:
            return cls(credential_type, identity=r.opaque())
        if credential_type == CredentialType.X509:
            return cls(credential_type, certificates=tuple(r.vector(Reader.opaque)))
        raise DecodeError(f"unknown credential type {credential_type}")


class AuthenticationService(Protocol):
    """Decides whether a credential is acceptable and bound to a signature key.

    ``validate`` raises :class:`CredentialError` to reject; it returns nothing.
    """

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int) -> None: ...


class BasicCredentialPolicy:
    """Accept basic credentials, optionally only from a set of identities.

    With ``allowed=None`` every basic identity is accepted: only for tests and
    demos where the peer is authenticated by other means.
    """

    def __init__(self, allowed: set[bytes] | None = None) -> None:
        self.allowed = allowed

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int) -> None:
        if credential.credential_type != CredentialType.BASIC:
            raise CredentialError(f"credential type {credential.credential_type} not accepted")
        if self.allowed is not None and credential.identity not in self.allowed:
            raise CredentialError(f"identity {credential.identity!r} is not allowed")


_SUITE_KEY_TYPES = {1: "ed25519", 2: "p256", 3: "ed25519", 4: "ed448", 5: "p521", 6: "ed448", 7: "p384"}


def _raw_public_key(public_key: CertificatePublicKeyTypes, suite_id: int) -> bytes:
    """The certificate key in MLS signature-key form, checking it fits the suite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

    wanted = _SUITE_KEY_TYPES.get(suite_id)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        kind = "ed25519"
    elif isinstance(public_key, ed448.Ed448PublicKey):
        kind = "ed448"
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}.get(public_key.curve.name, "")
    else:
        kind = type(public_key).__name__
    if kind != wanted:
        raise CredentialError(f"certificate key type {kind} does not match cipher suite {suite_id} ({wanted})")
    if kind.startswith("ed"):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)


class X509AuthenticationService:
    """Accept X.509 credentials whose chain verifies to one of ``trust_roots`` at time ``now``.

    The chain (leaf first) is verified with `cryptography`'s X.509 path
    validation (client policy: the leaf must be an end-entity certificate),
    and the leaf's public key must be the MLS signature key.  ``now`` is
    required because the core never reads a clock: transports pass the
    current time when they build the service (or call :meth:`at`).
    ``expected_names`` optionally restricts the accepted subject alternative
    names (DNS names or URIs).
    """

    def __init__(self, trust_roots: list[bytes] | list[x509.Certificate], *, now: datetime.datetime,
                 expected_names: set[str] | None = None) -> None:
        from cryptography import x509
        from cryptography.x509.verification import PolicyBuilder, Store

        roots = [root if isinstance(root, x509.Certificate) else _load_certificate(root)
                 for root in trust_roots]
        if not roots:
            raise CredentialError("no trust roots configured")
        self._roots = roots
        self._now = now
        self._verifier = PolicyBuilder().store(Store(roots)).time(now).build_client_verifier()
        self.expected_names = expected_names

    def at(self, now: datetime.datetime) -> X509AuthenticationService:
        """The same policy, evaluated at another time."""
        return X509AuthenticationService(self._roots, now=now, expected_names=self.expected_names)

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int) -> None:
        from cryptography.x509.verification import VerificationError

        if credential.credential_type != CredentialType.X509:
            raise CredentialError(f"credential type {credential.credential_type} is not X.509")
        if not credential.certificates:
            raise CredentialError("empty X.509 certificate chain")
        chain = [_load_certificate(der) for der in credential.certificates]
        leaf = chain[0]
        try:
            verified = self._verifier.verify(leaf, chain[1:])
        except VerificationError as exc:
            raise CredentialError(f"certificate chain rejected: {exc}") from None
        except ValueError as exc:
            raise CredentialError(f"certificate chain rejected: {exc}") from None
        if _raw_public_key(leaf.public_key(), suite_id) != signature_key:
            raise CredentialError("the certificate's public key is not the MLS signature key")
        if self.expected_names is not None:
            names = {getattr(name, "value", str(name)) for name in (verified.subjects or [])}
            if not names & self.expected_names:
                raise CredentialError(f"certificate names {sorted(names)} are not among the expected "
                                      f"{sorted(self.expected_names)}")


class AnyOf:
    """Accept a credential if any of several authentication services accepts it."""

    def __init__(self, *services: AuthenticationService) -> None:
        self.services = services

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int) -> None:
        reasons = []
        for service in self.services:
            try:
                service.validate(credential, signature_key, suite_id)
                return
            except CredentialError as exc:
                reasons.append(str(exc))
        raise CredentialError("; ".join(reasons) or "no authentication service configured")


def _load_certificate(der: bytes) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CredentialError(f"malformed certificate: {exc}") from None
