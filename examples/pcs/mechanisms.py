"""What every mechanism's run produces (:class:`Outcome`), and the one mechanism that is a model: EKU.

Extended Key Update (draft-ietf-tls-extended-key-update-13) has no
implementation to run, so it is a *model*, labelled as one wherever it
appears: an X25519 exchange per rekey feeds
``main' = HKDF-Extract(Derive-Secret(main, "derived", ""), shared)`` and the
new traffic secret is ``Derive-Secret(main', "c ap traffic", transcript)``,
on this project's TLS 1.3 record layer.  Its bytes per rekey are the draft's
three messages with X25519 key shares: request and response 41 bytes each,
finish 5, each in a record (22 bytes of overhead).  Every other mechanism runs
on a real stack (:mod:`examples.pcs.real_tls`, :mod:`examples.pcs.quic`, and
this project's mlstls/mlsquic).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519

from mlscore.errors import MLSError
from mlstls.record import ContentType, RecordProtection, aead_spec, hkdf_expand_label

SPEC = aead_spec(1)  # AES-128-GCM with SHA-256
HASH = hashes.SHA256
EKU_MESSAGES = (41, 41, 5)  # key_update_request, key_update_response (X25519 key shares), key_update_finish
RECORD_OVERHEAD = 5 + 1 + 16  # header, inner content type, AEAD tag


@dataclass
class RekeyCost:
    """One rekey, both sides: CPU, bytes on the wire (both directions), messages, round trips."""

    cpu_seconds: float = 0.0
    wire_bytes: int = 0
    round_trips: float = 0.0
    messages: int = 0
    source: str = ""  # how the figures were obtained, for the report


@dataclass
class Outcome:
    """What the thief could read after the theft, record by record (packets for QUIC)."""

    mechanism: str
    theft_at: int
    records: int
    unit: str = "records"
    new_connection: bool = False
    stack: str = ""
    readable_after_theft: list[bool] = field(default_factory=list)
    seconds_after_theft: list[float] = field(default_factory=list)
    rekey_marks: list[int] = field(default_factory=list)  # index of the first record after each rekey
    confirmation_lags: list[int] = field(default_factory=list)
    """Per rekey, records the committer wrote before it saw the confirmation (the round trip, in records):
    the old keys are used that long, however fast or loaded the machine."""
    healed_at: int | None = None  # first record after the theft the thief could not read
    healed_after_bytes: int | None = None
    healed_after_seconds: float | None = None
    cost: RekeyCost = field(default_factory=RekeyCost)
    rekeys: int = 0
    _start: float | None = None
    _sent: int = 0

    @property
    def heals(self) -> bool:
        """The thief reads nothing from some record on (the first unreadable one)."""
        return self.healed_at is not None and not any(self.readable_after_theft[self.healed_at :])

    def record(self, when: float, readable: bool, size: int) -> None:
        """One captured record (or packet) after the theft, in order."""
        if self._start is None:
            self._start = when
        self.readable_after_theft.append(readable)
        self.seconds_after_theft.append(when - self._start)
        if not readable and self.healed_at is None:
            self.healed_at = len(self.readable_after_theft) - 1
            self.healed_after_bytes = self._sent
            self.healed_after_seconds = when - self._start
        self._sent += size

    def mark_rekeys(self, record_times: list[float], rekey_times: list[float]) -> None:
        """Mark, for each rekey time, the first record captured after it."""
        self.rekey_marks = [next((i for i, when in enumerate(record_times) if when > at), len(record_times))
                            for at in rekey_times]


class EkuModel:
    """EKU's key schedule on our record layer (a model: nothing implements the draft)."""

    name = "tls-eku (model)"
    round_trips = 1.0
    messages = 3

    def __init__(self) -> None:
        self.main = os.urandom(32)
        self.secret = os.urandom(32)
        self.keys = RecordProtection(SPEC, self.secret)

    def seal(self, data: bytes) -> bytes:
        return bytes(self.keys.seal(ContentType.APPLICATION_DATA, data))

    def rekey(self) -> int:
        """New keys from a fresh X25519 exchange; returns the bytes the three messages take on the wire."""
        a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        shared = a.exchange(b.public_key())
        salt = hkdf_expand_label(HASH, self.main, b"derived", hashlib.sha256(b"").digest(), 32)
        self.main = hmac.digest(salt, shared, "sha256")
        transcript = hashlib.sha256(os.urandom(87)).digest()  # the request and response, as the thief saw them
        self.secret = hkdf_expand_label(HASH, self.main, b"c ap traffic", transcript, 32)
        self.keys = RecordProtection(SPEC, self.secret)
        return sum(EKU_MESSAGES) + len(EKU_MESSAGES) * RECORD_OVERHEAD


class StolenKeys:
    """A thief of the current traffic secret (and main secret) of the EKU model: the fresh share is out of reach."""

    def __init__(self, secret: bytes, sequence: int) -> None:
        self.keys = RecordProtection(SPEC, secret)
        self.keys.sequence = sequence

    def read(self, header: bytes, body: bytes) -> bool:
        try:
            self.keys.open(header, body)
            return True
        except MLSError:
            return False
