"""The AEAD each MLS cipher suite's traffic keys use, for both transports.

Neither draft maps MLS suites to record or packet protection.  Both
transports use the suite's own AEAD (docs/tls.md, docs/quic.md):

* mlstls expands its traffic secrets with the MLS suite's hash (RFC 8446
  HKDF-Expand-Label over that hash), so every suite is usable as is;
* mlsquic needs a TLS 1.3 cipher suite, because QUIC packet protection is
  defined only for those: the suite with the same AEAD (AES-128-GCM and
  ChaCha20-Poly1305 with SHA-256, AES-256-GCM with SHA-384).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlscore.crypto import get_suite
from mlscore.errors import UnsupportedError


@dataclass(frozen=True)
class TrafficAead:
    name: str
    key_length: int
    tls_cipher_suite: int
    """The RFC 8446 cipher suite with this AEAD (what QUIC packet protection is keyed as)."""
    tls_hash: str
    """That TLS cipher suite's hash (hashlib name)."""


AES_128_GCM = TrafficAead("aes-128-gcm", 16, 0x1301, "sha256")
AES_256_GCM = TrafficAead("aes-256-gcm", 32, 0x1302, "sha384")
CHACHA20_POLY1305 = TrafficAead("chacha20-poly1305", 32, 0x1303, "sha256")

_BY_MLS_AEAD = {"aes128gcm": AES_128_GCM, "aes256gcm": AES_256_GCM, "chacha20poly1305": CHACHA20_POLY1305}


def traffic_aead(suite_id: int) -> TrafficAead:
    """The AEAD that protects traffic keyed from MLS cipher suite ``suite_id``."""
    aead = _BY_MLS_AEAD.get(get_suite(suite_id).aead_name)
    if aead is None:
        raise UnsupportedError(f"cipher suite {suite_id} has no traffic AEAD")
    return aead
