"""The TLS 1.3 record layer: exact framing, nonce discipline, and every rejection path."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscore.crypto import SUPPORTED_SUITES
from mlscore.errors import CryptoError, DecodeError, EncodeError, MLSError
from mlstls.record import (
    MAX_PLAINTEXT,
    ContentType,
    KeyLimitReached,
    RecordProtection,
    RecordSplitter,
    aead_spec,
    hkdf_expand_label,
)

SECRET = bytes(range(32))


def pair(suite: int = 1) -> tuple[RecordProtection, RecordProtection]:
    spec = aead_spec(suite)
    return RecordProtection(spec, SECRET), RecordProtection(spec, SECRET)


def test_hkdf_expand_label_matches_rfc8448() -> None:
    # RFC 8448 section 3 (simple 1-RTT handshake): server handshake traffic key and iv.
    from cryptography.hazmat.primitives import hashes

    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert hkdf_expand_label(hashes.SHA256, secret, b"key", b"", 16).hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert hkdf_expand_label(hashes.SHA256, secret, b"iv", b"", 12).hex() == "5d313eb2671276ee13000b30"


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_round_trip_through_a_stream(suite: int) -> None:
    sender, receiver = pair(suite)
    splitter = RecordSplitter()
    payloads = [b"", b"a", os.urandom(1000), os.urandom(MAX_PLAINTEXT)]
    stream = b"".join(sender.seal(ContentType.APPLICATION_DATA, p, padding=i * 7) for i, p in enumerate(payloads))
    got = []
    for i in range(0, len(stream), 777):
        for header, body in splitter.feed(stream[i : i + 777]):
            got.append(receiver.open(header, body))
    assert got == [(ContentType.APPLICATION_DATA, p) for p in payloads]
    assert sender.sequence == receiver.sequence == len(payloads)


def test_tampered_replayed_reordered_records_fail() -> None:
    sender, receiver = pair()
    first = sender.seal(ContentType.APPLICATION_DATA, b"one")
    second = sender.seal(ContentType.APPLICATION_DATA, b"two")
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(CryptoError):
        receiver.open(tampered[:5], tampered[5:])
    with pytest.raises(CryptoError):  # reordered: second record under sequence 0
        receiver.open(second[:5], second[5:])
    assert receiver.sequence == 0  # failures consume nothing
    assert receiver.open(first[:5], first[5:]) == (ContentType.APPLICATION_DATA, b"one")
    with pytest.raises(CryptoError):  # replay of the first record
        receiver.open(first[:5], first[5:])


def test_header_and_length_checks() -> None:
    splitter = RecordSplitter()
    with pytest.raises(DecodeError, match="exceeds"):
        splitter.feed(b"\x17\x03\x03\xff\xff")
    with pytest.raises(DecodeError, match="header"):
        RecordSplitter().feed(b"\x16\x03\x01\x00\x20")
    with pytest.raises(DecodeError, match="header"):
        RecordSplitter().feed(b"\x18\x03\x03\x00\x20")
    with pytest.raises(DecodeError, match="too short"):
        RecordSplitter().feed(b"\x17\x03\x03\x00\x05")
    sender, _ = pair()
    with pytest.raises(EncodeError):
        sender.seal(ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT + 1))


def test_key_limit_enforced() -> None:
    sender, _ = pair()
    sender.limit = 2
    sender.seal(ContentType.APPLICATION_DATA, b"1")
    sender.seal(ContentType.APPLICATION_DATA, b"2")
    with pytest.raises(KeyLimitReached):
        sender.seal(ContentType.APPLICATION_DATA, b"3")


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_splitter_and_open_raise_only_our_errors(data: bytes) -> None:
    _, receiver = pair()
    try:
        for header, body in RecordSplitter().feed(data):
            receiver.open(header, body)
    except MLSError:
        pass
