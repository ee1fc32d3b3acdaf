"""mlsquic for tests, demos and benchmarks: two connections in memory, and loopback echo endpoints.

:class:`QuicPair` drives a client and a server connection against each other
with no sockets and an injected clock (as aioquic's own tests do): datagrams
move in a loop, timers fire when the simulated time reaches them, and a
test can drop or reorder datagrams with a seeded random generator.  The
loopback helpers (``echo_server``, ``Collector``) exercise ``serve``/``connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from aioquic.quic.packet import pull_quic_header

from mls2p.testing import config

from ._aioquic_compat import quic_of
from .config import MlsQuicConfiguration
from .epochs import EpochChanged, EpochKeyedConnection
from .serving import connection_class, serve

CLIENT_ADDR = ("10.0.0.1", 50000)
SERVER_ADDR = ("10.0.0.2", 4433)


@dataclass
class Side:
    """One end of a :class:`QuicPair`: its connection and what it received."""

    connection: QuicConnection
    events: list[QuicEvent] = field(default_factory=list)
    streams: dict[int, bytearray] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)

    @property
    def epochs(self) -> list[int]:
        return [e.epoch for e in self.events if isinstance(e, EpochChanged)]

    @property
    def terminated(self) -> ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, ConnectionTerminated)), None)


class QuicPair:
    """A client and a server connection exchanging datagrams in memory, on a simulated clock.

    ``echo`` makes the server send back every stream's data.  ``loss`` and
    ``reorder`` are probabilities applied per datagram with ``seed``.
    """

    def __init__(self, client: MlsQuicConfiguration | QuicConnection, server: QuicConfiguration, *,
                 echo: bool = True, loss: float = 0.0, reorder: float = 0.0, seed: int = 0,
                 step: float = 0.001) -> None:
        self.now = 0.0
        self.step = step
        self.echo = echo
        self.loss = loss
        self.reorder = reorder
        self.random = random.Random(seed)
        self.server_configuration = server
        connection = client if isinstance(client, QuicConnection) else connection_class(client)(configuration=client)
        self.client = Side(connection)
        self.server: Side | None = None
        self.client_datagrams: list[bytes] = []  # what an on-path attacker records
        self.server_datagrams: list[bytes] = []
        self._late: list[tuple[Side, bytes, tuple[str, int]]] = []
        connection.connect(SERVER_ADDR, now=self.now)

    # -- driving -------------------------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None, *, max_seconds: float = 30.0) -> None:
        """Exchange datagrams and fire timers until ``until()`` holds (or nothing moves); simulated time."""
        deadline = self.now + max_seconds
        while self.now < deadline:
            moved = self._exchange()
            if until is not None and until():
                return
            if not moved:
                timer = self._next_timer()
                if timer is None:
                    if until is None:
                        return
                    raise AssertionError("the pair went quiet before the condition held")
                self.now = max(self.now + self.step, timer)
                self._fire_timers()
            else:
                self.now += self.step
        raise AssertionError(f"not done after {max_seconds} simulated seconds")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass, exchanging everything on the way."""
        end = self.now + seconds
        while self.now < end:
            self._exchange()
            self.now = min(end, self.now + max(self.step, 0.01))
            self._fire_timers()
        self._exchange()

    def established(self) -> bool:
        """Both sides saw the handshake complete (and, for MLS, have 1-RTT epochs)."""
        from aioquic.quic.events import HandshakeCompleted

        return self.server is not None and all(
            any(isinstance(e, HandshakeCompleted) for e in side.events) for side in (self.client, self.server))

    def send(self, data: bytes, *, end_stream: bool = True, rekey_every: int = 0, chunk: int = 64 * 1024) -> int:
        """Queue ``data`` on a new client stream (rekeying every ``rekey_every`` chunks); returns the stream id."""
        quic = self.client.connection
        stream = quic.get_next_available_stream_id()
        for index, start in enumerate(range(0, len(data), chunk)):
            quic.send_stream_data(stream, data[start : start + chunk], False)
            if rekey_every and index % rekey_every == 0:
                # rekeying needs an mlsquic connection (what connection_class builds from a configuration)
                cast(EpochKeyedConnection, quic).rekey()
            self._exchange()
            self.now += self.step
        quic.send_stream_data(stream, b"", end_stream)
        return stream

    def echo_of(self, stream: int, *, max_seconds: float = 60.0) -> bytes:
        """Run until the client has the whole echo of ``stream``; return it."""
        self.run(lambda: stream in self.client.finished, max_seconds=max_seconds)
        return bytes(self.client.streams.get(stream, b""))

    # -- internals -------------------------------------------------------------------------------

    def _sides(self) -> list[Side]:
        return [self.client] + ([self.server] if self.server is not None else [])

    def _next_timer(self) -> float | None:
        timers = [t for side in self._sides() if (t := side.connection.get_timer()) is not None]
        return min(timers) if timers else None

    def _fire_timers(self) -> None:
        for side in self._sides():
            timer = side.connection.get_timer()
            if timer is not None and timer <= self.now:
                side.connection.handle_timer(self.now)

    def _exchange(self) -> bool:
        moved = False
        for late in self._late[:]:
            self._late.remove(late)
            self._deliver(*late)
            moved = True
        for side in self._sides():
            for data, _ in side.connection.datagrams_to_send(now=self.now):
                moved = True
                to_server = side is self.client
                (self.client_datagrams if to_server else self.server_datagrams).append(data)
                if self.loss and self.random.random() < self.loss:
                    continue
                if to_server and self.server is None:
                    self.server = Side(self._accept(data))
                target = self.server if to_server else self.client
                assert target is not None
                source = CLIENT_ADDR if to_server else SERVER_ADDR
                if self.reorder and self.random.random() < self.reorder:
                    self._late.append((target, data, source))
                else:
                    self._deliver(target, data, source)
        self._collect()
        return moved

    def replay(self, datagrams: list[bytes]) -> Side:
        """Deliver recorded client datagrams to a new server connection (an attacker's replay); its side."""
        assert datagrams
        side = Side(self._accept(datagrams[0]))
        now = self.now
        for data in datagrams:
            side.connection.receive_datagram(data, CLIENT_ADDR, now=now)
            side.connection.datagrams_to_send(now=now)  # its answers go nowhere
        for _ in range(100):  # let its timers run out (a closing connection ends after 3 PTO)
            timer = side.connection.get_timer()
            if timer is None:
                break
            now = max(now, timer)
            side.connection.handle_timer(now)
            side.connection.datagrams_to_send(now=now)
        while (event := side.connection.next_event()) is not None:
            side.events.append(event)
        return side

    def _accept(self, first_datagram: bytes) -> QuicConnection:
        header = pull_quic_header(Buffer(data=first_datagram),
                                  host_cid_length=self.server_configuration.connection_id_length)
        configuration = self.server_configuration
        kind = connection_class(configuration) if isinstance(configuration, MlsQuicConfiguration) else QuicConnection
        return kind(configuration=configuration, original_destination_connection_id=header.destination_cid)

    def _deliver(self, target: Side, data: bytes, source: tuple[str, int]) -> None:
        target.connection.receive_datagram(data, source, now=self.now)

    def _collect(self) -> None:
        for side in self._sides():
            while (event := side.connection.next_event()) is not None:
                side.events.append(event)
                if isinstance(event, StreamDataReceived):
                    side.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if event.end_stream:
                        side.finished.add(event.stream_id)
                    if side is self.server and self.echo:
                        side.connection.send_stream_data(event.stream_id, event.data, event.end_stream)


