"""Wire format of the two-party profile's six messages.

draft-kohbrok-mls-two-party-profile-01 defines the messages (ClientHello,
ServerHello, ConnectionUpdate, EpochKeyUpdate, ResumptionRequest,
ResumptionResponse) but no outer framing, so a receiver could not tell them
apart.  We frame each one as a tagged TLS-encoded union (docs/profile.md)::

    enum {
        client_hello(1), server_hello(2), connection_update(3),
        epoch_key_update(4), resumption_request(5), resumption_response(6),
        commit_request(32),      /* our extension: "please commit, it is your turn" */
        (255)
    } ProfileMessageType;

    struct {
        ProfileMessageType msg_type;
        opaque body<V>;          /* an MLSMessage */
    } ProfileMessage;

Every body is one MLSMessage: a KeyPackage, a Welcome, a Commit, or (for
EpochKeyUpdate) an MLS application message whose ``application_data`` is
``struct { uint64 epoch; }``.  The one exception is our extension
``commit_request`` (docs/profile.md, "Taking turns"): its body is
``struct { uint64 epoch; }`` itself, sent under the transport's keys of that
epoch, like TLS 1.3's KeyUpdate with ``update_requested``.  Types 32-63 are
reserved for such extensions of the framing (the draft defines none; mlstls
and mlsquic use 24-25 and 64-65 for frames of their own).  The length prefix makes the framing
self-delimiting, so a byte stream (TLS records, QUIC CRYPTO frames) can be
split with :class:`MessageBuffer` without understanding the body.

The Safe AAD ``TwoPartyMessageType`` (a different, draft-defined enum) lives
inside the MLS messages' ``authenticated_data``; see :mod:`mls2p.session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from mlscore.codec import Reader, Struct, Writer, decode_enum
from mlscore.errors import DecodeError

MAX_MESSAGE_SIZE = 64 * 1024
"""Largest profile message accepted (64 KiB), checked from the length prefix before a byte of the body is
buffered further.  The largest legitimate ones are a KeyPackage or Welcome with X.509 chains (a few KiB;
post-quantum keys add about 2 KiB); a two-party commit is under 4 KiB."""


class ProfileMessageType(IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    CONNECTION_UPDATE = 3
    EPOCH_KEY_UPDATE = 4
    RESUMPTION_REQUEST = 5
    RESUMPTION_RESPONSE = 6
    COMMIT_REQUEST = 32  # our extension (docs/profile.md, "Taking turns"), not in the draft


class TwoPartyMessageType(IntEnum):
    """The draft's Safe AAD item value (draft-kohbrok-mls-two-party-profile-01 section 3)."""

    CONNECTION_UPDATE = 1
    RESUMPTION_REQUEST = 2
    RESUMPTION_RESPONSE = 3
    EPOCH_KEY_UPDATE = 4


@dataclass(frozen=True)
class ProfileMessage(Struct):
    msg_type: ProfileMessageType
    body: bytes  # an encoded MLSMessage

    def encode(self, w: Writer) -> None:
        w.u8(self.msg_type).opaque(self.body)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        msg_type = decode_enum(ProfileMessageType, r.u8(), "profile message type")
        return cls(msg_type, r.opaque())


@dataclass(frozen=True)
class _EpochNumber(Struct):
    """``struct { uint64 epoch; }``."""

    epoch: int

    def encode(self, w: Writer) -> None:
        w.u64(self.epoch)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.u64())


class EpochKeyUpdate(_EpochNumber):
    """The application data of an EpochKeyUpdate: the epoch it confirms."""


class CommitRequest(_EpochNumber):
    """Ask the peer to commit (its turn), naming the epoch we are in, so a request cannot outlive it."""


class MessageBuffer:
    """Splits a byte stream into whole :class:`ProfileMessage` values."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[ProfileMessage]:
        return [ProfileMessage.from_bytes(frame) for frame in self.feed_frames(data)]

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Whole frames (type byte, length, body) without interpreting the type byte.

        Transports use this to carry a frame type of their own beside the
        profile's messages (mlstls's key-switch marker).
        """
        self._buffer += data
        frames = []
        while True:
            size = self._complete_size()
            if size is None:
                break
            frames.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _complete_size(self) -> int | None:
        """Size of the first message if the buffer holds all of it."""
        if len(self._buffer) < 2:
            return None
        prefix = self._buffer[1] >> 6
        if prefix == 3:
            raise DecodeError("invalid varint prefix in profile message length")
        width = 1 << prefix
        if len(self._buffer) < 1 + width:
            return None
        reader = Reader(bytes(self._buffer[1 : 1 + width]))
        length = reader.varint()
        if length > self._max_size:
            raise DecodeError(f"profile message of {length} bytes exceeds the {self._max_size} limit")
        total = 1 + width + length
        return total if len(self._buffer) >= total else None
