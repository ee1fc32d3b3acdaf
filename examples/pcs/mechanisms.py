"""The rekeying mechanisms under test, each as a sender, a receiver and an attacker.

Every mechanism protects application records with the TLS 1.3 record layer
(:mod:`mlstls.record`) and differs only in how it replaces keys:

* ``tls13-keyupdate``: RFC 8446 KeyUpdate, ``secret' = HKDF-Expand-Label(secret, "traffic upd")``;
* ``tls13-rehandshake``: a new (EC)DHE handshake, modelled as fresh X25519 per reconnection;
* ``tls-eku``: draft-ietf-tls-extended-key-update-13, modelled: an X25519 exchange
  feeds ``main' = HKDF-Extract(Derive-Secret(main, "derived"), shared)`` (no Python TLS
  stack implements EKU, so this follows its key schedule on our record layer);
* ``mlstls``: the real MLS-TLS connection of this project, rekeyed by MLS commits.

The attacker gets what a thief of the *current traffic secret* gets at the
moment of theft (and, for EKU, the main secret too), then tries to decrypt
every later record, deriving whatever it can from what it stole.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlscore.errors import MLSError
from mlstls.record import ContentType, RecordProtection, RecordSplitter, aead_spec, hkdf_expand_label

SPEC = aead_spec(1)  # AES-128-GCM with SHA-256, for every mechanism
HASH = hashes.SHA256


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt or bytes(32), ikm, "sha256")


def _x25519() -> bytes:
    """One fresh ephemeral exchange (both private keys are thrown away at once)."""
    a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    _ = b.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return a.exchange(b.public_key())


@dataclass
class RekeyCost:
    cpu_seconds: float = 0.0
    wire_bytes: int = 0
    round_trips: float = 0.0
    messages: int = 0


class ModelSender:
    """A record sender whose key replacement follows one TLS mechanism."""

    name = "model"
    round_trips = 0.0
    messages = 0

    def __init__(self) -> None:
        self.secret = os.urandom(32)
        self.main = os.urandom(32)
        self.keys = RecordProtection(SPEC, self.secret)

    def seal(self, data: bytes) -> bytes:
        return bytes(self.keys.seal(ContentType.APPLICATION_DATA, data))

    def rekey(self) -> bytes:
        """Replace the keys; returns the bytes the mechanism puts on the wire for it."""
        raise NotImplementedError

    def steal(self) -> dict:
        """What a thief of the traffic secret has; the record count it reads off the wire."""
        return {"secret": self.secret, "main": self.main, "sequence": self.keys.sequence}

    @staticmethod
    def attacker_next(secret: bytes, main: bytes) -> tuple[bytes, bytes] | None:
        """The (secret, main) after one rekey, as far as a thief can compute it; None if it cannot."""
        return None

    def _install(self, secret: bytes) -> None:
        self.secret = secret
        self.keys = RecordProtection(SPEC, secret)


class KeyUpdateSender(ModelSender):
    name = "tls13-keyupdate"
    round_trips = 0.0
    messages = 1

    def rekey(self) -> bytes:
        # KeyUpdate(update_not_requested)
        message = bytes(self.keys.seal(ContentType.HANDSHAKE, b"\x18\x00\x00\x01\x00"))
        self._install(hkdf_expand_label(HASH, self.secret, b"traffic upd", b"", 32))
        return message

    @staticmethod
    def attacker_next(secret: bytes, main: bytes) -> tuple[bytes, bytes] | None:
        return hkdf_expand_label(HASH, secret, b"traffic upd", b"", 32), main


class RehandshakeSender(ModelSender):
    name = "tls13-rehandshake"
    round_trips = 2.0  # a new connection: TCP's handshake, then TLS 1.3's one round trip
    messages = 3

    def rekey(self) -> bytes:
        shared = _x25519()
        handshake_secret = _extract(b"", shared)
        self.main = handshake_secret
        self._install(hkdf_expand_label(HASH, handshake_secret, b"c ap traffic", hashlib.sha256(shared).digest(), 32))
        return os.urandom(32 + 32 + 300)  # stand-in for ClientHello/ServerHello/Finished sizes


class PskSender(ModelSender):
    """TLS 1.3 resumption on a new connection from the resumption secret (``main`` here)."""

    name = "tls13-psk-dhe"
    round_trips = 2.0  # also a new connection
    messages = 3
    dhe = True

    def rekey(self) -> bytes:
        shared = _x25519() if self.dhe else b""
        early = _extract(b"", self.main)
        handshake = _extract(hkdf_expand_label(HASH, early, b"derived", hashlib.sha256(b"").digest(), 32),
                             shared or bytes(32))
        self._install(hkdf_expand_label(HASH, handshake, b"c ap traffic", b"", 32))
        self.main = hkdf_expand_label(HASH, handshake, b"res master", b"", 32)
        return os.urandom(200 + (32 if self.dhe else 0))

    @classmethod
    def attacker_next(cls, secret: bytes, main: bytes) -> tuple[bytes, bytes] | None:
        if cls.dhe:
            return None  # the fresh (EC)DHE share is not in what was stolen
        early = _extract(b"", main)
        handshake = _extract(hkdf_expand_label(HASH, early, b"derived", hashlib.sha256(b"").digest(), 32), bytes(32))
        return (hkdf_expand_label(HASH, handshake, b"c ap traffic", b"", 32),
                hkdf_expand_label(HASH, handshake, b"res master", b"", 32))


class PskOnlySender(PskSender):
    """psk_ke resumption (no DHE): the stolen resumption secret predicts every later key."""

    name = "tls13-psk-ke"
    dhe = False


class EkuSender(ModelSender):
    name = "tls-eku"
    round_trips = 1.0
    messages = 3

    def rekey(self) -> bytes:
        shared = _x25519()
        salt = hkdf_expand_label(HASH, self.main, b"derived", hashlib.sha256(b"").digest(), 32)
        self.main = _extract(salt, shared)
        transcript = hashlib.sha256(os.urandom(64)).digest()  # request and response key shares
        self._install(hkdf_expand_label(HASH, self.main, b"c ap traffic", transcript, 32))
        return os.urandom(41 + 41 + 5 + 3 * 22)  # request, response, finish (X25519), record overhead


class ChainAttacker:
    """Holds what was stolen (traffic secret and session secrets); follows every key it can derive."""

    def __init__(self, loot: dict, derive: type[ModelSender]) -> None:
        self.secret, self.main = loot["secret"], loot["main"]
        self.keys = RecordProtection(SPEC, self.secret)
        self.keys.sequence = loot["sequence"]
        self.derive = derive

    def read(self, header: bytes, body: bytes) -> bool:
        try:
            self.keys.open(header, body)
            return True
        except MLSError:
            pass
        derived = self.derive.attacker_next(self.secret, self.main)
        if derived is None:
            return False
        candidate = RecordProtection(SPEC, derived[0])
        try:
            candidate.open(header, body)
        except MLSError:
            return False
        (self.secret, self.main), self.keys = derived, candidate
        return True


def split_records(stream: bytes) -> list[tuple[bytes, bytes]]:
    return RecordSplitter().feed(stream)


@dataclass
class Outcome:
    mechanism: str
    theft_at: int
    records: int
    readable_after_theft: list[bool] = field(default_factory=list)
    healed_at: int | None = None  # first record index after theft the attacker could not read
    healed_after_bytes: int | None = None
    healed_after_seconds: float | None = None
    cost: RekeyCost = field(default_factory=RekeyCost)
    rekeys: int = 0
