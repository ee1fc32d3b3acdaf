"""``serve`` and ``connect``: aioquic's asyncio entry points, building mlsquic's connection class.

aioquic's own ``serve``/``connect`` always instantiate ``QuicConnection``; they
take no connection class.  These two do the same job (same arguments, same
protocol objects) and pass the class explicitly, so importing mlsquic changes
nothing for any other aioquic user in the process.  The server routes
datagrams by connection id and answers unknown versions with Version
Negotiation, like aioquic's (it does not offer Retry: aioquic's token API
differs between the pinned versions, and no mlsquic user has needed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header

from ._aioquic_compat import watch_connection_ids
from .alongside import AlongsideQuicConnection
from .config import MlsQuicConfiguration
from .connection import MlsQuicConnection
from .epochs import EpochKeyedConnection
from .errors import ConfigurationError

Address = Any  # (host, port) or (host, port, flowinfo, scope_id)
MAX_HANDSHAKES = 256
"""Connections a server lets run their handshake at once."""


def connection_class(configuration: MlsQuicConfiguration) -> type[QuicConnection]:
    """The QuicConnection subclass of the configuration's mode."""
    return MlsQuicConnection if configuration.mode == "mls" else AlongsideQuicConnection


def _check(configuration: object, *, is_client: bool) -> MlsQuicConfiguration:
    if not isinstance(configuration, MlsQuicConfiguration):
        raise ConfigurationError("mlsquic needs an MlsQuicConfiguration (for plain QUIC use aioquic directly)")
    if configuration.is_client != is_client:
        raise ConfigurationError(f"a {'client' if is_client else 'server'} needs is_client={is_client}")
    return configuration


@contextlib.asynccontextmanager
async def connect(host: str, port: int, *, configuration: MlsQuicConfiguration,
                  create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
                  stream_handler: Any = None, wait_connected: bool = True,
                  local_port: int = 0) -> AsyncIterator[QuicConnectionProtocol]:
    """Connect to an mlsquic server, like ``aioquic.asyncio.connect``; yields the protocol."""
    _check(configuration, is_client=True)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    # a host name and a port resolve to IPv4 (host, port) or IPv6 (host, port, flowinfo, scope_id) addresses
    addr = cast("tuple[str, int] | tuple[str, int, int, int]", infos[0][4])
    if len(addr) == 2:
        addr = ("::ffff:" + addr[0], addr[1], 0, 0)
    if configuration.server_name is None:
        configuration.server_name = host
    connection = connection_class(configuration)(configuration=configuration)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", local_port, 0, 0))
    except BaseException:
        sock.close()
        raise
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: create_protocol(connection, stream_handler=stream_handler), sock=sock)
    cast(EpochKeyedConnection, connection).wakeup = protocol.transmit
    try:
        protocol.connect(addr, transmit=wait_connected)
        if wait_connected:
            await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()
        await protocol.wait_closed()
        transport.close()


class MlsQuicServer(asyncio.DatagramProtocol):
    """Routes datagrams to one protocol per connection, creating mlsquic connections for new Initials."""

    def __init__(self, *, configuration: MlsQuicConfiguration,
                 create_protocol: Callable[..., QuicConnectionProtocol], stream_handler: Any = None,
                 max_handshakes: int = MAX_HANDSHAKES) -> None:
        self._configuration = configuration
        self._connection_class = connection_class(configuration)
        self._create_protocol = create_protocol
        self._stream_handler = stream_handler
        self._loop = asyncio.get_running_loop()
        self._protocols: dict[bytes, QuicConnectionProtocol] = {}
        self._handshaking: dict[QuicConnectionProtocol, EpochKeyedConnection] = {}
        self.max_handshakes = max_handshakes
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        """Close every connection and stop listening."""
        for protocol in set(self._protocols.values()):
            protocol.close()
        self._protocols.clear()
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        assert self._transport is not None
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self._configuration.connection_id_length)
        except ValueError:
            return  # not QUIC
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION and header.version is not None
                and header.version not in self._configuration.supported_versions):
            self._transport.sendto(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self._configuration.supported_versions), addr)
            return
        protocol = self._protocols.get(header.destination_cid)
        is_new = len(data) >= SMALLEST_MAX_DATAGRAM_SIZE and header.packet_type == QuicPacketType.INITIAL
        if protocol is None and is_new:
            if self.pending_handshakes() >= self.max_handshakes:
                return  # the client retries; established connections are not disturbed
            protocol = self._accept(header, addr)
        if protocol is not None:
            protocol.datagram_received(data, addr)

    def _accept(self, header: Any, addr: Address) -> QuicConnectionProtocol:
        assert self._transport is not None
        connection = cast(EpochKeyedConnection, self._connection_class(
            configuration=self._configuration, original_destination_connection_id=header.destination_cid))
        protocol = self._create_protocol(connection, stream_handler=self._stream_handler)
        connection.wakeup = protocol.transmit
        protocol.connection_made(self._transport)
        watch_connection_ids(protocol, issued=partial(self._issued, protocol=protocol),
                             retired=partial(self._retired, protocol=protocol),
                             terminated=partial(self._terminated, protocol=protocol))
        self._protocols[header.destination_cid] = protocol
        self._protocols[connection.host_cid] = protocol
        self._handshaking[protocol] = connection
        return protocol

    def pending_handshakes(self) -> int:
        """Connections whose MLS handshake is not complete (counted each time a new one asks)."""
        for protocol, connection in list(self._handshaking.items()):
            if connection.mls_complete() or protocol not in self._protocols.values():
                del self._handshaking[protocol]
        return len(self._handshaking)

    def _issued(self, cid: bytes, protocol: QuicConnectionProtocol) -> None:
        self._protocols[cid] = protocol

    def _retired(self, cid: bytes, protocol: QuicConnectionProtocol) -> None:
        if self._protocols.get(cid) is protocol:
            del self._protocols[cid]

    def _terminated(self, protocol: QuicConnectionProtocol) -> None:
        self._handshaking.pop(protocol, None)
        for cid, known in list(self._protocols.items()):
            if known is protocol:
                del self._protocols[cid]


async def serve(host: str, port: int, *, configuration: MlsQuicConfiguration,
                create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
                stream_handler: Any = None, max_handshakes: int = MAX_HANDSHAKES) -> MlsQuicServer:
    """Start an mlsquic server at ``host``:``port``, like ``aioquic.asyncio.serve``.

    At most ``max_handshakes`` connections may be in their handshake at once; Initials beyond are
    dropped (the client retransmits), and each handshake ends within ``mls_handshake_timeout``."""
    if max_handshakes < 1:
        raise ConfigurationError("max_handshakes must be >= 1")
    _check(configuration, is_client=False)
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: MlsQuicServer(configuration=configuration, create_protocol=create_protocol,
                              stream_handler=stream_handler, max_handshakes=max_handshakes),
        local_addr=(host, port))
    return server
