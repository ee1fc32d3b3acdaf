"""Handshake pressure on an mlsquic server: replayed Initials, Retry, per-source limits, tiny datagrams.

Initial protection is no secret (its keys come from the client's destination
connection id), so whoever captured one client Initial can re-wrap its
ClientHello under fresh connection ids and send it again and again, from one
socket, needing no reply; each copy used to cost the server an MLS group and
a slot.  These tests replay that way from 127.0.0.2 while a real client
connects from 127.0.0.1.  Waits are hang guards on the server's counters,
never assertions on speed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicHeader, QuicPacketType, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilder

import mlsquic
from mls2p.session import TwoPartySession
from mlsquic import MlsQuicServer
from mlsquic.serving import (
    MAX_HANDSHAKES_PER_ADDRESS,
    InvalidRetryToken,
    RetryMode,
    RetryTokens,
    address_key,
    connection_class,
)
from mlsquic.testing import (
    Collector,
    EchoServer,
    client_configuration,
    echo_through,
    free_udp_port,
    server_configuration,
)

GUARD = 30.0  # seconds; a hang guard only
CID_LENGTH = 8  # the configurations' connection_id_length
ATTACKER = "127.0.0.2"  # another loopback address: the real clients come from 127.0.0.1
UNKNOWN_VERSION = 0x1A2A3A4A  # reserved for exercising version negotiation (RFC 9000 section 15)


# -- the attacker's tools -------------------------------------------------------------------------

def captured_initial() -> bytes:
    """A real client's first datagram: its Initial with the ClientHello, as seen on the wire."""
    configuration = client_configuration(server_name="localhost")
    client = connection_class(configuration)(configuration=configuration)
    client.connect(("127.0.0.1", 4433), now=0.0)
    datagrams = [data for data, _ in client.datagrams_to_send(now=0.0)]
    assert len(datagrams) == 1, "the ClientHello should fit in one datagram"
    return datagrams[0]


def header_of(datagram: bytes) -> QuicHeader:
    return pull_quic_header(Buffer(data=datagram), host_cid_length=CID_LENGTH)


def rewrap(initial: bytes, destination_cid: bytes) -> bytes:
    """The same CRYPTO frame (and token) in a fresh client Initial for ``destination_cid``: anyone can."""
    buf = Buffer(data=initial)
    header = pull_quic_header(buf, host_cid_length=CID_LENGTH)
    assert header.version is not None
    opener = CryptoPair()
    opener.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    _, payload, _ = opener.decrypt_packet(initial[: header.packet_length], buf.tell(), 0)
    frames = Buffer(data=payload)
    assert frames.pull_uint_var() == QuicFrameType.CRYPTO
    offset, length = frames.pull_uint_var(), frames.pull_uint_var()
    data = frames.pull_bytes(length)
    sealer = CryptoPair()
    sealer.setup_initial(cid=destination_cid, is_client=True, version=header.version)
    builder = QuicPacketBuilder(host_cid=header.source_cid, peer_cid=destination_cid, version=header.version,
                                is_client=True, max_datagram_size=1200, peer_token=header.token)
    builder.start_packet(QuicPacketType.INITIAL, sealer)
    frame = builder.start_frame(QuicFrameType.CRYPTO, capacity=len(data) + 16)
    frame.push_uint_var(offset)
    frame.push_uint_var(len(data))
    frame.push_bytes(data)
    datagrams, _ = builder.flush()
    assert len(datagrams[0]) >= 1200  # a client Initial is padded, or the server would not look at it
    return datagrams[0]


