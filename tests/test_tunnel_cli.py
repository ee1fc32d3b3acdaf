"""The installed ``mls-tunnel`` command: two processes, data through, status lines, clean SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys

TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlstls.tunnel", *args, "--status-interval", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    assert b"mls-tunnel" in line, line
    return process


async def test_cli_forwards_and_shuts_down_on_sigterm(tmp_path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    server_port, client_port = free_port(), free_port()
    server = await start("server", "--listen", f"127.0.0.1:{server_port}", "--target", f"127.0.0.1:{target_port}",
                         "--state-dir", str(tmp_path / "server"), "--rekey-seconds", "0.3", "--allow", "client",
                         "--identity", "server")
    client = await start("client", "--listen", f"127.0.0.1:{client_port}", "--connect", f"127.0.0.1:{server_port}",
                         "--state-dir", str(tmp_path / "client"), "--identity", "client")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client_port)
        payload = os.urandom(1 << 20)
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        await asyncio.sleep(1.0)  # time-based rekeys and a status line or two
        writer.close()
        status = await asyncio.wait_for(client.stdout.readline(), TIMEOUT)
        assert b"link up epoch" in status and b"last rekey" in status
    finally:
        for process in (client, server):
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), TIMEOUT) for p in (client, server)]
        target.close()
    assert codes == [0, 0]
    assert list((tmp_path / "client" / "sessions").iterdir())  # state kept for a later resumption
