"""MLS-TLS over real loopback TCP: handshake, bulk data across rekeys, resumption, refusals."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from mls2p import RekeyPolicy
from mls2p.store import MemorySessionStore
from mls2p.testing import config
from mlstls import HandshakeError, MlsTlsConfiguration, open_connection, start_server

TIMEOUT = 120  # a hang guard only: nothing asserts on speed


async def echo(reader: asyncio.StreamReader, writer) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def serve(server_config: MlsTlsConfiguration):
    server = await start_server(echo, "127.0.0.1", 0, configuration=server_config)
    return server, server.sockets[0].getsockname()[1]


async def test_echo_across_rekeys() -> None:
    server_config = MlsTlsConfiguration(config(b"server", rekey=RekeyPolicy(max_bytes=300 * 1024)), is_client=False)
    server, port = await serve(server_config)
    async with server:
        client_config = MlsTlsConfiguration(config(b"client", rekey=RekeyPolicy(max_bytes=128 * 1024)))
        reader, writer = await open_connection("127.0.0.1", port, configuration=client_config)
        assert writer.epoch == 1
        epochs = set()
        sent, received = hashlib.sha256(), hashlib.sha256()
        for _ in range(64):
            chunk = os.urandom(64 * 1024)
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
            echoed = await asyncio.wait_for(reader.readexactly(len(chunk)), TIMEOUT)
            received.update(echoed)
            epochs.add(writer.epoch)
        assert received.hexdigest() == sent.hexdigest()
        assert len(epochs) >= 20, epochs  # both sides' byte policies rekeyed many times mid-stream
        writer.close()
        await writer.wait_closed()


async def test_resumption_on_a_new_connection() -> None:
    server_store, client_store = MemorySessionStore(), MemorySessionStore()
    server_config = MlsTlsConfiguration(config(b"server"), is_client=False, store=server_store)
    server, port = await serve(server_config)
    async with server:
        profile = config(b"client")
        reader, writer = await open_connection("127.0.0.1", port,
                                               configuration=MlsTlsConfiguration(profile, store=client_store))
        group_id = writer.connection.session.group_id
        writer.rekey()
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"
        writer.transport.abort()  # the TCP connection is cut
        await writer.wait_closed()
        resumed_config = MlsTlsConfiguration(profile, store=client_store, resume_group_id=group_id)
        reader, writer = await open_connection("127.0.0.1", port, configuration=resumed_config)
        assert writer.connection.session.group_id == group_id
        writer.write(b"again")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"again"
        writer.close()
        await writer.wait_closed()


async def test_unknown_resumption_is_refused_with_an_alert() -> None:
    server_config = MlsTlsConfiguration(config(b"server"), is_client=False, store=MemorySessionStore())
    server, port = await serve(server_config)
    async with server:
        # A client that resumes a group the server never had.
        store = MemorySessionStore()
        first_server_config = MlsTlsConfiguration(config(b"other"), is_client=False, store=MemorySessionStore())
        other, other_port = await serve(first_server_config)
        async with other:
            profile = config(b"client")
            _, writer = await open_connection("127.0.0.1", other_port,
                                              configuration=MlsTlsConfiguration(profile, store=store))
            group_id = writer.connection.session.group_id
            writer.close()
        with pytest.raises(HandshakeError, match=r"ILLEGAL_PARAMETER|no stored session"):
            await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(
                profile, store=store, resume_group_id=group_id))


async def test_garbage_client_is_refused() -> None:
    server_config = MlsTlsConfiguration(config(b"server"), is_client=False)
    server, port = await serve(server_config)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x03\x00\x02\x07\x00")  # a handshake record with an unknown message type
        await writer.drain()
        alert = await asyncio.wait_for(reader.read(100), TIMEOUT)
        assert alert[:1] == b"\x15" and alert[-2:] == b"\x02\x32"  # fatal decode_error, in plaintext
        assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
        writer.close()
