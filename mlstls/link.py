"""A reliable, resumable frame stream on top of MLS-TLS connections (sans-I/O).

TCP delivers in order but a cut connection loses whatever was in flight.  The
tunnel needs "no byte lost or duplicated" across reconnects, so it numbers its
frames' bytes: every reliable frame is kept until the peer acknowledges it,
and after a resumption each side announces how much it has received
(RESUME) and the other retransmits exactly the rest.

    frame = type (u8) | stream id (u32) | length (u32) | payload

OPEN, DATA and CLOSE are reliable (counted and retransmitted); ACK and RESUME
are per-connection control frames carrying a u64 byte offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from mlscore.errors import DecodeError, StateError

HEADER = struct.Struct(">BII")
OFFSET = struct.Struct(">Q")
MAX_FRAME_PAYLOAD = 1 << 16
ACK_EVERY = 256 * 1024


class FrameType(IntEnum):
    OPEN = 1
    DATA = 2
    CLOSE = 3
    ACK = 4
    RESUME = 5


RELIABLE = frozenset({FrameType.OPEN, FrameType.DATA, FrameType.CLOSE})


@dataclass(frozen=True)
class Frame:
    kind: FrameType
    stream: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(self.kind, self.stream, len(self.payload)) + self.payload


class ReliableLink:
    """Sequencing, acknowledgement and retransmission for one tunnel link."""

    def __init__(self) -> None:
        self.sent_offset = 0  # reliable bytes produced
        self.acked_offset = 0  # reliable bytes the peer confirmed
        self.received_offset = 0  # reliable bytes we parsed whole
        self._unacked = bytearray()  # bytes [acked_offset, sent_offset)
        self._rx = bytearray()
        self._since_ack = 0
        self._connected = False
        self._resumed = False  # the peer's RESUME arrived on this connection

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def send(self, frame: Frame) -> bytes:
        """Queue a reliable frame; returns what to write now (nothing while resuming)."""
        if frame.kind not in RELIABLE:
            raise ValueError("only OPEN, DATA and CLOSE are queued reliably")
        data = frame.encode()
        self._unacked += data
        self.sent_offset += len(data)
        return data if self._connected and self._resumed else b""

    def connected(self, *, fresh: bool) -> bytes:
        """A new connection is up: on a resumed link, tell the peer where we are."""
        self._rx.clear()  # a partial frame from the dead connection will be retransmitted
        self._connected = True
        self._resumed = fresh
        if fresh:
            return b""
        return Frame(FrameType.RESUME, 0, OFFSET.pack(self.received_offset)).encode()

    def disconnected(self) -> None:
        self._connected = False
        self._resumed = False

    def feed(self, data: bytes) -> tuple[list[Frame], bytes]:
        """Parse received bytes: (frames for the application, bytes to write back)."""
        self._rx += data
        frames: list[Frame] = []
        reply = bytearray()
        offset = 0
        rx = self._rx
        while len(rx) - offset >= HEADER.size:
            kind_value, stream, length = HEADER.unpack_from(rx, offset)
            if length > MAX_FRAME_PAYLOAD + OFFSET.size:
                raise DecodeError(f"tunnel frame of {length} bytes is too large")
            end = offset + HEADER.size + length
            if end > len(rx):
                break
            try:
                kind = FrameType(kind_value)
            except ValueError:
                raise DecodeError(f"unknown tunnel frame type {kind_value}") from None
            payload = bytes(rx[offset + HEADER.size : end])
            offset = end
            if kind in RELIABLE:
                self.received_offset += HEADER.size + length
                self._since_ack += HEADER.size + length
                frames.append(Frame(kind, stream, payload))
            elif kind == FrameType.ACK:
                self._acknowledge(_offset(payload))
            else:
                reply += self._resume_from(_offset(payload))
        del rx[:offset]
        if self._since_ack >= ACK_EVERY:
            self._since_ack = 0
            reply += Frame(FrameType.ACK, 0, OFFSET.pack(self.received_offset)).encode()
        return frames, bytes(reply)

    def _acknowledge(self, offset: int) -> None:
        if offset < self.acked_offset or offset > self.sent_offset:
            raise StateError(f"ACK for offset {offset} outside [{self.acked_offset}, {self.sent_offset}]")
        del self._unacked[: offset - self.acked_offset]
        self.acked_offset = offset

    def _resume_from(self, offset: int) -> bytes:
        """The peer has everything before ``offset``: retransmit the rest, then carry on."""
        self._acknowledge(offset)
        self._resumed = True
        return bytes(self._unacked)


def _offset(payload: bytes) -> int:
    if len(payload) != OFFSET.size:
        raise DecodeError("malformed offset in tunnel control frame")
    return OFFSET.unpack(payload)[0]
