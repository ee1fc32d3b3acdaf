"""A QUIC-MLS client that tampers with, replays or reorders its handshake messages is refused (in memory)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aioquic import tls

from mls2p.errors import AlertDescription
from mls2p.wire import MessageBuffer
from mlsquic import MlsQuicConnection
from mlsquic.handshake import MlsHandshakeContext
from mlsquic.testing import QuicPair, client_configuration, server_configuration

Mutation = Callable[[list[bytes]], list[bytes]]


def tampering_client(mutate: Mutation) -> MlsQuicConnection:
    """A client whose first flight (hello-extras frame, ClientHello) passes through ``mutate``."""

    class Connection(MlsQuicConnection):
        first_flight: list[bytes] | None = None

        def write_crypto(self, epoch: tls.Epoch, data: bytes) -> None:
            if self.first_flight is not None:
                self.first_flight.append(data)
            else:
                super().write_crypto(epoch, data)

    class Tampering(MlsHandshakeContext):
        def _start_client(self) -> None:
            connection = self._connection
            assert isinstance(connection, Connection)
            connection.first_flight = []
            super()._start_client()
            frames = MessageBuffer().feed_frames(b"".join(connection.first_flight))
            connection.first_flight = None
            for frame in mutate(frames):
                connection.write_crypto(tls.Epoch.INITIAL, frame)

    Connection.handshake_class = Tampering
    return Connection(configuration=client_configuration())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def refused_with(mutate: Mutation, reason: str, alert: int) -> None:
    """The client is refused with ``alert``; ``reason`` is in the server's log (the client learns only the code)."""
    records, logger = _Records(), logging.getLogger("mlsquic")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        pair = QuicPair(tampering_client(mutate), server_configuration())
        pair.run(lambda: pair.client.terminated is not None)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    closed = pair.client.terminated
    assert closed.error_code == 0x100 + alert and closed.reason_phrase == AlertDescription(alert).name.lower(), closed
    assert any(reason in message for message in records.messages), records.messages
    assert pair.client.connection.mls_epoch is None  # no 1-RTT keys ever came of it


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def test_tampered_client_hello() -> None:
    refused_with(lambda frames: [frames[0], flip_last_byte(frames[1])], "InvalidSignatureError", 51)


def test_replayed_client_hello() -> None:
    refused_with(lambda frames: [frames[0], frames[1], frames[1]], "ClientHello received is not allowed", 10)


def test_reordered_handshake_frames() -> None:
    refused_with(lambda frames: [frames[1], frames[0]], "must come before", 10)