class Socket(asyncio.DatagramProtocol):
    """A UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.put_nowait(data)


@pytest.fixture
async def attacker() -> AsyncIterator[tuple[asyncio.DatagramTransport, Socket]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(Socket, local_addr=(ATTACKER, 0))
    yield transport, protocol
    transport.close()


@pytest.fixture
def mls_work(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts server sessions started by a ClientHello: each is an MLS group, HPKE and signatures."""
    started: list[int] = []
    responder = TwoPartySession.responder

    def counting(cls: type[TwoPartySession], *args: object, **kwargs: object) -> TwoPartySession:
        started.append(1)
        return responder(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TwoPartySession, "responder", classmethod(counting))
    return started


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a hang guard, not a deadline anyone should meet)."""
    async with asyncio.timeout(GUARD):
        while not condition():
            await asyncio.sleep(0.005)


async def start(**options: object) -> tuple[MlsQuicServer, int]:
    port = free_udp_port()
    server = await mlsquic.serve("127.0.0.1", port, configuration=server_configuration(),
                                 create_protocol=EchoServer, **options)  # type: ignore[arg-type]
    return server, port


async def replay(transport: asyncio.DatagramTransport, port: int, count: int) -> None:
    """``count`` copies of one captured ClientHello, each under a fresh destination id, from one socket."""
    initial = captured_initial()
    for _ in range(count):
        transport.sendto(rewrap(initial, os.urandom(CID_LENGTH)), ("127.0.0.1", port))
        await asyncio.sleep(0)


async def real_client_echoes(port: int) -> None:
    async with asyncio.timeout(GUARD), mlsquic.connect(
            "127.0.0.1", port, configuration=client_configuration(), create_protocol=Collector) as client:
        assert await echo_through(client, b"still served", timeout=GUARD) == b"still served"


# -- Retry and the per-source limit --------------------------------------------------------------

async def test_replays_from_one_source_take_at_most_its_share_of_slots(attacker, mls_work) -> None:
    transport, _ = attacker
    # Without the per-source limit the replays alone would fill every slot and lock the real client out.
    server, port = await start(max_handshakes=MAX_HANDSHAKES_PER_ADDRESS + 1, retry="never")
    try:
        await replay(transport, port, 32)
        await until(lambda: server.counters.address_busy + server.counters.busy == 32 - MAX_HANDSHAKES_PER_ADDRESS)
        assert server.counters.busy == 0  # the limit that held them off is the per-source one
        assert server.pending_handshakes() <= MAX_HANDSHAKES_PER_ADDRESS
        assert len(mls_work) == MAX_HANDSHAKES_PER_ADDRESS
        await real_client_echoes(port)  # from 127.0.0.1: the slot left is its own
    finally:
        server.close()


@pytest.mark.parametrize("retry", ["always", True])
async def test_with_retry_always_a_replay_without_a_token_costs_no_mls_work(attacker, mls_work,
                                                                             retry: RetryMode | bool) -> None:
    transport, replies = attacker
    server, port = await start(retry=retry)
    try:
        await replay(transport, port, 8)
        await until(lambda: server.counters.retries == 8)
        assert server.pending_handshakes() == 0 and mls_work == []  # no connection, no MLS group
        for _ in range(8):
            answer = await asyncio.wait_for(replies.received.get(), GUARD)
            assert header_of(answer).packet_type == QuicPacketType.RETRY
            assert len(answer) < 200  # a Retry is small: no amplification towards a spoofed source
        await real_client_echoes(port)  # through a Retry
        assert server.counters.retries == 9 and len(mls_work) == 1
    finally:
        server.close()


async def test_auto_retry_switches_on_when_more_than_half_the_slots_are_busy(attacker, mls_work) -> None:
    transport, _ = attacker
    server, port = await start(max_handshakes=4)
    try:
        assert server.retry == "auto" and server.max_handshakes_per_address == 8  # serve's defaults
        await real_client_echoes(port)
        assert server.counters.retries == 0  # an idle server answers at once
        await replay(transport, port, 10)
        await until(lambda: server.counters.retries == 10 - 3)
        assert len(mls_work) == 1 + 3  # the real client, then replays until 3 of 4 slots were busy
        assert server.retry_required()
        await real_client_echoes(port)  # still served, after one more round trip
        assert server.counters.retries == 10 - 3 + 1
    finally:
        server.close()


class Sink:
    """A datagram transport that keeps what the server sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object = None) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


