"""The tunnel as its users run it: processes killed with SIGKILL and started again, data checked each time.

Each scenario runs the real ``mls-tunnel`` commands as subprocesses with their
own state folders, moves data through before and after, and checks it byte for
byte (sha256).  Timeouts are hang guards only; the restart times are measured
by benchmarks/bench_tunnel_restart.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = 60
COMMAND = [sys.executable, "-m", "mlstls.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tunnel:
    """A server and a client process, their state folders, and an echo target."""

    def __init__(self, root: Path) -> None:
        self.server_dir, self.client_dir = root / "server", root / "client"
        self.server_key = self._fingerprint(self.server_dir)
        self.client_key = self._fingerprint(self.client_dir)
        self.server_port, self.client_port = free_port(), free_port()
        self.server: asyncio.subprocess.Process | None = None
        self.client: asyncio.subprocess.Process | None = None
        self.target: asyncio.Server | None = None
        self.log = root / "log"

    @staticmethod
    def _fingerprint(folder: Path) -> str:
        done = subprocess.run([*COMMAND, "fingerprint", "--state-dir", str(folder)], capture_output=True,
                              text=True, timeout=GUARD, check=True)
        return done.stdout.strip()

    async def start_target(self) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib_suppress():
                while data := await reader.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        self.target = await asyncio.start_server(echo, "127.0.0.1", 0)

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        with self.log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(*COMMAND, "-v", *args, "--status-interval", "0.3",
                                                           stdout=log, stderr=log)
        return process

    async def start_server(self) -> None:
        assert self.target is not None
        target_port = self.target.sockets[0].getsockname()[1]
        self.server = await self._spawn("server", "--listen", f"127.0.0.1:{self.server_port}",
                                        "--target", f"127.0.0.1:{target_port}", "--state-dir", str(self.server_dir),
                                        "--identity", "server", "--allow", f"client={self.client_key}")

    async def start_client(self) -> None:
        self.client = await self._spawn("client", "--listen", f"127.0.0.1:{self.client_port}",
                                        "--connect", f"127.0.0.1:{self.server_port}", "--retry-forever",
                                        "--state-dir", str(self.client_dir), "--identity", "client",
                                        "--allow", f"server={self.server_key}")

    @staticmethod
    async def kill(process: asyncio.subprocess.Process | None) -> None:
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), GUARD)

    async def echo_through(self, size: int = 256 * 1024) -> None:
        """Send ``size`` random bytes through the tunnel and check the echo; retries until the tunnel is up."""
        payload = os.urandom(size)
        for _ in range(600):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.client_port)
            except OSError:
                await asyncio.sleep(0.05)  # the client is not listening yet
                continue
            try:
                writer.write(payload)
                await writer.drain()
                echoed = await asyncio.wait_for(reader.readexactly(size), GUARD)
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)  # a stream of a link that was reset: try a new one
                continue
            finally:
                writer.close()
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            return
        raise AssertionError(f"the tunnel never came back; log:\n{self.log.read_text()[-4000:]}")

    async def stop(self) -> None:
        for process in (self.client, self.server):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), GUARD)
        if self.target is not None:
            self.target.close()


def contextlib_suppress():
    import contextlib

    return contextlib.suppress(ConnectionError)


@pytest.fixture
async def tunnel(tmp_path):
    tunnel = Tunnel(tmp_path)
    await tunnel.start_target()
    await tunnel.start_server()
    await tunnel.start_client()
    await tunnel.echo_through()
    try:
        yield tunnel
    finally:
        await tunnel.stop()


async def test_client_killed_and_restarted_resumes(tunnel: Tunnel) -> None:
    await tunnel.kill(tunnel.client)
    await tunnel.start_client()
    await tunnel.echo_through()
    assert "resumed the stored MLS session" in tunnel.log.read_text()


async def test_server_killed_and_restarted_resumes(tunnel: Tunnel) -> None:
    await tunnel.kill(tunnel.server)
    await tunnel.start_server()
    await tunnel.echo_through()
    log = tunnel.log.read_text()
    assert "resumed the stored MLS session" in log and "cannot resume" not in log


async def test_both_killed_and_restarted_resume(tunnel: Tunnel) -> None:
    await tunnel.kill(tunnel.client)
    await tunnel.kill(tunnel.server)
    await tunnel.start_server()
    await tunnel.start_client()
    await tunnel.echo_through()


async def test_a_server_that_lost_its_state_gets_a_fresh_authenticated_handshake(tunnel: Tunnel) -> None:
    await tunnel.kill(tunnel.server)
    shutil.rmtree(tunnel.server_dir / "sessions")
    await tunnel.start_server()
    await tunnel.echo_through()
    assert "running a fresh authenticated handshake" in tunnel.log.read_text()


async def test_a_stream_open_during_a_restart_is_closed_and_new_ones_work(tunnel: Tunnel) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.client_port)
    writer.write(b"x" * 1000)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(1000), GUARD) == b"x" * 1000
    await tunnel.kill(tunnel.server)
    await tunnel.start_server()
    await tunnel.echo_through()  # a new stream works
    closed = await asyncio.wait_for(reader.read(), GUARD)  # the old one was closed (reset), not left hanging
    assert closed == b""
    writer.close()
