"""Credentials (RFC 9420 section 5.3) and the authentication service interface.

The core never decides on its own whether an identity is acceptable: it asks
an :class:`AuthenticationService`.  :class:`BasicCredentialPolicy` is the
trivial one for tests and demos; X.509 chains are verified by
:class:`X509AuthenticationService`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, Self

from .codec import Reader, Struct, Writer
from .errors import CredentialError, DecodeError


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
