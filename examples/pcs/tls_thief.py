"""A passive TLS 1.3 thief: what it can decrypt from captured records with stolen secrets (RFC 8446).

It holds what a key log or a memory dump gives at the moment of compromise
(the client's application traffic secret, and for session resumption the
ticket's PSK) and follows every key it can derive afterwards:

* KeyUpdate: ``secret' = HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`` (section 7.2);
* a resumed connection with psk_ke (no (EC)DHE): its whole key schedule from the PSK and the
  handshake it captured (sections 7.1, 4.6.1), including the next ticket's PSK;
* a new full handshake, or psk_dhe_ke: nothing (the fresh (EC)DHE secret was never stolen).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from mlscore.errors import MLSError
from mlstls.record import AeadSpec, RecordProtection, hkdf_expand_label

from .relay import TO_CLIENT, TO_SERVER, Capture

HANDSHAKE, APPLICATION_DATA = 22, 23
SEQUENCE_SEARCH = 256
"""How many record sequence numbers the thief tries for the first record after the theft (it counts records
on the wire, but not which of them were KeyUpdates before it held the keys)."""

_SUITES = {  # RFC 8446 appendix B.4: cipher suite -> record protection
    0x1301: AeadSpec("aes-128-gcm", 16, hashes.SHA256, 1 << 62),
    0x1302: AeadSpec("aes-256-gcm", 32, hashes.SHA384, 1 << 62),
    0x1303: AeadSpec("chacha20-poly1305", 32, hashes.SHA256, 1 << 62),
}
_NAMES = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302, "TLS_CHACHA20_POLY1305_SHA256": 0x1303}


def suite_spec(suite: int | str) -> AeadSpec:
    """The record protection of a TLS 1.3 cipher suite, by number or by its IANA name."""
    return _SUITES[_NAMES[suite] if isinstance(suite, str) else suite]


def _hash_name(spec: AeadSpec) -> str:
    return spec.hash_algorithm().name


def _hash_len(spec: AeadSpec) -> int:
    return spec.hash_algorithm().digest_size


def extract(spec: AeadSpec, salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt or bytes(_hash_len(spec)), ikm, _hash_name(spec))


def derive_secret(spec: AeadSpec, secret: bytes, label: bytes, messages: bytes) -> bytes:
    digest = hashlib.new(_hash_name(spec), messages).digest()
    return hkdf_expand_label(spec.hash_algorithm, secret, label, digest, _hash_len(spec))


def next_traffic_secret(spec: AeadSpec, secret: bytes) -> bytes:
    """The application traffic secret after a KeyUpdate (RFC 8446 section 7.2)."""
    return hkdf_expand_label(spec.hash_algorithm, secret, b"traffic upd", b"", _hash_len(spec))


def ticket_psk(spec: AeadSpec, resumption_master_secret: bytes, ticket_nonce: bytes) -> bytes:
    """The PSK of a NewSessionTicket (RFC 8446 section 4.6.1)."""
    return hkdf_expand_label(spec.hash_algorithm, resumption_master_secret, b"resumption", ticket_nonce,
                             _hash_len(spec))


def _messages(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, whole message) of the handshake messages in ``payload``."""
    position = 0
    while position + 4 <= len(payload):
        end = position + 4 + int.from_bytes(payload[position + 1 : position + 4], "big")
        yield payload[position], payload[position:end]
        position = end


