"""A fleet of servers sharing sessions in Redis, behind round-robin balancers (docs/fleet.md).

For the fleet test (tests/test_fleet.py) and benchmark (benchmarks/bench_fleet.py):

* :class:`TcpBalancer` and :class:`UdpBalancer` spread new connections (TCP)
  and new flows (UDP, by client address) over the nodes in turn, skipping a
  TCP node that refuses, like a load balancer with no session affinity;
* :class:`FleetNodes` runs the real servers (``mls-tunnel server`` or the
  QUIC demo server) as processes through :mod:`benchmarks.fleet_node`, which
  can make one die with SIGKILL right after it stored a commit;
* :func:`tunnel_client` and :func:`quic_client` are one client each: connect,
  check an echo end to end, rekey, reconnect through the balancer, again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mls2p.config import ProfileConfig
from mls2p.errors import AlertDescription
from mls2p.store import MemorySessionStore
from mlscore.credentials import Credential, PinnedKeys, key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import MLSError
from mlstls.config import MlsTlsConfiguration
from mlstls.testing import echo, free_port
from mlstls.tunnel import TunnelClient

Address = tuple[str, int]
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
NOT_STORED = "no stored session"
"""What a node says when it holds no session for a ResumptionRequest."""
MAX_FAILURES = 20
"""A client that fails this many connections in a row gives up (its session is as good as lost)."""


# -- balancers ---------------------------------------------------------------------------------------

class TcpBalancer:
    """Each new TCP connection goes to the next node in turn (a refusing node is skipped)."""

    def __init__(self, backends: list[Address]) -> None:
        self.backends = backends
        self.picks = [0] * len(backends)
        self._next = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.backends:
            index, self._next = self._next, (self._next + 1) % len(self.backends)
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.backends[index])
            except OSError:
                continue
            self.picks[index] += 1
            self._writers |= {writer, up_writer}
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            self._writers -= {writer, up_writer}
            return
        writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:  # every pipe ends once its sockets are aborted
            await asyncio.wait(list(self._tasks), timeout=5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()  # either end gone: the other sees its connection break, as through a real LB


class UdpBalancer(asyncio.DatagramProtocol):
    """Each new client address (a flow) goes to the next node in turn; its datagrams stay with that node."""

    def __init__(self, backends: list[Address]) -> None:
        self.backends = backends
        self.picks = [0] * len(backends)
        self._next = 0
        self._front: asyncio.DatagramTransport | None = None
        self._flows: dict[Any, _Flow] = {}

    async def start(self) -> int:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(HOST, 0))
        self._front = transport
        return int(self._front.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self._flows.get(addr)
        if flow is None:
            index, self._next = self._next, (self._next + 1) % len(self.backends)
            self.picks[index] += 1
            assert self._front is not None
            flow = self._flows[addr] = _Flow(self._front, addr)
            asyncio.get_running_loop().create_task(flow.open(self.backends[index]))
        flow.send(data)

    def close(self) -> None:
        for flow in self._flows.values():
            flow.close()
        if self._front is not None:
            self._front.close()


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, front: asyncio.DatagramTransport, client: Any) -> None:
        self.front, self.client = front, client
        self.upstream: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []

    async def open(self, backend: Address) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, remote_addr=backend)
        self.upstream = transport
        for data in self.waiting:
            self.upstream.sendto(data)
        self.waiting.clear()

    def send(self, data: bytes) -> None:
        if self.upstream is None:
            self.waiting.append(data)
        else:
            self.upstream.sendto(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.front.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        pass  # the node is down (ICMP port unreachable): the client's timeout handles it, as on a real network

    def close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- identities --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FleetKeys:
    """The fleet's one server key and the clients' one key (each client still has its own session)."""

    server: bytes = field(repr=False)
    client: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> FleetKeys:
        suite = get_suite(1)
        return cls(suite.generate_signature_key_pair()[0], suite.generate_signature_key_pair()[0])

    def fingerprint(self, private: bytes) -> str:
        return key_fingerprint(get_suite(1).signature_public_key(private))

    def client_profile(self) -> ProfileConfig:
        return ProfileConfig(credential=Credential.basic(b"client"), signature_priv=self.client,
                             authentication_service=PinnedKeys({b"server": {self.fingerprint(self.server)}}))


def write_private(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode())
    return path


# -- the nodes -----------------------------------------------------------------------------------------

class NodeStartError(RuntimeError):
    """A node process ended before it said it was serving."""


class FleetNodes:
    """``count`` server processes of one ``kind`` ("tunnel" or "quic") sharing the Redis store at ``redis_url``.

    With ``redis_url`` None each node keeps sessions in its own folder (the single-node default).
    """

    def __init__(self, root: Path, kind: str, *, redis_url: str | None, keyring: Path | None, keys: FleetKeys,
                 target: Address | None = None, count: int = 3, store_replicas: int = 0) -> None:
        self.root, self.kind, self.redis_url, self.keyring, self.keys = root, kind, redis_url, keyring, keys
        self.store_replicas = store_replicas
        self.target = target
        self.ports = [free_port() if kind == "tunnel" else free_udp_port() for _ in range(count)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts = 0
        self.failed_starts = 0

    @property
    def addresses(self) -> list[Address]:
        return [(HOST, port) for port in self.ports]

    def _command(self, index: int) -> list[str]:
        common = ["--allow", f"client={self.keys.fingerprint(self.keys.client)}", "--rekey-seconds", "3600"]
        if self.redis_url is not None:
            common += ["--store", self.redis_url, "--store-keyring", str(self.keyring)]
            if self.store_replicas:
                common += ["--store-replicas", str(self.store_replicas)]
        elif self.kind == "quic":
            common += ["--store", str(self.root / f"node{index}" / "sessions")]
        if self.kind == "tunnel":
            state = self.root / f"node{index}"
            if not (state / "signature.key").exists():
                write_private(state / "signature.key", self.keys.server)
            assert self.target is not None
            return ["tunnel", "server", "--listen", f"{HOST}:{self.ports[index]}", "--state-dir", str(state),
                    "--identity", "server", "--target", f"{self.target[0]}:{self.target[1]}",
                    "--status-interval", "3600", *common]
        key = self.root / "server.key"
        if not key.exists():
            write_private(key, self.keys.server)
        return ["quic", "server", "--host", HOST, "--port", str(self.ports[index]), "--key-file", str(key), *common]

    def start(self, index: int, *, die_after_commits: int | None = None) -> None:
        env = dict(os.environ)
        env.pop("FLEET_DIE_AFTER_COMMITS", None)
        if die_after_commits is not None:
            env["FLEET_DIE_AFTER_COMMITS"] = str(die_after_commits)
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"node{index}.log"
        start = log.stat().st_size if log.exists() else 0
        with log.open("a") as output:  # each node's output, kept: what a node said before it died
            process = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet_node", "-v", *self._command(index)],
                                       stdout=output, stderr=subprocess.STDOUT, env=env)
        self.processes[index] = process
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            said = log.read_text(errors="replace")[start:]
            if " server on " in said:
                return
            if process.poll() is not None:
                raise NodeStartError(f"fleet node {index} exited before it was ready (status {process.returncode}): "
                                     + said[-1000:])
            time.sleep(0.02)
        raise RuntimeError(f"fleet node {index} was not ready within {READY_TIMEOUT:g} s")

    def start_all(self, *, die: dict[int, int] | None = None) -> None:
        for index in range(len(self.ports)):
            self.start(index, die_after_commits=(die or {}).get(index))

    def died(self) -> list[int]:
        """Nodes whose process has ended."""
        return [i for i, process in enumerate(self.processes) if process is not None and process.poll() is not None]

    def restart_dead(self) -> list[int]:
        """Start every ended node again, without faults (what a supervisor does); returns those now up.

        A node that cannot start yet (it checks Redis at start, and Redis may be down) is tried again
        at the next call, as systemd's Restart= would.
        """
        started = []
        for index in self.died():
            try:
                self.start(index)
            except NodeStartError:
                self.failed_starts += 1
                continue
            self.restarts += 1
            started.append(index)
        return started

    def stop_all(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def supervise(nodes: FleetNodes, until: asyncio.Event, interval: float = 0.05) -> None:
    """Restart crashed nodes until ``until`` is set."""
    while not until.is_set():
        if nodes.died():
            await asyncio.get_running_loop().run_in_executor(None, nodes.restart_dead)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), interval)


# -- clients ---------------------------------------------------------------------------------------------

@dataclass
class ClientReport:
    """What one client saw."""

    fresh_handshakes: int = 0
    sessions_lost: int = 0
    """Fresh handshakes after the server had confirmed a session (a round had completed on it)."""
    resumptions: int = 0
    retried_rounds: int = 0
    failed_connects: int = 0
    rekeys: int = 0
    rekeys_interrupted: int = 0
    """Rekeys whose connection broke before the new epoch arrived (a node died under them)."""
    rekeys_stuck: int = 0
    """Rekeys that did not complete on a connection that stayed up: never expected."""
    corrupted: int = 0
    resume_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Why connections failed, in order (the first few hundred characters each)."""


