"""The installed ``mls-tunnel`` command as a user runs it: keys, pins, data through, clean SIGTERM, clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

TIMEOUT = 60
COMMAND = [sys.executable, "-m", "mlstls.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fingerprint(state_dir: Path) -> str:
    done = subprocess.run([*COMMAND, "fingerprint", "--state-dir", str(state_dir)], capture_output=True, text=True,
                          timeout=TIMEOUT, check=True)
    return done.stdout.strip()


async def start(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, "--status-interval", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        assert line, "the tunnel exited before it listened"
        if b" on 127.0.0.1:" in line:
            return process


async def test_cli_forwards_and_shuts_down_on_sigterm(tmp_path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    server_key, client_key = fingerprint(server_dir), fingerprint(client_dir)
    assert server_key.startswith("sha256:") and server_key == fingerprint(server_dir)  # stable
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    server_port, client_port = free_port(), free_port()
    server = await start("server", "--listen", f"127.0.0.1:{server_port}", "--target", f"127.0.0.1:{target_port}",
                         "--state-dir", str(server_dir), "--rekey-seconds", "0.3", "--identity", "server",
                         "--allow", f"client={client_key}")
    client = await start("client", "--listen", f"127.0.0.1:{client_port}", "--connect", f"127.0.0.1:{server_port}",
                         "--state-dir", str(client_dir), "--identity", "client", "--allow", f"server={server_key}")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client_port)
        payload = os.urandom(1 << 20)
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        writer.close()
        assert client.stdout is not None
        status = await asyncio.wait_for(client.stdout.readline(), TIMEOUT)
        assert b"link up epoch" in status and b"last rekey" in status
    finally:
        for process in (client, server):
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), TIMEOUT) for p in (client, server)]
        target.close()
    assert codes == [0, 0]
    assert list((client_dir / "sessions").iterdir())  # state kept for a later resumption


def test_without_any_trust_option_it_refuses_to_start_in_one_line(tmp_path) -> None:
    done = subprocess.run([*COMMAND, "client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
                           "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert "no peer is trusted" in done.stderr and "--allow NAME=FINGERPRINT" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_malformed_pin_is_one_clear_line(tmp_path) -> None:
    done = subprocess.run([*COMMAND, "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
                           "--allow", "client=sha256:abc"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and "is not a key fingerprint" in done.stderr and "Traceback" not in done.stderr
