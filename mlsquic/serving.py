"""``serve`` and ``connect``: aioquic's asyncio entry points, building mlsquic's connection class.

aioquic's own ``serve``/``connect`` always instantiate ``QuicConnection``; they
take no connection class.  These two do the same job (same arguments, same
protocol objects) and pass the class explicitly, so importing mlsquic changes
nothing for any other aioquic user in the process.  The server routes
datagrams by connection id and answers unknown versions with Version
Negotiation, like aioquic's, and admits new connections more carefully:

* Every new QUIC-MLS connection costs the server an MLS group (HPKE,
  signatures) as soon as its Initial arrives, and Initial protection is no
  secret: anyone who captured one client Initial can re-wrap its ClientHello
  under fresh connection ids, with no reply needed.  So a server validates
  addresses with Retry (RFC 9000 section 8.1.2: ``retry="always"``, or
  ``"auto"``, the default, once more than half the handshake slots are busy),
  creating a connection only for an Initial whose token proves the address.
  The tokens are our own (:class:`RetryTokens`), not aioquic's
  ``QuicRetryTokenHandler``: that class changed between the pinned versions
  (1.2 uses RSA-OAEP, 256-byte tokens and a private-key operation for every
  token an attacker sends, with no expiry and no check of the connection id).
* One source (an IPv4 address, an IPv6 /64) may have at most
  ``max_handshakes_per_address`` handshakes pending, so it cannot take every slot.
* Version Negotiation answers only datagrams of at least 1200 bytes (RFC 9000
  sections 5.2.2, 6.1 and 14.1): a 9-byte datagram gets nothing back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._aioquic_compat import watch_connection_ids
from .alongside import AlongsideQuicConnection
from .config import MlsQuicConfiguration
from .connection import MlsQuicConnection
from .epochs import EpochKeyedConnection
from .errors import ConfigurationError
from .protocol import MlsQuicProtocol

Address = Any  # (host, port) or (host, port, flowinfo, scope_id)
RetryMode = Literal["always", "never", "auto"]
MAX_HANDSHAKES = 256
"""Connections a server lets run their handshake at once."""
MAX_HANDSHAKES_PER_ADDRESS = 8
"""Pending handshakes one source (IPv4 address, IPv6 /64) may have: a few clients behind one NAT, not every slot."""
DEFAULT_RETRY: RetryMode = "auto"
"""``serve``'s Retry policy: validate addresses once more than half the handshake slots are busy."""
RETRY_TOKEN_LIFETIME = 30.0
"""Seconds a Retry token is accepted.  A client answers a Retry at once, but while every slot is busy
its token-carrying Initial is dropped and retransmitted with backoff, so the token must outlive a few
retransmissions; after that an on-path copy of it is useless (RFC 9000 section 8.1.4)."""
IPV6_PREFIX_BYTES = 8
"""An IPv6 source is counted by its /64: one host usually owns the whole prefix."""
_NONCE_BYTES = 12
_TOKEN_TIME = struct.Struct("!Q")  # issue time, milliseconds of the server's monotonic clock


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
                  create_protocol: Callable[..., QuicConnectionProtocol] = MlsQuicProtocol,
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


