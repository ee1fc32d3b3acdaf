"""The TLS 1.3 record layer (RFC 8446 section 5), keyed from outside the TLS handshake.

draft-kohbrok-mls-tls-01 keeps TLS 1.3's record protection and replaces only
where the traffic secrets come from (the MLS exporter).  This module is that
record layer and nothing else: sealing and opening records, per-record
nonces, padding, sequence numbers that restart at every key install, and the
key-usage limits of section 5.5.  It is sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from mls2p.traffic import traffic_aead
from mlscore.crypto import get_suite
from mlscore.errors import CryptoError, DecodeError, EncodeError

from .errors import KeyLimitReached, RecordError

MAX_PLAINTEXT = 1 << 14
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256
HEADER_SIZE = 5
LEGACY_VERSION = b"\x03\x03"


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


@dataclass(frozen=True)
class AeadSpec:
    """An AEAD and the hash its keys are expanded with."""

    name: str
    key_length: int
    hash_algorithm: type[hashes.HashAlgorithm]
    record_limit: int  # records per key, RFC 8446 section 5.5

    def new(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return ChaCha20Poly1305(key) if self.name == "chacha20-poly1305" else AESGCM(key)


_RECORD_TYPES = frozenset({ContentType.ALERT, ContentType.HANDSHAKE, ContentType.APPLICATION_DATA})

_TYPE_BYTES = {kind: bytes([kind]) for kind in _RECORD_TYPES}

AES_GCM_LIMIT = int(2**24.5)
CHACHA_LIMIT = 2**62  # effectively the sequence number space

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                    "sha512": hashes.SHA512}


def aead_spec(suite_id: int) -> AeadSpec:
    """The record protection of MLS cipher suite ``suite_id``: its own AEAD and hash (docs/tls.md)."""
    aead = traffic_aead(suite_id)
    limit = CHACHA_LIMIT if aead.name == "chacha20-poly1305" else AES_GCM_LIMIT
    return AeadSpec(aead.name, aead.key_length, _HASHES[get_suite(suite_id).hash_name], limit)


def hkdf_expand_label(hash_algorithm: type[hashes.HashAlgorithm], secret: bytes, label: bytes,
                      context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label of RFC 8446 section 7.1."""
    full_label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + bytes([len(context)]) + context
    return HKDFExpand(hash_algorithm(), length, info).derive(secret)


def traffic_keys(spec: AeadSpec, secret: bytes) -> tuple[bytes, bytes]:
    """(key, iv) from a traffic secret, RFC 8446 section 7.3."""
    key = hkdf_expand_label(spec.hash_algorithm, secret, b"key", b"", spec.key_length)
    iv = hkdf_expand_label(spec.hash_algorithm, secret, b"iv", b"", 12)
    return key, iv


class RecordProtection:
    """One direction's keys; the sequence number starts at zero for every instance."""

    __slots__ = ("_aead", "_iv", "_iv_int", "epoch", "limit", "sequence")

    def __init__(self, spec: AeadSpec, secret: bytes, *, epoch: int = 0) -> None:
        key, iv = traffic_keys(spec, secret)
        self._aead = spec.new(key)
        self._iv = iv
        self._iv_int = int.from_bytes(iv, "big")
        self.limit = spec.record_limit
        self.sequence = 0
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"RecordProtection(epoch={self.epoch}, sequence={self.sequence})"

    @property
    def remaining(self) -> int:
        return self.limit - self.sequence

    def _nonce(self) -> bytes:
        return (self._iv_int ^ self.sequence).to_bytes(12, "big")

    def seal(self, content_type: ContentType, data: bytes | memoryview, padding: int = 0) -> bytearray:
        """One protected record carrying ``data`` (at most 2^14 bytes), built with one copy of ``data``."""
        if len(data) > MAX_PLAINTEXT:
            raise EncodeError(f"record plaintext of {len(data)} bytes exceeds {MAX_PLAINTEXT}")
        if self.sequence >= self.limit:
            raise KeyLimitReached(f"key usage limit of {self.limit} records reached: rekey first")
        if padding:
            inner = b"".join((data, bytes([content_type]), bytes(min(padding, MAX_PLAINTEXT - len(data)))))
        else:
            inner = b"".join((data, _TYPE_BYTES[content_type]))
        length = len(inner) + 16
        header = bytes([ContentType.APPLICATION_DATA]) + LEGACY_VERSION + length.to_bytes(2, "big")
        record = bytearray(HEADER_SIZE + length)
        record[:HEADER_SIZE] = header
        self._aead.encrypt_into(self._nonce(), inner, header, memoryview(record)[HEADER_SIZE:])
        self.sequence += 1
        return record

    def open(self, header: bytes, body: bytes) -> tuple[ContentType, memoryview]:
        """Decrypt one record (the payload is a view, valid until copied); advances only on success."""
        if self.sequence >= self.limit:
            raise KeyLimitReached("peer exceeded the key usage limit")
        try:
            inner = self._aead.decrypt(self._nonce(), body, header)
        except InvalidTag:
            raise CryptoError("record authentication failed (bad tag, replayed or reordered record)") from None
        self.sequence += 1
        end = len(inner)
        if end == 0 or inner[-1] == 0:  # padding present: find the content type byte
            end = len(inner.rstrip(b"\x00"))
            if end == 0:
                raise RecordError("record has no content type (all padding)")
        content_type = inner[end - 1]
        try:
            kind = ContentType(content_type)
        except ValueError:
            raise RecordError(f"unknown inner content type {content_type}") from None
        if end - 1 > MAX_PLAINTEXT:
            raise RecordError("record plaintext exceeds 2^14 bytes")
        return kind, memoryview(inner)[: end - 1]


class RecordSplitter:
    """Cuts whole records out of a TCP byte stream.

    Protected records (type application_data) and, before keys exist, plaintext
    handshake and alert records; the caller decides which it accepts when.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Append stream bytes; return every complete (header, body) pair."""
        self._buffer += data
        records = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER_SIZE:
            header = bytes(buffer[offset : offset + HEADER_SIZE])
            kind = header[0]
            if kind not in _RECORD_TYPES or header[1:3] != LEGACY_VERSION:
                raise DecodeError(f"not a TLS 1.3 record header: {header.hex()}")
            length = int.from_bytes(header[3:5], "big")
            protected = kind == ContentType.APPLICATION_DATA
            limit = MAX_CIPHERTEXT if protected else MAX_PLAINTEXT
            if length > limit:
                raise DecodeError(f"record length {length} exceeds {limit}")
            if protected and length < 17:
                raise DecodeError(f"record length {length} is too short for a tag and a type")
            if not protected and length == 0:
                raise DecodeError("empty plaintext record")
            end = offset + HEADER_SIZE + length
            if end > len(buffer):
                break
            records.append((header, bytes(buffer[offset + HEADER_SIZE : end])))
            offset = end
        if offset:
            del buffer[:offset]
        return records

    @property
    def pending(self) -> int:
        return len(self._buffer)


def plaintext_records(content_type: ContentType, data: bytes) -> bytes:
    """TLSPlaintext records (before any keys exist), fragmented at 2^14 bytes."""
    out = bytearray()
    for start in range(0, len(data), MAX_PLAINTEXT):
        fragment = data[start : start + MAX_PLAINTEXT]
        out += bytes([content_type]) + LEGACY_VERSION + len(fragment).to_bytes(2, "big") + fragment
    return bytes(out)
