"""A stream cut without close_notify is a truncation, never a clean end (in place of TLS and alongside TLS 1.3).

The server sends 4,000 bytes and then ends its TCP connection underneath
MLS-TLS (a FIN, a close or a reset on the raw asyncio transport, as a crash or
an attacker injecting a FIN would): the client must get every byte that arrived
and then :class:`mlstls.TruncatedStream`, not ``b""``.  A close_notify before
the FIN stays a clean end.  Synchronisation is by events and by the client's
``wait_closed``; the timeouts only guard against a hang.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from mls2p.testing import config, self_signed_server_certificate
from mlscore.errors import RemoteError
from mlstls import MlsTlsConfiguration, MlsTlsWriter, TlsSettings, TruncatedStream, open_connection, start_server

TIMEOUT = 60  # a hang guard only: nothing asserts on speed
PAYLOAD = (b"y" * 99 + b"\n") * 40  # 4,000 bytes in 40 lines
Ending = Literal["close_notify", "fin", "close", "reset"]
MODES = pytest.mark.parametrize("alongside", [False, True], ids=["in-place", "alongside-tls"])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    return self_signed_server_certificate(str(tmp_path), "localhost")


def _configurations(alongside: bool, certificate: tuple[str, str]) -> tuple[MlsTlsConfiguration, MlsTlsConfiguration]:
    cert, key = certificate
    server_tls = TlsSettings(certfile=cert, keyfile=key) if alongside else None
    client_tls = TlsSettings(cafile=cert, server_hostname="localhost") if alongside else None
    return (MlsTlsConfiguration(config(b"server"), is_client=False, tls=server_tls),
            MlsTlsConfiguration(config(b"client"), tls=client_tls))


@dataclass(frozen=True)
class Client:
    port: int
    configuration: MlsTlsConfiguration

    async def connect(self) -> tuple[asyncio.StreamReader, MlsTlsWriter]:
        return await asyncio.wait_for(
            open_connection("127.0.0.1", self.port, configuration=self.configuration), TIMEOUT)


@asynccontextmanager
async def serving(alongside: bool, certificate: tuple[str, str], ending: Ending,
                  release: asyncio.Event | None = None) -> AsyncIterator[Client]:
    """A server that sends PAYLOAD, waits for ``release`` if given, then ends as ``ending`` says.

    Every ending but close_notify goes round MlsTlsWriter.close, on the raw transport, so no
    close_notify is sent.  Yields a way to connect to it.
    """
    server_config, client_config = _configurations(alongside, certificate)

    async def send_then_end(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        writer.write(PAYLOAD)
        await writer.drain()
        if release is not None:
            await release.wait()
        transport = writer.transport
        assert transport is not None
        if ending == "close_notify":
            writer.close()
        elif ending == "fin":
            transport.write_eof()
        elif ending == "close":
            transport.close()
        else:  # linger 0: the kernel answers with a RST instead of a FIN
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    server = await start_server(send_then_end, "127.0.0.1", 0, configuration=server_config)
    async with server:
        yield Client(server.sockets[0].getsockname()[1], client_config)


async def read_until_end(reader: asyncio.StreamReader) -> bytes:
    received = bytearray()
    while chunk := await asyncio.wait_for(reader.read(1000), TIMEOUT):
        received += chunk
    return bytes(received)


@MODES
@pytest.mark.parametrize("ending", ["fin", "close"])
async def test_a_fin_without_close_notify_raises_truncated_stream_after_every_byte(
        alongside: bool, ending: Ending, certificate: tuple[str, str]) -> None:
    async with serving(alongside, certificate, ending) as client:
        reader, writer = await client.connect()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)  # the FIN arrived: all data is buffered
        received = bytearray()
        with pytest.raises(TruncatedStream) as caught:
            while chunk := await asyncio.wait_for(reader.read(1000), TIMEOUT):
                received += chunk
        assert bytes(received) == PAYLOAD  # nothing that arrived is withheld
        assert writer.truncated and writer.get_extra_info("truncated") is True
        error = caught.value
        assert isinstance(error, ConnectionResetError) and isinstance(error, RemoteError)
        assert reader.exception() is error
        with pytest.raises(TruncatedStream):  # it stays the end of the stream
            await reader.read(1)


@MODES
async def test_a_fin_while_the_reader_waits_wakes_it_with_truncated_stream(
        alongside: bool, certificate: tuple[str, str]) -> None:
    release = asyncio.Event()
    async with serving(alongside, certificate, "fin", release) as client:
        reader, writer = await client.connect()
        assert await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), TIMEOUT) == PAYLOAD
        waiting = asyncio.ensure_future(reader.read(1000))
        release.set()
        with pytest.raises(TruncatedStream, match="close_notify"):
            await asyncio.wait_for(waiting, TIMEOUT)
        assert writer.truncated


@MODES
async def test_a_reset_without_close_notify_raises_truncated_stream(
        alongside: bool, certificate: tuple[str, str]) -> None:
    release = asyncio.Event()
    async with serving(alongside, certificate, "reset", release) as client:
        reader, writer = await client.connect()
        assert await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), TIMEOUT) == PAYLOAD
        release.set()
        with pytest.raises(TruncatedStream) as caught:
            await asyncio.wait_for(reader.read(1000), TIMEOUT)
        assert isinstance(caught.value.__cause__, ConnectionResetError)
        assert writer.truncated


@MODES
async def test_readexactly_and_readline_raise_truncated_stream_where_a_clean_end_would_be(
        alongside: bool, certificate: tuple[str, str]) -> None:
    async with serving(alongside, certificate, "fin") as client:
        reader, writer = await client.connect()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        with pytest.raises(TruncatedStream) as caught:
            await reader.readexactly(2 * len(PAYLOAD))
        cause = caught.value.__cause__
        assert isinstance(cause, asyncio.IncompleteReadError) and cause.partial == PAYLOAD

        reader, writer = await client.connect()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        lines = []
        with pytest.raises(TruncatedStream):
            async for line in reader:
                lines.append(line)
        assert b"".join(lines) == PAYLOAD


@MODES
async def test_close_notify_then_fin_is_a_clean_end(alongside: bool, certificate: tuple[str, str]) -> None:
    async with serving(alongside, certificate, "close_notify") as client:
        reader, writer = await client.connect()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        assert await read_until_end(reader) == PAYLOAD
        assert await reader.read(1) == b""
        assert not writer.truncated and writer.get_extra_info("truncated") is False
        assert reader.exception() is None

        reader, writer = await client.connect()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await reader.readexactly(2 * len(PAYLOAD))
        assert not isinstance(caught.value, TruncatedStream) and caught.value.partial == PAYLOAD


@MODES
async def test_our_own_close_is_a_clean_end_on_both_sides(alongside: bool, certificate: tuple[str, str]) -> None:
    server_config, client_config = _configurations(alongside, certificate)
    server_saw: asyncio.Future[tuple[bytes, bool]] = asyncio.get_running_loop().create_future()

    async def read_to_the_end(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        try:
            data = await read_until_end(reader)
        except Exception as exc:
            server_saw.set_exception(exc)
        else:
            server_saw.set_result((data, writer.truncated))

    server = await start_server(read_to_the_end, "127.0.0.1", 0, configuration=server_config)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(
            open_connection("127.0.0.1", port, configuration=client_config), TIMEOUT)
        writer.write(PAYLOAD)
        await writer.drain()
        writer.close()
        assert await asyncio.wait_for(reader.read(1000), TIMEOUT) == b""
        assert not writer.truncated
        assert await asyncio.wait_for(server_saw, TIMEOUT) == (PAYLOAD, False)