def _ip(addr: Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The source IP of a datagram; an IPv4-mapped IPv6 address (a dual-stack socket) as the IPv4 address."""
    ip = ipaddress.ip_address(addr[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_key(addr: Address) -> bytes:
    """What the per-address handshake limit counts by: an IPv4 address (/32) or an IPv6 /64.

    IPv4-mapped IPv6 addresses count as their IPv4 address; otherwise every IPv4 client of a
    dual-stack server would share the one prefix ``::ffff:0:0/96``."""
    packed = _ip(addr).packed
    return packed if len(packed) == 4 else packed[:IPV6_PREFIX_BYTES]


class InvalidRetryToken(ValueError):
    """A Retry token this server issued, but for another address or connection id, or expired."""


class RetryTokens:
    """Stateless Retry tokens (RFC 9000 section 8.1.2), sealed with AES-128-GCM under a per-server key.

    A token binds the client's address and port, the connection id the client first chose (which
    the server must echo in its transport parameters) and the Retry's source connection id (the
    only destination id the client may use with it), and it expires after ``lifetime`` seconds.
    The key lives in memory only: tokens do not survive a restart or cross to another server.
    """

    def __init__(self, *, lifetime: float = RETRY_TOKEN_LIFETIME) -> None:
        self.lifetime = lifetime
        self._aead = AESGCM(AESGCM.generate_key(bit_length=128))

    @staticmethod
    def _address(addr: Address) -> bytes:
        return _ip(addr).packed + struct.pack("!H", addr[1])

    def create(self, *, address: Address, original_destination_cid: bytes, retry_source_cid: bytes,
               now: float) -> bytes:
        """A token for ``address`` to present in its next Initial, sent to ``retry_source_cid``."""
        plain = _TOKEN_TIME.pack(int(now * 1000)) + b"".join(
            bytes([len(part)]) + part for part in (self._address(address), original_destination_cid, retry_source_cid))
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, None)

    def validate(self, token: bytes, *, address: Address, destination_cid: bytes, now: float) -> bytes | None:
        """The original destination connection id, or None when the token is not ours (RFC 9000 section
        8.1.3: such a client is treated as unvalidated); raises InvalidRetryToken for one of our tokens
        that does not fit this datagram (section 8.1.2: the server then closes with INVALID_TOKEN)."""
        try:
            plain = self._aead.decrypt(token[:_NONCE_BYTES], token[_NONCE_BYTES:], None)
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and a tag
            return None
        (issued_ms,) = _TOKEN_TIME.unpack_from(plain)
        parts, offset = [], _TOKEN_TIME.size
        for _ in range(3):
            length = plain[offset]
            parts.append(plain[offset + 1 : offset + 1 + length])
            offset += 1 + length
        encoded_address, original_destination_cid, retry_source_cid = parts
        if encoded_address != self._address(address):
            raise InvalidRetryToken("the token was issued to another address")
        if destination_cid != retry_source_cid:
            raise InvalidRetryToken("the Initial is not sent to the Retry's connection id")
        if not 0 <= now - issued_ms / 1000 <= self.lifetime:
            raise InvalidRetryToken("the token has expired")
        return original_destination_cid


def invalid_token_close(header: QuicHeader) -> bytes:
    """A server Initial closing the connection with INVALID_TOKEN (RFC 9000 section 8.1.2).

    The client has already used its one Retry and would wait for a timeout; this tells it now.
    Initial keys come from the client's destination id, so no connection state is needed, and
    the reply is far smaller than the 1200-byte datagram it answers."""
    assert header.version is not None  # an Initial: long header
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    builder = QuicPacketBuilder(host_cid=header.destination_cid, peer_cid=header.source_cid,
                                version=header.version, is_client=False,
                                max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE)
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    frame = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=8)
    frame.push_uint_var(QuicErrorCode.INVALID_TOKEN)
    frame.push_uint_var(QuicFrameType.PADDING)  # the frame that caused it: none in particular
    frame.push_uint_var(0)  # no reason phrase
    datagrams, _ = builder.flush()
    return datagrams[0]


def _retry_mode(retry: RetryMode | bool) -> RetryMode:
    """``retry`` as one of the three modes; a bool as aioquic's ``serve(retry=...)`` means it."""
    if isinstance(retry, bool):
        return "always" if retry else "never"
    if retry not in ("always", "never", "auto"):
        raise ConfigurationError(f"retry must be 'always', 'never', 'auto' or a bool, not {retry!r}")
    return retry


def _check_limits(max_handshakes: int, max_handshakes_per_address: int) -> None:
    if max_handshakes < 1:
        raise ConfigurationError("max_handshakes must be >= 1")
    if max_handshakes_per_address < 1:
        raise ConfigurationError("max_handshakes_per_address must be >= 1")


