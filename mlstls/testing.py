"""mlstls for tests and benchmarks: two connections back to back in memory, and the tunnel as processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mls2p.config import ProfileConfig
from mls2p.store import MemorySessionStore
from mls2p.testing import config

from .alongside import AlongsideConnection
from .config import MlsTlsConfiguration, TlsSettings
from .connection import Event, MlsTlsConnection
from .modes import new_connection

Connection = MlsTlsConnection | AlongsideConnection  # (the Housley mode's connection quacks the same)


def _connection(configuration: MlsTlsConfiguration) -> Connection:
    return new_connection(configuration)  # type: ignore[return-value]


class TlsPair:
    """A client and a server connection; ``pump`` moves bytes both ways until both are quiet.

    The profiles default to :func:`mls2p.testing.config` (the two pin each
    other's keys); pass ``client_profile``/``server_profile`` to play someone
    else, and ``client_tls``/``server_tls`` for MLS alongside TLS 1.3.
    """

    def __init__(self, *, client_profile: ProfileConfig | None = None, server_profile: ProfileConfig | None = None,
                 client_tls: TlsSettings | None = None, server_tls: TlsSettings | None = None,
                 **profile_overrides: Any) -> None:
        self.client_store = MemorySessionStore()
        self.server_store = MemorySessionStore()
        self.client_profile = client_profile or config(b"client", **profile_overrides)
        self.server_profile = server_profile or config(b"server", **profile_overrides)
        self.client_tls, self.server_tls = client_tls, server_tls
        self.client = _connection(MlsTlsConfiguration(self.client_profile, True, self.client_store, tls=client_tls))
        self.server = _connection(MlsTlsConfiguration(self.server_profile, False, self.server_store, tls=server_tls))
        self.received = {"client": bytearray(), "server": bytearray()}
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        self.now = 0.0
        """The simulated monotonic clock both connections are driven with."""

    def advance(self, seconds: float) -> None:
        """Move the clock on and let both connections' timers act (rekey policy, held peer commits)."""
        self.now += seconds
        self.client.poll(self.now)
        self.server.poll(self.now)
        self.pump()

    def reconnect(self, *, client_resumes: bool = True) -> None:
        group_id = self.client.session.group_id if self.client.session else None
        self.client.connection_lost()
        self.server.connection_lost()
        self.client = _connection(MlsTlsConfiguration(self.client_profile, True, self.client_store,
                                                      resume_group_id=group_id if client_resumes else None,
                                                      tls=self.client_tls))
        self.server = _connection(MlsTlsConfiguration(self.server_profile, False, self.server_store,
                                                      tls=self.server_tls))

    def pump(self, limit: int = 100) -> None:
        for _ in range(limit):
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                data = src.data_to_send()
                if data:
                    dst.receive_data(data, self.now)
                    moved = True
            for name, conn in (("client", self.client), ("server", self.server)):
                while (event := conn.next_event()) is not None:
                    self.events[name].append(event)
                    if hasattr(event, "data"):
                        self.received[name] += event.data
            if not moved:
                return
        raise AssertionError("pump did not settle")


def exchange(client: Connection, server: Connection, *, rounds: int = 20) -> None:
    """Move bytes between two connections until both are quiet (at most ``rounds`` passes)."""
    for _ in range(rounds):
        moved = False
        for src, dst in ((client, server), (server, client)):
            if data := src.data_to_send():
                dst.receive_data(data)
                moved = True
        if not moved:
            return


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A TCP service that sends back every byte (a tunnel target in tests and benchmarks)."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


# -- the mls-tunnel command, as processes ---------------------------------------------------------

TUNNEL_COMMAND = [sys.executable, "-m", "mlstls.cli"]
GUARD = 60


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback TCP port free now, below the range outgoing connections take their source ports from.

    A port from that range can be taken between this call and the bind by an outgoing connection, and a
    client that retries connecting to it before its server listens can even connect to itself (TCP
    simultaneous open): seen in CI, a tunnel client answered its own ClientHello while the server could not
    bind.  Below the range no connection's source port can be it.
    """
    low, _ = _ephemeral_range()
    chooser = random.Random()
    for _ in range(200):
        port = chooser.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class TunnelProcesses:
    """A real ``mls-tunnel`` server and client (subprocesses), their state folders, and an echo target.

    For the restart tests and the restart benchmark: processes are started,
    killed with SIGKILL and started again; :meth:`echo_through` checks data
    end to end (sha256) and returns once the tunnel carries it.
    """

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
        done = subprocess.run([*TUNNEL_COMMAND, "fingerprint", "--state-dir", str(folder)], capture_output=True,
                              text=True, timeout=GUARD, check=True)
        return done.stdout.strip()

    async def start_target(self) -> None:
        self.target = await asyncio.start_server(echo, "127.0.0.1", 0)

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        with self.log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(*TUNNEL_COMMAND, "-v", *args, "--status-interval", "0.3",
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
