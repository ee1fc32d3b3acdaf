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
from mlstls.record import SUITE_AEADS, ContentType, RecordProtection, RecordSplitter, hkdf_expand_label

SPEC = SUITE_AEADS[1]  # AES-128-GCM with SHA-256, for every mechanism
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
        return self.keys.seal(ContentType.APPLICATION_DATA, data)

    def rekey(self) -> bytes:
        """Replace the keys; returns the bytes the mechanism puts on the wire for it."""
        raise NotImplementedError

    def steal(self) -> dict:
        """What a thief of the traffic secret has; the record count it reads off the wire."""
        return {"secret": self.secret, "main": self.main, "sequence": self.keys.sequence}

    def _install(self, secret: bytes) -> None:
        self.secret = secret
        self.keys = RecordProtection(SPEC, secret)


class KeyUpdateSender(ModelSender):
    name = "tls13-keyupdate"
    round_trips = 0.0
    messages = 1

    def rekey(self) -> bytes:
        message = self.keys.seal(ContentType.HANDSHAKE, b"\x18\x00\x00\x01\x00")  # KeyUpdate(update_not_requested)
        self._install(hkdf_expand_label(HASH, self.secret, b"traffic upd", b"", 32))
        return message


class RehandshakeSender(ModelSender):
    name = "tls13-rehandshake"
    round_trips = 1.0  # plus TCP's, for a new connection
    messages = 3

    def rekey(self) -> bytes:
        shared = _x25519()
        handshake_secret = _extract(b"", shared)
        self.main = handshake_secret
        self._install(hkdf_expand_label(HASH, handshake_secret, b"c ap traffic", hashlib.sha256(shared).digest(), 32))
        return os.urandom(32 + 32 + 300)  # stand-in for ClientHello/ServerHello/Finished sizes


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
    """Holds a stolen secret; follows every key it can derive without ephemeral secrets."""

    def __init__(self, loot: dict, follows_keyupdate: bool) -> None:
        self.secret = loot["secret"]
        self.keys = RecordProtection(SPEC, self.secret)
        self.keys.sequence = loot["sequence"]
        self.follows_keyupdate = follows_keyupdate

    def read(self, header: bytes, body: bytes) -> bool:
        try:
            self.keys.open(header, body)
            return True
        except MLSError:
            pass
        if self.follows_keyupdate:
            nxt = hkdf_expand_label(HASH, self.secret, b"traffic upd", b"", 32)
            candidate = RecordProtection(SPEC, nxt)
            try:
                candidate.open(header, body)
            except MLSError:
                return False
            self.secret, self.keys = nxt, candidate
            return True
        return False


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
