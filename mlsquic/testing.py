"""Loopback mlsquic endpoints for tests, demos and benchmarks: an echo server and a collecting client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from mls2p.testing import config

from .config import MlsQuicConfiguration
from .epochs import EpochChanged
from .serving import serve


class EchoServer(QuicConnectionProtocol):
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, event.end_stream)
            self.transmit()


class Collector(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received = bytearray()
        self.finished = asyncio.Event()
        self.epochs: list[int] = []
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.received += event.data
            if event.end_stream:
                self.finished.set()
        elif isinstance(event, EpochChanged):
            self.epochs.append(event.epoch)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_configuration(**overrides: object) -> MlsQuicConfiguration:
    profile = overrides.pop("profile", None) or config(b"server")
    return MlsQuicConfiguration(profile=profile, is_client=False, alpn_protocols=["echo"],
                                idle_timeout=10.0, **overrides)  # type: ignore[arg-type]


def client_configuration(**overrides: object) -> MlsQuicConfiguration:
    profile = overrides.pop("profile", None) or config(b"client")
    return MlsQuicConfiguration(profile=profile, is_client=True, alpn_protocols=["echo"],
                                idle_timeout=10.0, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def echo_server(configuration: MlsQuicConfiguration | None = None, **kwargs: object) -> AsyncIterator[int]:
    port = free_udp_port()
    server = await serve("127.0.0.1", port, configuration=configuration or server_configuration(),
                                 create_protocol=EchoServer, **kwargs)
    try:
        yield port
    finally:
        server.close()


async def echo_through(client: Collector, data: bytes, *, rekey_every: int = 0, chunk: int = 64 * 1024,
                       timeout: float = 30.0) -> bytes:
    """Send ``data`` on a new stream, rekeying every ``rekey_every`` chunks; return the echo."""
    quic = client._quic
    stream = quic.get_next_available_stream_id()
    for index, start in enumerate(range(0, len(data), chunk)):
        quic.send_stream_data(stream, data[start : start + chunk], False)
        if rekey_every and index % rekey_every == 0:
            quic.rekey()
        client.transmit()
        await asyncio.sleep(0.002)
    quic.send_stream_data(stream, b"", True)
    client.transmit()
    await asyncio.wait_for(client.finished.wait(), timeout)
    return bytes(client.received)