class EchoServer(QuicConnectionProtocol):
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            quic_of(self).send_stream_data(event.stream_id, event.data, event.end_stream)
            self.transmit()


class Collector(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
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


def server_configuration(**overrides: Any) -> MlsQuicConfiguration:
    profile = overrides.pop("profile", None) or config(b"server")
    return MlsQuicConfiguration(profile=profile, is_client=False, alpn_protocols=["echo"],
                                idle_timeout=10.0, **overrides)


def client_configuration(**overrides: Any) -> MlsQuicConfiguration:
    profile = overrides.pop("profile", None) or config(b"client")
    return MlsQuicConfiguration(profile=profile, is_client=True, alpn_protocols=["echo"],
                                idle_timeout=10.0, **overrides)


@contextlib.asynccontextmanager
async def echo_server(configuration: MlsQuicConfiguration | None = None,
                      max_handshakes: int = 256) -> AsyncIterator[int]:
    port = free_udp_port()
    server = await serve("127.0.0.1", port, configuration=configuration or server_configuration(),
                         create_protocol=EchoServer, max_handshakes=max_handshakes)
    try:
        yield port
    finally:
        server.close()


async def echo_through(client: Collector, data: bytes, *, rekey_every: int = 0, chunk: int = 64 * 1024,
                       timeout: float = 30.0) -> bytes:
    """Send ``data`` on a new stream, rekeying every ``rekey_every`` chunks; return the echo."""
    quic = quic_of(client)
    stream = quic.get_next_available_stream_id()
    for index, start in enumerate(range(0, len(data), chunk)):
        quic.send_stream_data(stream, data[start : start + chunk], False)
        if rekey_every and index % rekey_every == 0:
            cast(EpochKeyedConnection, quic).rekey()  # an mlsquic client: its connection is epoch-keyed
        client.transmit()
        await asyncio.sleep(0.002)
    quic.send_stream_data(stream, b"", True)
    client.transmit()
    await asyncio.wait_for(client.finished.wait(), timeout)
    return bytes(client.received)
