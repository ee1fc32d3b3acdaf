"""The MLS-TLS tunnel on loopback: bulk data across many rekeys, and a cut link resumed without loss."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from mls2p import RekeyPolicy
from mls2p.errors import StoreError
from mls2p.store import MemorySessionStore
from mls2p.testing import config, self_signed_server_certificate
from mlscore.errors import DecodeError
from mlstls import MlsTlsConfiguration, TlsSettings
from mlstls.link import Frame, FrameType, ReliableLink
from mlstls.tunnel import TunnelClient, TunnelServer

TIMEOUT = 120


async def digest_target() -> tuple[asyncio.Server, int]:
    """A target service that answers the SHA-256 (and length) of everything it received."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest, count = hashlib.sha256(), 0
        while data := await reader.read(1 << 20):
            digest.update(data)
            count += len(data)
        writer.write(digest.hexdigest().encode() + b" %d" % count)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def tunnel(rekey: RekeyPolicy, certificate: tuple[str, str] | None = None
                 ) -> tuple[TunnelServer, TunnelClient, int, asyncio.Server]:
    """A tunnel on loopback; with ``certificate``, MLS runs alongside TLS 1.3."""
    target, target_port = await digest_target()
    server_tls = TlsSettings(certfile=certificate[0], keyfile=certificate[1]) if certificate else None
    client_tls = TlsSettings(cafile=certificate[0], server_hostname="localhost") if certificate else None
    server = TunnelServer(MlsTlsConfiguration(config(b"server", rekey=rekey), False, MemorySessionStore(),
                                              tls=server_tls), ("127.0.0.1", target_port))
    server_port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client", rekey=rekey), True, MemorySessionStore(),
                                              tls=client_tls), ("127.0.0.1", server_port), retry_delay=0.05)
    local_port = await client.start("127.0.0.1", 0)
    return server, client, local_port, target


async def push(local_port: int, total: int, during=None) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
    sent = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    for i in range(total // len(chunk)):
        sent.update(chunk)
        writer.write(chunk)
        await writer.drain()
        if during is not None:
            await during(i)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(200), TIMEOUT)
    writer.close()
    return f"{sent.hexdigest()} {total}", answer.decode()


async def test_24_megabytes_across_dozens_of_rekeys() -> None:
    server, client, local_port, target = await tunnel(RekeyPolicy(max_bytes=64 * 1024))
    try:
        expected, answer = await asyncio.wait_for(push(local_port, 24 << 20), TIMEOUT)
        assert answer == expected
        assert client.link.writer is not None and client.link.writer.epoch >= 30  # one rekey in flight at a time
    finally:
        await client.close()
        await server.close()
        target.close()


@pytest.mark.parametrize("alongside", [False, True], ids=["in-place", "alongside-tls"])
async def test_cut_mid_transfer_resumes_without_loss_or_duplication(alongside: bool, tmp_path) -> None:
    # Alongside TLS, every reconnect must keep the TLS settings (it once dropped them and looped forever).
    certificate = self_signed_server_certificate(str(tmp_path), "localhost") if alongside else None
    server, client, local_port, target = await tunnel(RekeyPolicy(max_bytes=1 << 20), certificate)
    epochs = []

    async def cut(i: int) -> None:
        if i in (5, 13, 21):
            await asyncio.wait_for(client.link.link_ready.wait(), TIMEOUT)
            epochs.append(client.link.writer.epoch if client.link.writer else None)
            client.cut()
            await asyncio.sleep(0.01)

    try:
        expected, answer = await asyncio.wait_for(push(local_port, 32 << 20, cut), TIMEOUT)
        assert answer == expected
        assert client.link.stats.reconnects >= 3
        link = next(iter(server.links.values()))
        assert link.stats.reconnects >= 3
    finally:
        await client.close()
        await server.close()
        target.close()


def synchronize(a: ReliableLink, b: ReliableLink) -> tuple[list[Frame], list[Frame]]:
    """A new connection: both send RESUME, both read the other's; returns what each application saw."""
    hello_a, hello_b = a.connected(), b.connected()
    frames_a, retransmit_a = a.feed(hello_b)
    frames_b, retransmit_b = b.feed(hello_a)
    more_b, _ = b.feed(retransmit_a)
    more_a, _ = a.feed(retransmit_b)
    return frames_a + more_a, frames_b + more_b


def test_reliable_link_retransmits_exactly_the_missing_bytes() -> None:
    a, b = ReliableLink(), ReliableLink()
    synchronize(a, b)
    wire = a.send(Frame(FrameType.OPEN, 1)) + a.send(Frame(FrameType.DATA, 1, b"x" * 100))
    frames, _ = b.feed(wire[:20])  # the rest is lost with the connection
    assert [f.kind for f in frames] == [FrameType.OPEN]
    assert a.send(Frame(FrameType.DATA, 1, b"y"))  # written, then lost
    a.disconnected()
    b.disconnected()
    assert a.send(Frame(FrameType.DATA, 1, b"z")) == b""  # held while down
    _, frames = synchronize(a, b)
    assert [(f.kind, f.payload) for f in frames] == [(FrameType.DATA, b"x" * 100), (FrameType.DATA, b"y"),
                                                     (FrameType.DATA, b"z")]
    with pytest.raises(DecodeError):
        ReliableLink().feed(b"\x09" + bytes(8))


