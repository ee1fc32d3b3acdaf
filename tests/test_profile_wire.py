"""The profile's outer framing: a tagged union that splits cleanly out of a byte stream."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mls2p.wire import CommitRequest, EpochKeyUpdate, MessageBuffer, ProfileMessage, ProfileMessageType
from mlscore.errors import DecodeError, MLSError


def test_round_trip_all_types() -> None:
    for msg_type in ProfileMessageType:
        message = ProfileMessage(msg_type, bytes(i % 256 for i in range(msg_type * 30)))
        assert ProfileMessage.from_bytes(message.to_bytes()) == message


def test_unknown_type_and_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError, match="profile message type"):
        ProfileMessage.from_bytes(b"\x09\x00")
    with pytest.raises(DecodeError, match="trailing"):
        ProfileMessage.from_bytes(b"\x01\x00\x00")
    with pytest.raises(DecodeError):
        EpochKeyUpdate.from_bytes(b"\x00" * 7)
    with pytest.raises(DecodeError):
        CommitRequest.from_bytes(b"\x00" * 9)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(min_value=1, max_value=50))
def test_buffer_splits_any_chunking(bodies: list[bytes], chunk: int) -> None:
    messages = [ProfileMessage(ProfileMessageType.CONNECTION_UPDATE, body) for body in bodies]
    stream = b"".join(m.to_bytes() for m in messages)
    buffer = MessageBuffer()
    received = []
    for start in range(0, len(stream), chunk):
        received += buffer.feed(stream[start : start + chunk])
    assert received == messages
    assert buffer.pending == 0


def test_buffer_rejects_oversize_before_buffering_it() -> None:
    buffer = MessageBuffer(max_size=100)
    with pytest.raises(DecodeError, match="exceeds"):
        buffer.feed(b"\x03\x40\xff")


@given(st.binary(max_size=64))
def test_buffer_raises_only_mls_errors(data: bytes) -> None:
    with contextlib.suppress(MLSError):
        MessageBuffer().feed(data)
