"""Floods and slow peers: a server bounds the handshakes it runs and ends every one that stalls.

Nothing here asserts on speed: the waits are hang guards, and the QUIC cases
run on the in-memory pair's simulated clock.
"""

from __future__ import annotations

import asyncio

from aioquic.quic.connection import QuicConnection

from mls2p.testing import config
from mlsquic import MlsQuicServer
from mlsquic.testing import QuicPair, client_configuration, server_configuration
from mlstls import MlsTlsConfiguration, open_connection, start_server

GUARD = 60  # seconds; a hang guard only


async def _silent(reader, writer) -> None:
    await reader.read()


async def test_mlstls_server_runs_at_most_max_handshakes_at_once() -> None:
    server = await start_server(_silent, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        config(b"server"), is_client=False), max_handshakes=3, handshake_timeout=GUARD)
    port = server.sockets[0].getsockname()[1]
    async with server:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]  # never say a word
        # The server accepts in arrival order, so the fourth finds three handshakes running.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), GUARD) == b""  # refused at once: closed
        for _, w in idle:
            w.close()
        writer.close()


async def test_mlstls_slow_handshake_is_dropped_and_a_real_client_still_connects() -> None:
    server = await start_server(_silent, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        config(b"server"), is_client=False), max_handshakes=1, handshake_timeout=0.5)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03")  # slowloris: two bytes of a record header, then nothing
        assert await asyncio.wait_for(reader.read(), GUARD) == b""  # the server gave up on it
        writer.close()
        _, client = await asyncio.wait_for(open_connection(
            "127.0.0.1", port, configuration=MlsTlsConfiguration(config(b"client"))), GUARD)
        assert client.epoch == 1  # the slot was freed
        client.close()


def test_quic_server_closes_a_client_that_stalls_after_its_first_flight() -> None:
    pair = QuicPair(client_configuration(), server_configuration(mls_handshake_timeout=3.0))
    pair.run(lambda: pair.server is not None)
    stalled = pair.replay(pair.client_datagrams[:1])  # the first flight and then silence
    closed = stalled.terminated
    assert closed is not None and "did not complete the MLS handshake in time" in closed.reason_phrase


class _Sink:
    """A datagram transport that keeps what the server sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


async def test_quic_server_runs_at_most_max_handshakes_at_once() -> None:
    server = MlsQuicServer(configuration=server_configuration(), create_protocol=_protocol, max_handshakes=4)
    server.connection_made(_Sink())  # type: ignore[arg-type]
    for i in range(10):  # ten fresh clients' first Initials
        client = QuicConnection(configuration=client_configuration())
        client.connect(("10.0.0.2", 4433), now=0.0)
        for datagram, _ in client.datagrams_to_send(now=0.0):
            server.datagram_received(datagram, ("10.0.0.1", 40000 + i))
    assert server.pending_handshakes() == 4
    server.close()


def _protocol(connection, stream_handler=None):
    from aioquic.asyncio import QuicConnectionProtocol

    return QuicConnectionProtocol(connection, stream_handler=stream_handler)


def test_a_peer_cannot_force_commits_faster_than_its_budget() -> None:
    """Security round 3, finding 7: 400 ConnectionUpdates in a row cost the server at most the burst, then one
    per interval; the excess waits (counted) and goes when the budget allows."""
    from mls2p.policy import RekeyPolicy
    from mlstls.testing import TlsPair

    policy = RekeyPolicy(peer_commit_interval=0.1, peer_commit_burst=8)
    pair = TlsPair(rekey=policy)
    pair.client.connect()
    pair.pump()
    for _ in range(400):  # as fast as the server answers, at one instant
        pair.client.rekey()
        pair.pump()
    assert pair.server.epoch == 1 + 8  # the burst, and no more
    assert pair.server.endpoint.peer_budget.deferred >= 1
    pair.advance(0.5)  # five intervals: the held commit goes, and four more can follow
    for _ in range(10):
        pair.client.rekey()
        pair.pump()
    assert 1 + 8 + 1 <= pair.server.epoch <= 1 + 8 + 5
    assert pair.client.epoch == pair.server.epoch and not pair.server.closed
