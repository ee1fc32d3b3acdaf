"""A reliable, resumable frame stream on top of MLS-TLS connections (sans-I/O).

TCP delivers in order but a cut connection loses whatever was in flight.  The
tunnel needs "no byte lost or duplicated" across reconnects, so it numbers its
frames' bytes: every reliable frame is kept until the peer acknowledges it,
and on every new connection each side announces how much it has received
(RESUME) and the other retransmits exactly the rest.

    frame  = type (u8) | stream id (u32) | length (u32) | payload
    RESUME = link id (8 bytes) | the peer's link id as we know it (8) | bytes received (u64)

OPEN, DATA and CLOSE are reliable (counted and retransmitted); ACK and RESUME
are per-connection control frames.  Each side draws a random link id when its
process starts.  When a RESUME shows that either side is not the process the
other one remembers (a restart), both sides *reset* the link: streams that were
open are closed (the application sees a RESET frame), nothing is retransmitted,
and counting starts again at zero.  Reliable frames are held until the
peer's RESUME has been seen, so none is sent into a link that is about to reset.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from mlscore.errors import DecodeError, StateError

from .errors import ConfigurationError

HEADER = struct.Struct(">BII")
OFFSET = struct.Struct(">Q")
RESUME_BODY = struct.Struct(">8s8sQ")
MAX_FRAME_PAYLOAD = 1 << 16
ACK_EVERY = 256 * 1024
UNKNOWN_PEER = bytes(8)


class FrameType(IntEnum):
    OPEN = 1
    DATA = 2
    CLOSE = 3
    ACK = 4
    RESUME = 5
    RESET = 6
    """Never on the wire: tells the application that the link was reset (every stream is gone)."""


RELIABLE = frozenset({FrameType.OPEN, FrameType.DATA, FrameType.CLOSE})


@dataclass(frozen=True)
class Frame:
    kind: FrameType
    stream: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(self.kind, self.stream, len(self.payload)) + self.payload


class ReliableLink:
    """Sequencing, acknowledgement, retransmission and restart detection for one tunnel link."""

    def __init__(self, link_id: bytes | None = None) -> None:
        self.link_id = link_id or os.urandom(8)
        self.peer_link_id = UNKNOWN_PEER
        self.resets = 0
        self._clear()
        self._connected = False
        self._synchronized = False  # the peer's RESUME arrived on this connection

    def _clear(self) -> None:
        self.sent_offset = 0  # reliable bytes produced
        self.acked_offset = 0  # reliable bytes the peer confirmed
        self.received_offset = 0  # reliable bytes we parsed whole
        self._unacked = bytearray()  # bytes [acked_offset, sent_offset)
        self._rx = bytearray()
        self._since_ack = 0

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def synchronized(self) -> bool:
        """Connected, and the peer's RESUME has been processed: frames flow."""
        return self._connected and self._synchronized

    def send(self, frame: Frame) -> bytes:
        """Queue a reliable frame; returns what to write now (nothing until synchronized)."""
        if frame.kind not in RELIABLE:
            raise ConfigurationError("only OPEN, DATA and CLOSE are queued reliably")
        data = frame.encode()
        self._unacked += data
        self.sent_offset += len(data)
        return data if self.synchronized else b""

    def connected(self) -> bytes:
        """A new connection is up: tell the peer who we are, whom we remember, and where we are."""
        self._rx.clear()  # a partial frame from the dead connection will be retransmitted
        self._connected = True
        self._synchronized = False
        body = RESUME_BODY.pack(self.link_id, self.peer_link_id, self.received_offset)
        return Frame(FrameType.RESUME, 0, body).encode()

    def disconnected(self) -> None:
        self._connected = False
        self._synchronized = False

    def feed(self, data: bytes) -> tuple[list[Frame], bytes]:
        """Parse received bytes: (frames for the application, bytes to write back)."""
        self._rx += data
        frames: list[Frame] = []
        reply = bytearray()
        offset = 0
        rx = self._rx
        while len(rx) - offset >= HEADER.size:
            kind_value, stream, length = HEADER.unpack_from(rx, offset)
            if length > MAX_FRAME_PAYLOAD + RESUME_BODY.size:
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
                if not self._synchronized:
                    raise StateError("tunnel data before the peer's RESUME")
                self.received_offset += HEADER.size + length
                self._since_ack += HEADER.size + length
                frames.append(Frame(kind, stream, payload))
            elif kind == FrameType.ACK:
                self._acknowledge(_offset(payload))
            elif kind == FrameType.RESUME:
                reset, retransmit = self._resume(payload)
                if reset:
                    frames.append(Frame(FrameType.RESET, 0))
                reply += retransmit
            else:
                raise DecodeError(f"tunnel frame type {kind.name} is never sent")
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

    def _resume(self, payload: bytes) -> tuple[bool, bytes]:
        """(reset?, bytes to retransmit) for the peer's RESUME."""
        if len(payload) != RESUME_BODY.size:
            raise DecodeError("malformed RESUME")
        if self._synchronized:
            raise StateError("a second RESUME on one connection")
        peer_id, remembers, offset = RESUME_BODY.unpack(payload)
        self._synchronized = True
        both_new = self.peer_link_id == UNKNOWN_PEER and remembers == UNKNOWN_PEER and offset == 0 \
            and self.received_offset == 0
        continuing = both_new or (peer_id == self.peer_link_id and remembers == self.link_id)
        self.peer_link_id = peer_id
        if not continuing:
            # One of us restarted: nothing of the old link can be trusted to line up.
            # (Both sides reach this, since each sees the other's RESUME.)
            had_state = self.sent_offset or self.received_offset
            self._clear()
            if had_state:
                self.resets += 1
            return bool(had_state), b""
        self._acknowledge(offset)
        return False, bytes(self._unacked)


def _offset(payload: bytes) -> int:
    if len(payload) != OFFSET.size:
        raise DecodeError("malformed offset in tunnel control frame")
    return OFFSET.unpack(payload)[0]