@dataclass
class AdmissionCounters:
    """What the server did with datagrams that did not belong to a connection (for operators and tests)."""

    retries: int = 0
    """Retry packets sent."""
    invalid_tokens: int = 0
    """Initials carrying one of our tokens for another address or connection id, or expired: closed."""
    busy: int = 0
    """New Initials dropped because every handshake slot was taken (the client retransmits)."""
    address_busy: int = 0
    """New Initials dropped because their source had ``max_handshakes_per_address`` pending."""
    version_negotiations: int = 0
    """Version Negotiation packets sent."""
    too_small: int = 0
    """Datagrams with an unknown version dropped unanswered for being under 1200 bytes."""


@dataclass
class _Pending:
    connection: EpochKeyedConnection
    source: bytes  # address_key() of the address that opened it


class MlsQuicServer(asyncio.DatagramProtocol):
    """Routes datagrams to one protocol per connection, creating mlsquic connections for new Initials.

    ``retry`` defaults to "never" here, as before Retry existed, for code that drives the
    protocol by hand; :func:`serve`, the way applications start a server, defaults to "auto"."""

    def __init__(self, *, configuration: MlsQuicConfiguration,
                 create_protocol: Callable[..., QuicConnectionProtocol], stream_handler: Any = None,
                 max_handshakes: int = MAX_HANDSHAKES, max_handshakes_per_address: int = MAX_HANDSHAKES_PER_ADDRESS,
                 retry: RetryMode | bool = "never") -> None:
        _check_limits(max_handshakes, max_handshakes_per_address)
        self._configuration = configuration
        self._connection_class = connection_class(configuration)
        self._create_protocol = create_protocol
        self._stream_handler = stream_handler
        self._loop = asyncio.get_running_loop()
        self._protocols: dict[bytes, QuicConnectionProtocol] = {}
        self._handshaking: dict[QuicConnectionProtocol, _Pending] = {}
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_address = max_handshakes_per_address
        self.retry: RetryMode = _retry_mode(retry)
        self.counters = AdmissionCounters()
        self._tokens = RetryTokens()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        """Close every connection and stop listening."""
        for protocol in set(self._protocols.values()):
            protocol.close()
        self._protocols.clear()
        self._handshaking.clear()
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
            # RFC 9000 sections 5.2.2 and 14.1: a datagram too small to open a connection is dropped, so a
            # spoofed tiny datagram cannot make us send anything (aioquic answers any size).
            if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
                self.counters.too_small += 1
                return
            self.counters.version_negotiations += 1
            self._transport.sendto(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self._configuration.supported_versions), addr)
            return
        protocol = self._protocols.get(header.destination_cid)
        is_new = len(data) >= SMALLEST_MAX_DATAGRAM_SIZE and header.packet_type == QuicPacketType.INITIAL
        if protocol is None and is_new:
            protocol = self._admit(header, addr)
        if protocol is not None:
            protocol.datagram_received(data, addr)

    def _admit(self, header: QuicHeader, addr: Address) -> QuicConnectionProtocol | None:
        """A protocol for a new connection's Initial, or None after answering with Retry or dropping it.

        Nothing here costs more than a few symmetric-key operations: the MLS work starts only once
        a connection exists, and under pressure only a token proving the address creates one."""
        assert self._transport is not None
        now = self._loop.time()
        original_destination_cid: bytes | None = None
        if header.token:
            try:
                original_destination_cid = self._tokens.validate(
                    header.token, address=addr, destination_cid=header.destination_cid, now=now)
            except InvalidRetryToken:
                self.counters.invalid_tokens += 1
                self._transport.sendto(invalid_token_close(header), addr)
                return None
        validated = original_destination_cid is not None
        pending = self.pending_handshakes()
        if not validated and self.retry_required(pending):
            self._send_retry(header, addr, now)
            return None
        if pending >= self.max_handshakes:
            self.counters.busy += 1
            return None  # the client retransmits; established connections are not disturbed
        source = address_key(addr)
        if sum(1 for p in self._handshaking.values() if p.source == source) >= self.max_handshakes_per_address:
            self.counters.address_busy += 1
            return None
        if not validated:
            return self._accept(header, source, original_destination_cid=header.destination_cid)
        # After a Retry the client sends to our Retry id and must find both ids in our transport parameters.
        return self._accept(header, source, original_destination_cid=cast(bytes, original_destination_cid),
                            retry_source_cid=header.destination_cid)

    def retry_required(self, pending: int | None = None) -> bool:
        """Whether a new Initial without a valid token is answered with Retry now.

        "auto" asks once more than half the slots are busy: a flood from spoofed addresses can then
        hold just over half the slots (and cause that many MLS handshakes per ``mls_handshake_timeout``),
        while clients that can receive take the rest after one more round trip."""
        if self.retry != "auto":
            return self.retry == "always"
        busy = self.pending_handshakes() if pending is None else pending
        return 2 * busy > self.max_handshakes

    def _send_retry(self, header: QuicHeader, addr: Address, now: float) -> None:
        assert self._transport is not None and header.version is not None
        retry_source_cid = os.urandom(self._configuration.connection_id_length)
        token = self._tokens.create(address=addr, original_destination_cid=header.destination_cid,
                                    retry_source_cid=retry_source_cid, now=now)
        self.counters.retries += 1
        self._transport.sendto(encode_quic_retry(
            version=header.version, source_cid=retry_source_cid, destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid, retry_token=token), addr)

    def _accept(self, header: QuicHeader, source: bytes, *, original_destination_cid: bytes,
                retry_source_cid: bytes | None = None) -> QuicConnectionProtocol:
        assert self._transport is not None
        connection = cast(EpochKeyedConnection, self._connection_class(
            configuration=self._configuration, original_destination_connection_id=original_destination_cid,
            retry_source_connection_id=retry_source_cid))
        protocol = self._create_protocol(connection, stream_handler=self._stream_handler)
        connection.wakeup = protocol.transmit
        protocol.connection_made(self._transport)
        watch_connection_ids(protocol, issued=partial(self._issued, protocol=protocol),
                             retired=partial(self._retired, protocol=protocol),
                             terminated=partial(self._terminated, protocol=protocol))
        self._protocols[header.destination_cid] = protocol
        self._protocols[connection.host_cid] = protocol
        self._handshaking[protocol] = _Pending(connection, source)
        return protocol

    def pending_handshakes(self) -> int:
        """Connections whose MLS handshake is not complete (counted each time a new one asks).

        A connection leaves when it completes or terminates (``_terminated``): no scan of the routing
        table, which holds every established connection's ids, for each new Initial."""
        for protocol, pending in list(self._handshaking.items()):
            if pending.connection.mls_complete():
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
                create_protocol: Callable[..., QuicConnectionProtocol] = MlsQuicProtocol,
                stream_handler: Any = None, max_handshakes: int = MAX_HANDSHAKES,
                max_handshakes_per_address: int = MAX_HANDSHAKES_PER_ADDRESS,
                retry: RetryMode | bool = DEFAULT_RETRY) -> MlsQuicServer:
    """Start an mlsquic server at ``host``:``port``, like ``aioquic.asyncio.serve``.

    At most ``max_handshakes`` connections may be in their handshake at once, at most
    ``max_handshakes_per_address`` of them from one source (IPv4 address or IPv6 /64); Initials
    beyond are dropped (the client retransmits), and each handshake ends within
    ``mls_handshake_timeout``.  ``retry`` validates client addresses with a Retry round trip before
    any MLS work: "always", "never", or "auto" (the default: once more than half the slots are
    busy); True and False mean "always" and "never", as in aioquic."""
    _check_limits(max_handshakes, max_handshakes_per_address)
    mode = _retry_mode(retry)
    _check(configuration, is_client=False)
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: MlsQuicServer(configuration=configuration, create_protocol=create_protocol,
                              stream_handler=stream_handler, max_handshakes=max_handshakes,
                              max_handshakes_per_address=max_handshakes_per_address, retry=mode),
        local_addr=(host, port))
    return server
