"""The TLS 1.3 key schedule with the MLS exporter in the (EC)DHE slot (draft-housley-tls-using-mls-handshake
section 6.1, docs/housley.md "Key schedule").

RFC 8446 section 7.1, where the shared secret an (EC)DHE exchange would give is
``S_e = MLS-Exporter("TLS shared secret", "", Hash.length)`` of MLS epoch ``e``.
The handshake's epoch gives the handshake traffic secrets, both Finished keys
and the first application traffic secrets; every later epoch gives new
application traffic secrets from the same frozen transcript ``TH_SF``
(ClientHello .. server Finished), so both directions get keys from a fresh
commit (RFC 8446's KeyUpdate only ratchets one direction forward).

Built from tlslite-ng's public key-derivation functions; pure functions of
bytes, no state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ._tlslite_compat import CipherSuite, HKDF_expand_label, secureHMAC

EXPORTER_LABEL = "TLS shared secret"


@dataclass(frozen=True)
class TlsSuite:
    """A TLS 1.3 cipher suite as the key schedule needs it."""

    code: int
    hash_name: str

    @property
    def hash_len(self) -> int:
        return hashlib.new(self.hash_name).digest_size

    def transcript_hash(self, messages: bytes) -> bytes:
        return hashlib.new(self.hash_name, messages).digest()


TLS_SUITES = {suite.code: suite for suite in (
    TlsSuite(CipherSuite.TLS_AES_128_GCM_SHA256, "sha256"),
    TlsSuite(CipherSuite.TLS_AES_256_GCM_SHA384, "sha384"),
    TlsSuite(CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "sha256"),
)}
"""The TLS 1.3 suites the mode offers and accepts, in our order of preference."""


def _extract(salt: bytes, ikm: bytes, suite: TlsSuite) -> bytes:
    return bytes(secureHMAC(bytearray(salt), bytearray(ikm), suite.hash_name))


def _expand(secret: bytes, label: bytes, context: bytes, suite: TlsSuite) -> bytes:
    return bytes(HKDF_expand_label(bytearray(secret), label, bytearray(context), suite.hash_len, suite.hash_name))


def _derived(secret: bytes, suite: TlsSuite) -> bytes:
    """Derive-Secret(secret, "derived", "")."""
    return _expand(secret, b"derived", suite.transcript_hash(b""), suite)


def handshake_secret(shared: bytes, suite: TlsSuite) -> bytes:
    """HS = HKDF-Extract(Derive-Secret(Early Secret, "derived", ""), S) with the Early Secret of no PSK."""
    zeros = bytes(suite.hash_len)
    return _extract(_derived(_extract(zeros, zeros, suite), suite), shared, suite)


def master_secret(handshake: bytes, suite: TlsSuite) -> bytes:
    return _extract(_derived(handshake, suite), bytes(suite.hash_len), suite)


def traffic_secrets(secret: bytes, transcript_hash: bytes, suite: TlsSuite, *,
                    handshake: bool) -> tuple[bytes, bytes]:
    """(client, server) handshake traffic secrets of HS, or application traffic secrets of MS."""
    kind = b"hs" if handshake else b"ap"
    return (_expand(secret, b"c " + kind + b" traffic", transcript_hash, suite),
            _expand(secret, b"s " + kind + b" traffic", transcript_hash, suite))


def finished_mac(base_key: bytes, transcript_hash: bytes, suite: TlsSuite) -> bytes:
    """RFC 8446 section 4.4.4: HMAC(HKDF-Expand-Label(base_key, "finished", "", Hash.length), transcript)."""
    key = bytes(HKDF_expand_label(bytearray(base_key), b"finished", bytearray(), suite.hash_len, suite.hash_name))
    return _extract(key, transcript_hash, suite)


def application_secrets(handshake: bytes, frozen_transcript: bytes, suite: TlsSuite) -> tuple[bytes, bytes]:
    """(client, server) application traffic secrets of a Handshake Secret, from ``TH_SF``."""
    return traffic_secrets(master_secret(handshake, suite), frozen_transcript, suite, handshake=False)


def epoch_application_secrets(shared: bytes, frozen_transcript: bytes, suite: TlsSuite) -> tuple[bytes, bytes]:
    """(client, server) application traffic secrets of an MLS epoch: the schedule again with its ``S_e`` and
    the handshake's ``TH_SF``."""
    return application_secrets(handshake_secret(shared, suite), frozen_transcript, suite)


def next_traffic_secret(secret: bytes, suite: TlsSuite) -> bytes:
    """RFC 8446 section 7.2 (KeyUpdate): application_traffic_secret_N+1 = HKDF-Expand-Label(N, "traffic upd")."""
    return _expand(secret, b"traffic upd", b"", suite)