async def test_a_token_is_good_only_for_its_address_and_retry_connection_id(mls_work) -> None:
    server = MlsQuicServer(configuration=server_configuration(), create_protocol=EchoServer, retry="always")
    sink = Sink()
    server.connection_made(sink)  # type: ignore[arg-type]
    client_address, elsewhere, server_address = ("10.0.0.1", 40000), ("10.0.0.9", 40000), ("10.0.0.2", 4433)
    configuration = client_configuration(server_name="localhost")
    client: QuicConnection = connection_class(configuration)(configuration=configuration)
    client.connect(server_address, now=0.0)
    for data, _ in client.datagrams_to_send(now=0.0):
        server.datagram_received(data, client_address)
    assert header_of(sink.sent[-1]).packet_type == QuicPacketType.RETRY
    client.receive_datagram(sink.sent[-1], server_address, now=0.0)
    with_token = client.datagrams_to_send(now=0.0)[0][0]
    assert header_of(with_token).token

    server.datagram_received(with_token, elsewhere)  # replayed from another address
    server.datagram_received(rewrap(with_token, os.urandom(CID_LENGTH)), client_address)  # to another id
    assert server.counters.invalid_tokens == 2 and server.pending_handshakes() == 0 and mls_work == []
    for close in sink.sent[-2:]:  # both told INVALID_TOKEN in a small Initial, not left to time out
        assert header_of(close).packet_type == QuicPacketType.INITIAL and len(close) <= 1200
    client.receive_datagram(sink.sent[-2], server_address, now=0.0)  # as if the client's NAT had rebound
    while (closed := client.next_event()) is None and (timer := client.get_timer()) is not None:
        client.handle_timer(timer)  # the close takes effect after the draining period
    assert isinstance(closed, ConnectionTerminated) and closed.error_code == QuicErrorCode.INVALID_TOKEN

    server.datagram_received(with_token, client_address)  # the real client
    assert server.pending_handshakes() == 1 and len(mls_work) == 1
    server.close()


def test_retry_tokens_expire_and_foreign_tokens_are_not_ours() -> None:
    tokens = RetryTokens(lifetime=30.0)
    address, cid = ("192.0.2.1", 1234), b"\x01" * 8
    token = tokens.create(address=address, original_destination_cid=b"odcid123", retry_source_cid=cid, now=100.0)
    assert tokens.validate(token, address=address, destination_cid=cid, now=129.0) == b"odcid123"
    with pytest.raises(InvalidRetryToken, match="expired"):
        tokens.validate(token, address=address, destination_cid=cid, now=131.0)
    with pytest.raises(InvalidRetryToken, match="address"):
        tokens.validate(token, address=("192.0.2.1", 1235), destination_cid=cid, now=100.0)
    assert tokens.validate(RetryTokens().create(address=address, original_destination_cid=b"x", retry_source_cid=cid,
                                                now=100.0), address=address, destination_cid=cid, now=100.0) is None
    assert tokens.validate(b"short", address=address, destination_cid=cid, now=100.0) is None


def test_sources_are_counted_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert address_key(("2001:db8:1:2::1", 1)) == address_key(("2001:db8:1:2:ffff::9", 2, 0, 0))
    assert address_key(("2001:db8:1:2::1", 1)) != address_key(("2001:db8:1:3::1", 1))
    assert address_key(("::ffff:192.0.2.7", 1, 0, 0)) == address_key(("192.0.2.7", 2))  # dual-stack sockets
    assert address_key(("::ffff:192.0.2.7", 1, 0, 0)) != address_key(("::ffff:192.0.2.8", 1, 0, 0))


@pytest.mark.parametrize("options", [{"max_handshakes_per_address": 0}, {"retry": "sometimes"}])
async def test_serve_refuses_nonsense_options(options: dict[str, object]) -> None:
    with pytest.raises(mlsquic.errors.ConfigurationError):
        await start(**options)


# -- Version Negotiation ---------------------------------------------------------------------------

def long_header(version: int, size: int, cid: bytes = b"") -> bytes:
    """A long-header datagram of ``size`` bytes with connection ids ``cid`` (both), then zeros."""
    head = bytes([0xC0]) + version.to_bytes(4, "big") + bytes([len(cid)]) + cid + bytes([len(cid)]) + cid
    return head + bytes(size - len(head))


async def test_only_a_full_size_datagram_gets_version_negotiation(attacker) -> None:
    transport, replies = attacker
    server, port = await start()
    try:
        for datagram in (long_header(UNKNOWN_VERSION, 9), long_header(UNKNOWN_VERSION, 1199, b"small123"),
                         long_header(UNKNOWN_VERSION, 1200, b"probe123")):
            transport.sendto(datagram, ("127.0.0.1", port))
        # The server answers in arrival order: had either small one been answered, that reply would come first.
        first = header_of(await asyncio.wait_for(replies.received.get(), GUARD))
        assert first.packet_type == QuicPacketType.VERSION_NEGOTIATION and first.destination_cid == b"probe123"
        assert server.counters.too_small == 2 and server.counters.version_negotiations == 1
        assert replies.received.empty()
    finally:
        server.close()
