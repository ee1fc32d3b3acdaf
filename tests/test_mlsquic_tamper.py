"""A QUIC-MLS client that tampers with, replays or reorders its handshake messages is refused (in memory)."""

from __future__ import annotations

from collections.abc import Callable

from aioquic import tls
from aioquic.buffer import Buffer

from mls2p.wire import MessageBuffer
from mlsquic import MlsQuicConnection
from mlsquic.handshake import MlsHandshakeContext
from mlsquic.testing import QuicPair, client_configuration, server_configuration

Mutation = Callable[[list[bytes]], list[bytes]]


def tampering_client(mutate: Mutation) -> MlsQuicConnection:
    """A client whose first flight (hello-extras frame, ClientHello) passes through ``mutate``."""

    class Tampering(MlsHandshakeContext):
        def _start_client(self, out: dict[tls.Epoch, Buffer]) -> None:
            super()._start_client(out)
            frames = MessageBuffer().feed_frames(out[tls.Epoch.INITIAL].data)
            out[tls.Epoch.INITIAL].seek(0)
            out[tls.Epoch.INITIAL].push_bytes(b"".join(mutate(frames)))

    class Connection(MlsQuicConnection):
        handshake_class = Tampering

    return Connection(configuration=client_configuration())


def refused_with(mutate: Mutation, reason: str, alert: int) -> None:
    pair = QuicPair(tampering_client(mutate), server_configuration())
    pair.run(lambda: pair.client.terminated is not None)
    closed = pair.client.terminated
    assert reason in closed.reason_phrase and closed.error_code == 0x100 + alert, closed
    assert pair.client.connection.mls_epoch is None  # no 1-RTT keys ever came of it


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def test_tampered_client_hello() -> None:
    refused_with(lambda frames: [frames[0], flip_last_byte(frames[1])], "InvalidSignatureError", 51)


def test_replayed_client_hello() -> None:
    refused_with(lambda frames: [frames[0], frames[1], frames[1]], "ClientHello received is not allowed", 10)


def test_reordered_handshake_frames() -> None:
    refused_with(lambda frames: [frames[1], frames[0]], "must come before", 10)
