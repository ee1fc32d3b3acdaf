"""QUIC-MLS: handshake, bulk data across many Key Phase flips, the time policy, refusals, loss, resumption.

Driven in memory with :class:`mlsquic.testing.QuicPair` (no sockets, simulated
time), so nothing here depends on how fast the machine is; one loopback test
covers ``mlsquic.serve``/``connect``.
"""

from __future__ import annotations

import hashlib
import os

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicPacketType, pull_quic_header

import mlsquic
from mls2p import MemorySessionStore, RekeyPolicy
from mls2p.errors import StoreError
from mls2p.testing import config, impersonator
from mlsquic.testing import Collector, QuicPair, client_configuration, echo_server, echo_through, server_configuration


def established(**kwargs: object) -> QuicPair:
    client = kwargs.pop("client", None) or client_configuration()
    server = kwargs.pop("server", None) or server_configuration()
    pair = QuicPair(client, server, **kwargs)  # type: ignore[arg-type]
    pair.run(pair.established)
    return pair


def test_handshake_and_bulk_transfer_across_rekeys() -> None:
    pair = established()
    quic = pair.client.connection
    assert quic.mls_epoch == 1 and len(quic.mls_session.group.members()) == 2
    data = os.urandom(4 * 1024 * 1024)
    echoed = pair.echo_of(pair.send(data, rekey_every=4))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    assert len(pair.client.epochs) >= 5 and quic.mls_epoch == pair.client.epochs[-1]
    assert pair.server.connection.mls_epoch == quic.mls_epoch


def test_time_policy_rekeys_without_being_asked() -> None:
    pair = established(client=client_configuration(profile=config(b"client", rekey=RekeyPolicy(max_seconds=1.0))))
    pair.advance(0.9)
    assert pair.client.epochs == []  # not yet due
    pair.advance(0.2)
    pair.run(lambda: bool(pair.client.epochs))
    assert pair.client.connection.mls_epoch == 2
    pair.advance(1.5)
    assert pair.client.connection.mls_epoch == 3  # and again a second later


def test_byte_policy_counts_every_batch() -> None:
    pair = established(client=client_configuration(profile=config(b"client", rekey=RekeyPolicy(max_bytes=256 * 1024))))
    data = os.urandom(1024 * 1024)
    assert pair.echo_of(pair.send(data, chunk=4 * 1024)) == data  # many small batches
    assert len(pair.client.epochs) >= 3


def test_impersonator_is_refused_with_a_reason() -> None:
    pair = QuicPair(client_configuration(profile=impersonator(b"client")), server_configuration())
    pair.run(lambda: pair.client.terminated is not None)
    assert pair.client.terminated.reason_phrase == "bad_certificate"  # a stranger learns the code, nothing more
    assert pair.client.terminated.error_code == 0x100 + 42  # bad_certificate


def test_standard_aioquic_client_is_refused_not_hung() -> None:
    plain = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["echo"]))
    pair = QuicPair(plain, server_configuration())
    pair.run(lambda: pair.client.terminated is not None)
    assert pair.client.terminated.error_code >= 0x100


def test_packet_loss_and_reordering_during_rekeys_lose_no_data() -> None:
    pair = established(loss=0.05, reorder=0.1, seed=7)
    data = os.urandom(1024 * 1024)
    assert pair.echo_of(pair.send(data, rekey_every=2, chunk=32 * 1024), max_seconds=300) == data
    assert len(pair.client.epochs) >= 3  # rekeys completed while packets were lost and reordered


def test_resumption_without_a_new_key_package() -> None:
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    profile = config(b"client")
    server = server_configuration(store=server_store)
    first = established(client=client_configuration(profile=profile, store=client_store), server=server)
    assert first.echo_of(first.send(b"first connection")) == b"first connection"
    first.client.connection.rekey()
    first.run(lambda: first.client.epochs == [2])
    group_id = first.client.connection.mls_session.group_id
    second = established(client=client_configuration(profile=profile, store=client_store, resume_group_id=group_id),
                         server=server)
    quic = second.client.connection
    assert quic.mls_session.group_id == group_id and quic.tls.session_resumed
    assert quic.mls_epoch == 4  # resumption advances two epochs
    assert second.echo_of(second.send(b"resumed")) == b"resumed"