def test_a_restarted_peer_resets_the_link_on_both_sides() -> None:
    client, server = ReliableLink(), ReliableLink()
    synchronize(client, server)
    server.feed(client.send(Frame(FrameType.OPEN, 1)) + client.send(Frame(FrameType.DATA, 1, b"old")))
    client.disconnected()
    server.disconnected()
    restarted = ReliableLink()  # the client process was killed and started again: a new link id
    seen_by_client, seen_by_server = synchronize(restarted, server)
    assert [f.kind for f in seen_by_server] == [FrameType.RESET]  # the server closes the old streams
    assert seen_by_client == []  # the new client had nothing to lose
    assert server.sent_offset == server.received_offset == server.unacked == 0
    frames, _ = server.feed(restarted.send(Frame(FrameType.OPEN, 1)) + restarted.send(Frame(FrameType.DATA, 1, b"new")))
    assert [(f.kind, f.payload) for f in frames] == [(FrameType.OPEN, b""), (FrameType.DATA, b"new")]
    assert restarted.resets == 0 and server.resets == 1


async def test_a_connection_lost_mid_resumption_keeps_the_session() -> None:
    """A server that dies while resuming us (found by the fleet test: the client used to forget its session
    on "transport lost" and fall back to a fresh handshake, losing it although the store still held it)."""
    target, target_port = await digest_target()
    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, MemorySessionStore()),
                          ("127.0.0.1", target_port))
    server_port = await server.start("127.0.0.1", 0)
    dying = 3

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dying
        if dying and client.link.stats.fresh_handshakes:
            dying -= 1
            await reader.read(1)  # the resumption request arrives, and the node dies
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(1 << 16):
                dst.write(data)
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    proxy = await asyncio.start_server(front, "127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()),
                          ("127.0.0.1", proxy.sockets[0].getsockname()[1]), retry_delay=0.01)
    try:
        local_port = await client.start("127.0.0.1", 0)
        client.cut()
        expected, answer = await asyncio.wait_for(push(local_port, 1 << 20), TIMEOUT)
        assert answer == expected and dying == 0
        assert client.link.stats.fresh_handshakes == 1 and client.link.stats.resumptions == 1
    finally:
        await client.close()
        await server.close()
        proxy.close()
        target.close()


async def test_a_server_that_keeps_failing_resumptions_is_given_up_on_for_a_fresh_handshake() -> None:
    """Found by review: internal_error counted as temporary for ever, so one bad stored entry (or any lasting
    server-side fault) locked the client out.  After ``resume_give_up`` seconds it starts afresh."""

    class Broken(MemorySessionStore):
        failing = False

        def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
            if self.failing and replaces is not None:
                raise StoreError("disk on fire")
            super().save(group_id, state, replaces=replaces)

    target, target_port = await digest_target()
    store = Broken()
    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, store), ("127.0.0.1", target_port))
    server_port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()),
                          ("127.0.0.1", server_port), retry_delay=0.01, max_retry_delay=0.05, resume_give_up=0.3)
    try:
        local_port = await client.start("127.0.0.1", 0)
        store.failing = True
        client.cut()
        expected, answer = await asyncio.wait_for(push(local_port, 1 << 20), TIMEOUT)
        assert answer == expected
        assert client.link.stats.fresh_handshakes == 2 and client.link.stats.resumptions == 0
        assert client.link.stats.failed_connects >= 2  # it did retry before giving up
    finally:
        await client.close()
        await server.close()
        target.close()


async def test_streams_end_on_both_sides_when_the_target_closes() -> None:
    """Found by a new user: when the target closed a stream, the tunnel client never closed its local
    connection (CLOSE-WAIT) and both ends kept the stream for ever."""

    async def hello_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(hello_and_close, "127.0.0.1", 0)
    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, MemorySessionStore()),
                          ("127.0.0.1", target.sockets[0].getsockname()[1]))
    server_port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()),
                          ("127.0.0.1", server_port), retry_delay=0.01)
    try:
        local_port = await client.start("127.0.0.1", 0)
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"hello"  # EOF arrives: not CLOSE-WAIT
            writer.close()
        link = next(iter(server.links.values()))
        for _ in range(1000):
            if not client.link.streams and not link.streams:
                break
            await asyncio.sleep(0.01)
        assert client.link.streams == {} and link.streams == {}
    finally:
        await client.close()
        await server.close()
        target.close()