class KeyFollower:
    """Opens one direction's records with a secret, following KeyUpdates it can derive."""

    def __init__(self, spec: AeadSpec, secret: bytes, *, search: int = 0) -> None:
        self.spec, self.secret = spec, secret
        self.keys = RecordProtection(spec, secret)
        self._search = search

    def open(self, header: bytes, body: bytes) -> bytes | None:
        """The inner plaintext (content type last) or None; tries the next KeyUpdate secret too."""
        start = self.keys.sequence
        for sequence in range(start, start + self._search + 1):
            self.keys.sequence = sequence
            opened = self._try(self.keys, header, body)
            if opened is not None:
                self._search = 0
                return opened
        self.keys.sequence = start
        candidate = RecordProtection(self.spec, next_traffic_secret(self.spec, self.secret))
        opened = self._try(candidate, header, body)
        if opened is not None:
            self.secret, self.keys = next_traffic_secret(self.spec, self.secret), candidate
        return opened

    @staticmethod
    def _try(keys: RecordProtection, header: bytes, body: bytes) -> bytes | None:
        try:
            kind, payload = keys.open(header, body)
        except MLSError:
            return None
        return bytes(payload) + bytes([kind])


@dataclass
class ResumedKeys:
    """What a psk_ke thief derives for one resumed connection."""

    client_handshake: bytes
    client_application: bytes
    next_psk: bytes | None


def psk_ke_connection(psk: bytes, capture: Capture) -> ResumedKeys | None:
    """The keys of a connection resumed from ``psk`` *if* it used psk_ke; None if they do not fit.

    Everything else comes from the captured handshake: ClientHello and ServerHello in the clear,
    then the server's encrypted flight and the client's Finished, opened with the derived keys.
    """
    client_records, server_records = capture.records(TO_SERVER), capture.records(TO_CLIENT)
    client_hello = b"".join(body for _, header, body in client_records if header[0] == HANDSHAKE)
    server_hello = b"".join(body for _, header, body in server_records if header[0] == HANDSHAKE)
    if len(server_hello) < 40:
        return None
    session_id_length = server_hello[38]
    suite = int.from_bytes(server_hello[39 + session_id_length : 41 + session_id_length], "big")
    if suite not in _SUITES:
        return None
    spec = _SUITES[suite]
    zero = bytes(_hash_len(spec))
    early = extract(spec, zero, psk)
    handshake = extract(spec, derive_secret(spec, early, b"derived", b""), zero)  # psk_ke: no (EC)DHE input
    transcript = client_hello + server_hello
    server_keys = KeyFollower(spec, derive_secret(spec, handshake, b"s hs traffic", transcript))
    client_handshake = derive_secret(spec, handshake, b"c hs traffic", transcript)
    server_flight = b""
    for _, header, body in server_records:
        if header[0] != APPLICATION_DATA:
            continue
        inner = server_keys.open(header, body)
        if inner is None:
            return None  # the server mixed in (EC)DHE: psk_dhe_ke, out of the thief's reach
        server_flight += inner[:-1]
        if any(kind == 20 for kind, _ in _messages(server_flight)):  # the server's Finished
            break
    transcript += server_flight
    main = extract(spec, derive_secret(spec, handshake, b"derived", b""), zero)
    client_application = derive_secret(spec, main, b"c ap traffic", transcript)
    # The next ticket: resumption_master_secret over the transcript through the client's Finished,
    # and the nonce from the NewSessionTicket the server sends under its application keys.
    client_finished = next((KeyFollower(spec, client_handshake).open(h, b) for _, h, b in client_records
                            if h[0] == APPLICATION_DATA), None)
    next_psk = None
    if client_finished is not None:
        resumption = derive_secret(spec, main, b"res master", transcript + client_finished[:-1])
        server_app = KeyFollower(spec, derive_secret(spec, main, b"s ap traffic", transcript))
        for _, header, body in server_records:
            inner = server_app.open(header, body) if header[0] == APPLICATION_DATA else None
            if inner is None or inner[-1] != HANDSHAKE:
                continue
            for kind, message in _messages(inner[:-1]):
                if kind == 4:  # NewSessionTicket: lifetime(4) age_add(4) nonce<0..255>
                    nonce = message[12 : 13 + message[12]][1:]
                    next_psk = ticket_psk(spec, resumption, nonce)
    return ResumedKeys(client_handshake, client_application, next_psk)