async def _wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def _moved_past(read_epoch: Callable[[], int | None], epoch: int | None) -> Callable[[], bool]:
    return lambda: (read_epoch() or 0) > (epoch or 0)


def _either(first: Callable[[], bool], second: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: first() or second()


def _replaced(client: TunnelClient, writer: object) -> Callable[[], bool]:
    return lambda: client.link.writer is not writer


def _closed(demo: Any) -> bool:
    return demo.closed_because is not None


async def _answers(demo: Any, timeout: float) -> bool:
    """Whether a QUIC demo connection still echoes."""
    try:
        return bool(await asyncio.wait_for(demo.request(b"still there?"), timeout) == b"still there?")
    except (OSError, TimeoutError, MLSError):
        return False


def _reconnected(client: TunnelClient, connections_before: int) -> Callable[[], bool]:
    def check() -> bool:
        stats = client.link.stats
        return stats.resumptions + stats.fresh_handshakes > connections_before and client.link.link_ready.is_set()

    return check


async def _tunnel_echo(port: int, payload: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.transport.abort()


async def tunnel_client(keys: FleetKeys, balancer: Address, *, reconnects: int, size: int = 2048,
                        timeout: float = 10.0, progress: list[int] | None = None, slot: int = 0) -> ClientReport:
    """One ``TunnelClient`` (its own session store): ``reconnects`` times echo, rekey, cut and resume.

    ``progress[slot]`` counts the rounds done (for tests that act once every client is under way).
    """
    report = ClientReport()
    config = MlsTlsConfiguration(keys.client_profile(), True, MemorySessionStore())
    client = TunnelClient(config, balancer, retry_delay=0.01, max_retry_delay=0.5)
    port = await client.start(HOST, 0, connect_timeout=timeout)
    fresh_when_confirmed = 1
    try:
        for round_ in range(reconnects + 1):
            while True:  # one round trip of data through whatever node we are on, checked end to end
                payload = os.urandom(size)
                try:
                    echoed = await _tunnel_echo(port, payload, timeout)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    report.retried_rounds += 1  # the link broke under us (a node died): once more
                    await _wait_for(client.link.link_ready.is_set, timeout)
                    continue
                report.corrupted += echoed != payload
                break
            if round_ == 0:  # the server confirmed the session: from now on a fresh handshake loses it
                fresh_when_confirmed = client.link.stats.fresh_handshakes
            if progress is not None:
                progress[slot] += 1
            writer = client.link.writer
            if writer is None or writer.epoch is None:
                report.rekeys_interrupted += 1
            else:
                epoch = writer.epoch
                writer.rekey()
                moved = _moved_past(functools.partial(getattr, writer, "epoch"), epoch)
                await _wait_for(_either(moved, _replaced(client, writer)), timeout)
                if moved():
                    report.rekeys += 1
                elif client.link.writer is not writer:
                    report.rekeys_interrupted += 1
                else:
                    report.rekeys_stuck += 1
            if round_ == reconnects:
                break
            before = client.link.stats.resumptions + client.link.stats.fresh_handshakes
            started = time.perf_counter()
            client.cut()
            if not await _wait_for(_reconnected(client, before), 60.0):
                raise TimeoutError(f"client did not reconnect: {client.link.stats.last_error}")
            report.resume_seconds.append(time.perf_counter() - started)
    finally:
        report.fresh_handshakes = client.link.stats.fresh_handshakes
        report.sessions_lost = report.fresh_handshakes - fresh_when_confirmed
        report.resumptions = client.link.stats.resumptions
        report.failed_connects = client.link.stats.failed_connects
        await client.close()
    return report


async def echo_server() -> tuple[asyncio.Server, Address]:
    """The tunnel's target: echoes every byte."""
    server = await asyncio.start_server(echo, HOST, 0)
    return server, (HOST, int(server.sockets[0].getsockname()[1]))


async def quic_client(keys: FleetKeys, balancer: Address, *, reconnects: int, size: int = 2048,
                      timeout: float = 3.0, progress: list[int] | None = None, slot: int = 0) -> ClientReport:
    """A QUIC-MLS client (its own store): ``reconnects + 1`` connections, each resuming, echoing, rekeying."""
    import mlsquic
    from examples.quic_demo import DemoClient
    from mlsquic import MlsQuicConfiguration, quic_of
    from mlsquic.epochs import EpochKeyedConnection

    report = ClientReport()
    store = MemorySessionStore()
    profile = keys.client_profile()
    done = failures = 0
    confirmed = False  # a round completed: the server had stored the session
    while done <= reconnects:
        stored = store.group_ids()
        config = MlsQuicConfiguration(profile=profile, is_client=True, alpn_protocols=["demo"], store=store,
                                      resume_group_id=stored[0] if stored else None, idle_timeout=timeout)
        started = time.perf_counter()
        try:
            async with mlsquic.connect(*balancer, configuration=config, create_protocol=DemoClient,
                                       wait_connected=False) as protocol:
                demo = cast(DemoClient, protocol)
                demo.transmit()
                await asyncio.wait_for(demo.connected.wait(), timeout)
                if demo.closed_because is not None:
                    if NOT_STORED in demo.closed_because:  # the server never confirmed it, or lost it
                        report.sessions_lost += confirmed
                        for group_id in store.group_ids():
                            store.delete(group_id, replaces=store.load(group_id))
                    raise ConnectionError(demo.closed_because)
                if config.resume_group_id is not None:
                    report.resume_seconds.append(time.perf_counter() - started)
                    report.resumptions += 1
                else:
                    report.fresh_handshakes += 1
                quic = cast(EpochKeyedConnection, quic_of(demo))
                payload = os.urandom(size)
                echoed = await asyncio.wait_for(demo.request(payload), timeout)
                report.corrupted += echoed != payload
                epoch = quic.mls_epoch
                quic.rekey()
                demo.transmit()
                moved = _moved_past(functools.partial(getattr, quic, "mls_epoch"), epoch)
                await _wait_for(_either(moved, functools.partial(_closed, demo)), timeout)
                if moved():
                    report.rekeys += 1
                elif demo.closed_because is not None or not await _answers(demo, timeout):
                    report.rekeys_interrupted += 1  # UDP says nothing when a node dies: silence is the sign
                else:
                    report.rekeys_stuck += 1
        except (OSError, TimeoutError, MLSError) as exc:  # MLSError: DemoError, "the connection was closed"
            report.errors.append(f"round {done}: {type(exc).__name__}: {exc}"[:300])
            report.failed_connects += 1
            failures += 1
            if failures >= MAX_FAILURES or "0x%x" % (0x100 + AlertDescription.BAD_CERTIFICATE) in str(exc):
                raise ConnectionError(f"client gave up after {failures} failed connections in a row: "
                                      f"{type(exc).__name__}: {exc}") from exc
            continue
        failures = 0
        done += 1
        confirmed = True
        if progress is not None:
            progress[slot] += 1
    return report


# -- Redis ----------------------------------------------------------------------------------------------

class RedisServer:
    """One redis-server on loopback, data in ``folder`` (AOF, appendfsync always): kill, restart, keep data."""

    def __init__(self, folder: Path, binary: str = "redis-server") -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.folder / 'redis.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does; only fsynced AOF survives."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None