def test_both_sides_rekeying_at_once_converge() -> None:
    pair = established(client=client_configuration(profile=config(b"client", rekey=RekeyPolicy(max_seconds=0.02))),
                       server=server_configuration(profile=config(b"server", rekey=RekeyPolicy(max_seconds=0.03))))
    for _ in range(5):
        data = os.urandom(20000)
        assert pair.echo_of(pair.send(data)) == data
        pair.advance(0.05)
    assert len(pair.client.epochs) >= 3
    assert pair.client.connection.mls_epoch == pair.server.connection.mls_epoch


async def test_serve_and_connect_over_loopback() -> None:
    async with echo_server() as port, mlsquic.connect("127.0.0.1", port, configuration=client_configuration(),
                                                       create_protocol=Collector) as client:
        assert type(client._quic) is mlsquic.MlsQuicConnection and client._quic.mls_epoch == 1
        assert await echo_through(client, b"over real sockets", rekey_every=1) == b"over real sockets"


def test_profile_messages_over_16_kib_are_carried() -> None:
    big = b"client-with-a-very-long-name-" * 800  # a 23 KB identity: KeyPackage and Welcome exceed 16 KiB
    pair = established(client=client_configuration(profile=config(big)))
    assert pair.client.connection.mls_epoch == 1
    assert pair.echo_of(pair.send(b"through")) == b"through"


class HandshakeLost(QuicPair):
    """Drops the client's Handshake-space packets (its key confirmation) until ``allow_handshake``."""

    allow_handshake = False
    data_before_confirmation = 0

    def _deliver(self, target, data: bytes, source) -> None:
        if target is self.server and not self.allow_handshake:
            data = strip_handshake_packets(data)
            if not data:
                return
        super()._deliver(target, data, source)

    def _collect(self) -> None:
        server = self.server
        if server is not None:
            events = server.connection._events  # what aioquic queued, before next_event() releases it
            if not server.connection.endpoint.confirmed and any(isinstance(e, StreamDataReceived) for e in events):
                self.data_before_confirmation += 1
        super()._collect()


def strip_handshake_packets(datagram: bytes) -> bytes:
    """The datagram without its long-header Handshake packets (QUIC v1 type 2)."""
    kept, offset = b"", 0
    while offset < len(datagram):
        first = datagram[offset]
        if not first & 0x80:  # a short header packet runs to the end of the datagram
            return kept + datagram[offset:]
        buffer = Buffer(data=datagram[offset:])
        header = pull_quic_header(buffer, host_cid_length=8)
        end = offset + header.packet_length
        if header.packet_type != QuicPacketType.HANDSHAKE:
            kept += datagram[offset:end]
        offset = end
    return kept


def test_a_server_hands_over_no_data_before_the_client_confirmed_the_keys() -> None:
    """Found by the fleet test: 1-RTT data overtaking a lost key confirmation reached the server's
    application (and was echoed) although the session was not confirmed, hence never stored."""
    store = MemorySessionStore()
    pair = HandshakeLost(client_configuration(), server_configuration(store=store))
    pair.run(lambda: pair.server is not None and pair.server.connection.mls_epoch == 1, max_seconds=5)
    stream = pair.client.connection.get_next_available_stream_id()
    pair.client.connection.send_stream_data(stream, b"early data", True)
    pair.run(lambda: pair.now > 0.5)  # the 1-RTT data arrives; the confirmation does not
    assert not pair.server.connection.endpoint.confirmed and store.group_ids() == []
    assert stream not in pair.server.streams  # held back: the application has seen nothing
    pair.allow_handshake = True
    pair.run(lambda: stream in pair.server.finished)
    assert pair.server.connection.endpoint.confirmed and store.group_ids()
    assert pair.server.streams[stream] == b"early data"


def test_a_session_the_server_cannot_store_is_never_confirmed_nor_carries_data() -> None:
    """Found by the fleet test: the server marked the handshake complete before its store write, so a
    failed write still let the client's data through and the client kept a session nobody had stored."""

    class Unwritable(MemorySessionStore):
        def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
            raise StoreError("Redis is down")

    pair = QuicPair(client_configuration(), server_configuration(store=Unwritable()))
    stream = pair.client.connection.get_next_available_stream_id()
    pair.client.connection.send_stream_data(stream, b"early data", True)
    pair.run(lambda: pair.client.terminated is not None, max_seconds=10)
    assert pair.client.terminated.error_code == 0x100 + 80  # internal_error: the details stay in the server's log
    assert not pair.server.connection.endpoint.confirmed
    assert stream not in pair.server.streams and stream not in pair.client.streams  # no data, no echo
