"""Credentials (RFC 9420 section 5.3) and the authentication service interface.

The core never decides on its own whether an identity is acceptable: it asks
an :class:`AuthenticationService`, which must bind the credential to the
signature key (section 5.3.1: a name alone is not an identity).  Two ship here:
:class:`PinnedKeys` accepts basic credentials whose signature key is pinned
for their identity, :class:`X509AuthenticationService` verifies X.509 chains
whose leaf key is the signature key.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, Self

from .codec import Reader, Struct, Writer
from .errors import ConfigurationError, CredentialError, DecodeError

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

    def __post_init__(self) -> None:
        # Checked here, where the mistake is made: a str identity would otherwise be accepted and fail
        # only when the first handshake encodes it, as an InternalError far from the caller's code.
        if isinstance(self.credential_type, bool) or not isinstance(self.credential_type, int):
            raise ConfigurationError(f"Credential: credential_type must be an int (CredentialType), "
                                     f"not {type(self.credential_type).__name__}")
        if not isinstance(self.identity, bytes):
            hint = f" (use {self.identity!r}.encode())" if isinstance(self.identity, str) else ""
            raise ConfigurationError(f"Credential: identity must be bytes, not {type(self.identity).__name__}"
                                     + hint)
        if not isinstance(self.certificates, tuple) or not all(isinstance(c, bytes) for c in self.certificates):
            raise ConfigurationError("Credential: certificates must be a tuple of DER certificates (bytes)")

    @classmethod
    def basic(cls, identity: bytes | bytearray | memoryview) -> Credential:
        """A basic credential naming ``identity`` (bytes: the name the peer pins a key for)."""
        if isinstance(identity, bytearray | memoryview):
            identity = bytes(identity)
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, certificates: Iterable[bytes]) -> Credential:
        """An X.509 credential: the chain as DER certificates, leaf first."""
        if isinstance(certificates, bytes | bytearray | memoryview | str):
            # tuple() of one DER blob would be a tuple of ints, refused later with a less useful message
            raise ConfigurationError("Credential.x509: certificates must be a sequence of DER certificates "
                                     "(leaf first), not one certificate; wrap it: (der,)")
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
    """Decides whether a credential is acceptable *and* bound to ``signature_key``.

    ``validate`` raises :class:`CredentialError` (with a message naming the
    identity and why) to reject; it returns nothing.  ``now`` (seconds since
    the Unix epoch) is the time to check validity periods against; the core
    never reads a clock, so it is None when the caller gave no time.
    """

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None: ...


FINGERPRINT_PREFIX = "sha256:"


def key_fingerprint(signature_key: bytes) -> str:
    """``sha256:<hex>`` of a signature public key in its RFC 9420 wire form: what peers pin."""
    return FINGERPRINT_PREFIX + hashlib.sha256(signature_key).hexdigest()


class PinnedKeys:
    """Basic credentials bound to keys: ``identity`` is accepted only with a key pinned for it.

    ``pins`` maps identities to the fingerprints (:func:`key_fingerprint`) of
    the keys each may use; it is read at every validation, so a caller may
    keep a live mapping.
    """

    def __init__(self, pins: Mapping[bytes, Iterable[str]]) -> None:
        self.pins = pins

    def __repr__(self) -> str:
        return f"PinnedKeys({len(self.pins)} identities)"

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        if credential.credential_type != CredentialType.BASIC:
            raise CredentialError(f"credential type {credential.credential_type} is not a basic credential")
        identity = credential.identity
        pinned = self.pins.get(identity)
        if pinned is None:
            raise CredentialError(f"identity {_show(identity)} is not in the trust store")
        presented = key_fingerprint(signature_key)
        allowed = sorted(pinned)
        if presented not in allowed:
            shown = " or ".join(allowed[:2]) + (f" (or {len(allowed) - 2} more)" if len(allowed) > 2 else "")
            raise CredentialError(f"identity {_show(identity)} presented key {presented}, but the key pinned "
                                  f"for it is {shown or 'none'}")


def _show(identity: bytes) -> str:
    """An identity for an error message: printable ASCII as is, anything else as hex, bounded."""
    text = identity[:64].decode("ascii", "replace")
    shown = repr(text) if text.isprintable() and "\ufffd" not in text else identity[:32].hex()
    return shown + ("..." if len(identity) > 64 else "")


MAX_CHAIN_LENGTH = 8
"""Longest X.509 chain accepted (leaf and intermediates): a bound on work before any signature checks."""

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
    """Accept X.509 credentials whose chain verifies to one of ``trust_roots``.

    The chain (leaf first) is verified with `cryptography`'s X.509 path
    validation (client policy: the leaf must be an end-entity certificate),
    and the leaf's public key must be the MLS signature key.  Validity is
    checked at the ``now`` each validation passes in (the transports pass the
    current time); ``now`` given here is used when a validation brings none,
    and with neither the chain is refused: a certificate never goes unchecked
    for time.  ``expected_names`` optionally restricts the accepted subject
    alternative names (DNS names or URIs).
    """

    def __init__(self, trust_roots: list[bytes] | list[x509.Certificate], *, now: datetime.datetime | None = None,
                 expected_names: set[str] | None = None) -> None:
        from cryptography import x509
        from cryptography.x509.verification import Store

        roots = [root if isinstance(root, x509.Certificate) else _load_certificate(root)
                 for root in trust_roots]
        if not roots:
            raise CredentialError("no trust roots configured")
        self._roots = roots
        self._store = Store(roots)
        self._now = now
        self.expected_names = expected_names

    def at(self, now: datetime.datetime) -> X509AuthenticationService:
        """The same policy, with ``now`` as the default time."""
        return X509AuthenticationService(self._roots, now=now, expected_names=self.expected_names)

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        from cryptography.x509.verification import PolicyBuilder, VerificationError

        when = datetime.datetime.fromtimestamp(now, datetime.UTC) if now is not None else self._now
        if when is None:
            raise CredentialError("no time to check the certificate's validity against")

        if credential.credential_type != CredentialType.X509:
            raise CredentialError(f"credential type {credential.credential_type} is not X.509")
        if not credential.certificates:
            raise CredentialError("empty X.509 certificate chain")
        if len(credential.certificates) > MAX_CHAIN_LENGTH:
            raise CredentialError(f"certificate chain of {len(credential.certificates)} certificates "
                                  f"(at most {MAX_CHAIN_LENGTH})")
        chain = [_load_certificate(der) for der in credential.certificates]
        leaf = chain[0]
        verifier = PolicyBuilder().store(self._store).time(when).build_client_verifier()
        try:
            verified = verifier.verify(leaf, chain[1:])
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

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        reasons = []
        for service in self.services:
            try:
                service.validate(credential, signature_key, suite_id, now)
                return
            except CredentialError as exc:
                reasons.append(str(exc))
        raise CredentialError("; ".join(reasons) or "no authentication service configured")


def _load_certificate(der: bytes) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der)
    except Exception as exc:  # cryptography raises ValueError, InvalidVersion, ... on hostile DER
        raise CredentialError(f"malformed certificate: {type(exc).__name__}: {exc}") from None
