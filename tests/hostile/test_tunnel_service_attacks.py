"""Hostile review of mls-tunnel as a service: named services, reload, the control socket, metrics, half-close.

Attackers: an authenticated-but-malicious tunnel peer (it speaks the link
protocol by hand over a real MLS-TLS connection), a malicious tunnel server, a
local user, a scraper, and an operator making mistakes.  The ``test_fN_`` tests
reproduce the review's findings (each failed before its fix); the others check
attacks that were refused from the start.

Nothing asserts on speed: every wait is on a condition (a frame, a log line, a
process exit), with a generous hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mls2p import RekeyPolicy
from mls2p.store import MemorySessionStore
from mls2p.testing import TEST_PINS, config
from mls2p.trust import TrustPolicy
from mlstls import MlsTlsConfiguration, open_connection, start_server
from mlstls.cli import _parser, _trust, _with_config_file
from mlstls.connection import ConnectionTerminated
from mlstls.control import ControlServer, query
from mlstls.link import Frame, FrameType, ReliableLink
from mlstls.metrics import exposition, serve_metrics
from mlstls.record import ContentType
from mlstls.services import Service
from mlstls.testing import TlsPair, echo, free_port
from mlstls.tunnel import TunnelClient, TunnelLink, TunnelServer

GUARD = 60.0  # seconds; a hang guard only
COMMAND = [sys.executable, "-m", "mlstls.cli"]
ZERO_PIN = "sha256:" + "0" * 64


# -- helpers ---------------------------------------------------------------------------------------

async def until(predicate: Callable[[], bool], guard: float = GUARD) -> None:
    """Wait for ``predicate`` (polled); AssertionError after ``guard`` seconds (a hang guard, not a speed test)."""
    for _ in range(int(guard / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within the hang guard")


class Peer:
    """An authenticated tunnel peer that speaks the link protocol by hand (it ACKs only if told to)."""

    def __init__(self, reader: asyncio.StreamReader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.link = ReliableLink()
        self.frames: list[Frame] = []
        self.ack = True

    @classmethod
    async def connect(cls, port: int, name: bytes = b"client") -> Peer:
        reader, writer = await asyncio.wait_for(open_connection(
            "127.0.0.1", port, configuration=MlsTlsConfiguration(config(name), True, MemorySessionStore())), GUARD)
        peer = cls(reader, writer)
        writer.write(peer.link.connected())
        await peer.until(lambda: peer.link.synchronized)
        return peer

    async def _read(self) -> None:
        data = await self.reader.read(1 << 18)
        if not data:
            raise ConnectionError("the server closed the link")
        frames, reply = self.link.feed(data)
        if reply and self.ack:
            self.writer.write(reply)
        self.frames += frames

    def send(self, kind: FrameType, stream: int, payload: bytes = b"") -> None:
        self.writer.write(self.link.send(Frame(kind, stream, payload)))

    async def until(self, predicate: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not predicate():
                await self._read()
        await asyncio.wait_for(loop(), GUARD)

    def closes(self, stream: int) -> list[bytes]:
        return [f.payload for f in self.frames if f.kind == FrameType.CLOSE and f.stream == stream]


class CountingTarget:
    """A target that counts the connections it accepts (and echoes)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.open += 1
            self.writers.add(writer)
            try:
                await echo(reader, writer)
            finally:
                self.open -= 1
                self.writers.discard(writer)
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()  # its handler ends on its own (no task left for the loop to cancel)


@contextlib.contextmanager
def blackhole():
    """A listener that never accepts, its backlog full: a connect to it hangs (SYNs dropped), as to a
    firewalled address or an overloaded target.  Yields its address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())  # takes the one slot of the accept queue
    try:
        yield listener.getsockname()
    finally:
        filler.close()
        listener.close()


def server_config(services: dict[str, Service], **profile) -> MlsTlsConfiguration:
    return MlsTlsConfiguration(config(b"server", **profile), False, MemorySessionStore())


def only_link(server: TunnelServer) -> TunnelLink:
    assert len(server.links) == 1, server.links
    return next(iter(server.links.values()))


def link_reader_waits_on_a_target() -> bool:
    """A task is suspended in TunnelLink._dispatch awaiting a target's StreamWriter.drain()."""
    for task in asyncio.all_tasks():
        names, coro = [], task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            names.append(coro.cr_code.co_name)
            coro = coro.cr_await
        if "_dispatch" in names and "drain" in names[names.index("_dispatch"):]:
            return True
    return False


def held_bytes(link: TunnelLink) -> int:
    """Bytes the server holds for streams whose target is still being reached (TunnelLink._opening)."""
    return sum(len(item) for items in getattr(link, "_opening", {}).values() for item in items if item)


@pytest.fixture
def tunnel_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="mlstls")
    return caplog


def records(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


# -- processes (the mls-tunnel command, as an operator runs it) -------------------------------------

class Proc:
    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.log = root / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        env = dict(os.environ, XDG_STATE_HOME=str(self.root / "xdg"))
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(*COMMAND, *args, stdout=log, stderr=log, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def says(self, text: str, *, after: int = 0) -> str:
        """The first log line with ``text`` (past character ``after``); AssertionError if the process exits first."""
        for _ in range(int(GUARD / 0.02)):
            log = self.text()[after:]
            if text in log:
                return next(line for line in log.splitlines() if text in line)
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}) before saying {text!r}:\n"
                                     f"{self.text()[-2000:]}")
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name}: {text!r} not in the log:\n{self.text()[-2000:]}")

    async def exit_or_says(self, text: str) -> int | None:
        """Wait until the process exits (its status) or says ``text`` (None)."""
        for _ in range(int(GUARD / 0.02)):
            if self.process is not None and self.process.returncode is not None:
                return self.process.returncode
            if text in self.text():
                return None
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name}: neither exited nor said {text!r}:\n{self.text()[-2000:]}")

    def hup(self) -> int:
        assert self.process is not None
        mark = len(self.text())
        self.process.send_signal(signal.SIGHUP)
        return mark

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[Callable[[str], Proc]]:
    made: list[Proc] = []

    def make(name: str) -> Proc:
        made.append(Proc(tmp_path, name))
        return made[-1]

    yield make
    for proc in made:
        await proc.stop()


def write_server_toml(path: Path, state: Path, port: int, *, extra: str = "") -> None:
    path.write_text(f'listen = "127.0.0.1:{port}"\ntarget = "127.0.0.1:9"\ninsecure-accept-any-peer = true\n'
                    f'state-dir = "{state}"\n{extra}')


# ==================================================================================================
# Findings (each failed before its fix)
# ==================================================================================================

async def test_f1_data_for_a_stream_still_connecting_is_bounded() -> None:
    with blackhole() as address:
        server = TunnelServer(server_config({}), {"slow": Service("slow", address)})
        port = await server.start("127.0.0.1", 0)
        peer = await Peer.connect(port)
        try:
            peer.send(FrameType.OPEN, 1, b"slow")
            chunk = bytes(64000)
            for _ in range(256):  # 16 MB for a stream whose target never answers
                peer.send(FrameType.DATA, 1, chunk)
                await peer.writer.drain()
            link = only_link(server)
            with contextlib.suppress(AssertionError):  # a fixed server may stop reading instead (flow control)
                await until(lambda: link.reliable.received_offset >= peer.link.sent_offset or bool(peer.closes(1)))
            assert held_bytes(link) <= 4 << 20, f"{held_bytes(link)} bytes held for one stream that is not open"
        finally:
            peer.writer.close()
            await server.close()


async def test_f1_pending_opens_per_peer_are_bounded() -> None:
    with blackhole() as address:
        server = TunnelServer(server_config({}), {"slow": Service("slow", address)})
        port = await server.start("127.0.0.1", 0)
        peer = await Peer.connect(port)
        try:
            for stream in range(1, 2 * 1500, 2):
                peer.send(FrameType.OPEN, stream, b"slow")
            await peer.writer.drain()
            link = only_link(server)
            await until(lambda: link.reliable.received_offset >= peer.link.sent_offset)
            pending = len(getattr(link, "_opening", {}))
            refused = len([f for f in peer.frames if f.kind == FrameType.CLOSE])
            assert pending <= 1024, f"{pending} target connections pending for one peer ({refused} refused)"
            await peer.until(lambda: len([f for f in peer.frames if f.kind == FrameType.CLOSE]) >= 1500 - pending)
            reasons = {f.payload for f in peer.frames if f.kind == FrameType.CLOSE}
            assert reasons == {b"too many streams: 256 are open on this link"}, reasons
        finally:
            peer.writer.close()
            await server.close()


async def test_f1_a_target_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlstls import tunnel
    monkeypatch.setattr(tunnel, "CONNECT_TIMEOUT", 0.2)  # 10 s in production
    with blackhole() as address:
        server = TunnelServer(server_config({}), {"slow": Service("slow", address)})
        port = await server.start("127.0.0.1", 0)
        peer = await Peer.connect(port)
        try:
            peer.send(FrameType.OPEN, 1, b"slow")
            await peer.until(lambda: bool(peer.closes(1)))
            assert peer.closes(1) == [f"the server could not reach its target {address[0]}:{address[1]}: "
                                      "no answer within 0.2 s".encode()]
            link = only_link(server)
            await until(lambda: not link._opening and not link._tasks and not link._state)
        finally:
            peer.writer.close()
            await server.close()


def test_f2_half_close_while_our_rekey_is_in_flight() -> None:
    pair = TlsPair(rekey=RekeyPolicy(max_bytes=1024))
    pair.client.connect()
    pair.pump()
    pair.client.send_data(b"x" * 2000)  # crosses the byte budget: the policy starts a rekey by itself
    pair.client.send_eof()  # request sent, our side done (write; write_eof; read the answer)
    pair.pump()
    pair.server.send_data(b"the answer")
    pair.pump()
    ended = [e for e in pair.events["client"] if isinstance(e, ConnectionTerminated)]
    assert not ended, ended
    assert bytes(pair.received["client"]) == b"the answer"


def _parse_twice(tmp_path: Path, first: str, second: str):
    path = tmp_path / "server.toml"
    base = f'listen = "127.0.0.1:1"\ntarget = "127.0.0.1:2"\nstate-dir = "{tmp_path / "s"}"\n'
    parser, argv = _parser(), ["server", "--config", str(path)]
    path.write_text(base + first)
    _with_config_file(parser, argv)
    path.write_text(base + second)
    return _with_config_file(parser, argv)  # what a SIGHUP reads (the same parser: a read must leave it as it was)


def test_f3_an_option_deleted_from_the_config_file_is_gone_after_reload(tmp_path: Path) -> None:
    (tmp_path / "peers").write_text(f"client-b {ZERO_PIN}\n")
    args = _parse_twice(tmp_path, f'allow = ["client-a={ZERO_PIN}"]\ntrust-file = "{tmp_path / "peers"}"\n',
                        f'trust-file = "{tmp_path / "peers"}"\n')
    policy, _ = _trust(args, reloading=True)
    assert policy is not None and b"client-a" not in policy.pins, "client-a is still trusted after the reload"


async def test_f3_a_typo_in_a_reload_keeps_the_tunnel_running(tmp_path: Path, procs) -> None:
    config_file = tmp_path / "server.toml"
    write_server_toml(config_file, tmp_path / "s", free_port())
    server = procs("server")
    await server.start("server", "--config", str(config_file))
    await server.says("mls-tunnel server on ")
    write_server_toml(config_file, tmp_path / "s", free_port(), extra='rekey-seconds = "30s"\n')
    mark = server.hup()
    line = await server.says("reload", after=mark)  # AssertionError if the process died instead
    assert "reload refused" in line, line


async def test_f4_sighup_while_the_client_is_still_connecting(tmp_path: Path, procs) -> None:
    client = procs("client")
    await client.start("-v", "client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{free_port()}",
                       "--retry-forever", "--insecure-accept-any-peer", "--state-dir", str(tmp_path / "c"))
    await client.says("cannot reach the tunnel server")  # it is up, retrying with backoff
    mark = client.hup()  # systemctl reload, e.g. while the server is down
    await client.says("reload", after=mark)  # reloaded (or refused), alive; AssertionError if it died


async def test_f5_a_peer_that_starts_over_leaves_no_stale_link() -> None:
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), ("127.0.0.1", target_port))
    port = await server.start("127.0.0.1", 0)
    first = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port))
    second = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port))
    try:
        local = await first.start("127.0.0.1", 0, connect_timeout=GUARD)
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), GUARD) == b"hello"
        await first.close()  # the client's host dies with its state; it comes back as a new session
        await until(lambda: not any(s["state"] == "up" for s in server.snapshot()))
        await second.start("127.0.0.1", 0, connect_timeout=GUARD)
        await until(lambda: any(s["state"] == "up" for s in server.snapshot()))
        page, _ = exposition(lambda: {"links": server.snapshot(), "handshake_failures": {},
                                      "reloads": {"applied": 0, "refused": 0}})
        series = [line.rsplit(" ", 1)[0] for line in page.decode().splitlines() if not line.startswith("#")]
        duplicates = sorted({s for s in series if series.count(s) > 1})
        assert not duplicates, duplicates
        assert len(server.links) == 1, server.snapshot()
        await until(lambda: target.open == 0)  # the abandoned link's target connection is closed (hang guard)
        writer.close()
    finally:
        await second.close()
        await server.close()
        target.close()


async def test_f6_refused_streams_do_not_flood_the_log(tunnel_log) -> None:
    server = TunnelServer(server_config({}), {"db": Service("db", ("127.0.0.1", 9))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        for stream in range(1, 2 * 1000, 2):
            peer.send(FrameType.OPEN, stream, b"x")
        await peer.until(lambda: len([f for f in peer.frames if f.kind == FrameType.CLOSE]) == 1000)
        lines = records(tunnel_log, "refused a stream")
        assert len(lines) <= 10, f"{len(lines)} log lines for one peer's 1000 bad OPEN frames"
    finally:
        peer.writer.close()
        await server.close()


async def test_f6_a_peer_name_cannot_forge_log_lines(tunnel_log) -> None:
    server = TunnelServer(server_config({}, insecure_accept_any_peer=True), {"db": Service("db", ("127.0.0.1", 9))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port, name=b"x\n2026-12-06 14:00:00,000 WARNING configuration reloaded: forged")
    try:
        peer.send(FrameType.OPEN, 1, b"nope")
        await peer.until(lambda: bool(peer.closes(1)))
        lines = records(tunnel_log, "refused a stream")
        assert lines and not any("\n" in line for line in lines), lines
    finally:
        peer.writer.close()
        await server.close()


async def test_f7_service_peers_with_insecure_accept_any_peer_is_refused_or_warned(tmp_path: Path, procs) -> None:
    config_file = tmp_path / "server.toml"
    write_server_toml(config_file, tmp_path / "s", free_port(),
                      extra='[services.db]\ntarget = "127.0.0.1:5432"\npeers = ["app-1"]\n')
    server = procs("server")
    await server.start("server", "--config", str(config_file))
    status = await server.exit_or_says("mls-tunnel server on ")
    refusal = [line for line in server.text().splitlines() if "peers" in line and "insecure" in line.lower()]
    assert status == 2 and len(refusal) == 1 and "[services.db]" in refusal[0], server.text()
    assert "Traceback" not in server.text()


async def test_f7_service_peers_under_trust_on_first_use_are_warned_about(tmp_path: Path, procs) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text(f'listen = "127.0.0.1:{free_port()}"\ntrust-on-first-use = true\n'
                           f'state-dir = "{tmp_path / "s"}"\nallow = ["app-2={ZERO_PIN}"]\n'
                           '[services.db]\ntarget = "127.0.0.1:5432"\npeers = ["app-1", "app-2"]\n')
    server = procs("server")
    await server.start("server", "--config", str(config_file))
    await server.says("mls-tunnel server on ")
    [line] = [line for line in server.text().splitlines() if "first use" in line and "peers" in line]
    assert "app-1" in line and "app-2" not in line, line  # app-2 is pinned: its name is authenticated


async def test_f8_granting_a_service_to_a_new_peer_keeps_the_others_streams() -> None:
    target = CountingTarget()
    target_port = await target.start()
    db = Service("db", ("127.0.0.1", target_port), frozenset({b"client"}))
    server = TunnelServer(server_config({}), {"db": db})
    port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port))
    try:
        ports = await client.start_services({"db": Service("db", ("127.0.0.1", 0))}, connect_timeout=GUARD)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["db"])
        writer.write(b"one")
        assert await asyncio.wait_for(reader.readexactly(3), GUARD) == b"one"
        closed = server.set_services({"db": Service("db", db.address, frozenset({b"client", b"app-2"}))})
        writer.write(b"two")
        answer = await asyncio.wait_for(reader.read(3), GUARD)
        assert closed == 0 and answer == b"two", (closed, answer)
        writer.close()
    finally:
        await client.close()
        await server.close()
        target.close()


async def test_f9_metrics_oversized_head_is_handled() -> None:
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    server = await serve_metrics("127.0.0.1", 0, lambda: {"links": [], "handshake_failures": {},
                                                           "reloads": {"applied": 0, "refused": 0}})
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * 20000)
        assert (await asyncio.wait_for(reader.read(), GUARD)).startswith(b"HTTP/1.0 431 ")  # then it closes
        writer.close()
        healthy, writer = await asyncio.open_connection("127.0.0.1", port)  # one more request: the handler ran
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert (await asyncio.wait_for(healthy.read(), GUARD)).startswith(b"HTTP/1.0 200")
        writer.close()
        assert not errors, [(c.get("message"), repr(c.get("exception"))) for c in errors]
    finally:
        server.close()


async def test_f10_control_socket_never_deletes_a_regular_file(tmp_path: Path, procs) -> None:
    precious = tmp_path / "precious.conf"
    precious.write_text("the operator's file\n")
    server = procs("server")
    await server.start("server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--insecure-accept-any-peer",
                       "--state-dir", str(tmp_path / "s"), "--control-socket", str(precious))
    await server.exit_or_says("mls-tunnel server on ")
    for _ in range(int(GUARD / 0.02)):  # either it refused (exited) or its control socket is up
        if server.process is not None and server.process.returncode is not None:
            break
        if precious.is_socket():
            break
        await asyncio.sleep(0.02)
    assert precious.is_file() and precious.read_text() == "the operator's file\n"
    assert server.process is not None and server.process.returncode == 2
    assert "is not a socket" in server.text() and "Traceback" not in server.text()


async def test_f11_a_second_tunnel_on_the_same_folder_leaves_the_first_alone(tmp_path: Path, procs) -> None:
    target = CountingTarget()
    target_port = await target.start()
    server_port = free_port()
    trust = ["--insecure-accept-any-peer"]
    server, first, second = procs("server"), procs("first"), procs("second")
    try:
        await server.start("server", "--listen", f"127.0.0.1:{server_port}", "--target", f"127.0.0.1:{target_port}",
                           "--state-dir", str(tmp_path / "s"), *trust)
        await server.says("mls-tunnel server on ")
        local = free_port()
        client = ["client", "--connect", f"127.0.0.1:{server_port}", "--state-dir", str(tmp_path / "c"), *trust]
        await first.start(*client, "--listen", f"127.0.0.1:{local}")
        await first.says("mls-tunnel client on ")
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(6), GUARD) == b"before"
        await second.start(*client, "--listen", f"127.0.0.1:{free_port()}")  # the operator's mistake
        assert second.process is not None and await asyncio.wait_for(second.process.wait(), GUARD) == 2
        writer.write(b"after")
        answer = await asyncio.wait_for(reader.read(5), GUARD)
        assert answer == b"after", f"the first tunnel's stream was cut: {answer!r}"
        writer.close()
    finally:
        target.close()


async def test_f12_an_open_from_the_server_does_not_wedge_the_client(tunnel_log) -> None:
    connections = 0
    answers: list[Frame] = []

    async def malicious(reader, writer) -> None:
        nonlocal connections
        connections += 1
        link = ReliableLink()
        writer.write(link.connected())
        while not link.synchronized:
            data = await reader.read(1 << 16)
            if not data:
                return
            link.feed(data)
        if connections == 1:
            writer.write(link.send(Frame(FrameType.OPEN, 2, b"")))  # the server opens a stream to the client
        with contextlib.suppress(Exception):
            while data := await reader.read(1 << 16):
                frames, _ = link.feed(data)
                answers.extend(frames)
        writer.close()

    server = await start_server(malicious, "127.0.0.1", 0, configuration=MlsTlsConfiguration(
        config(b"server"), False, MemorySessionStore()))
    port = server.sockets[0].getsockname()[1]
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port),
                          retry_delay=0.01)
    try:
        await client.start("127.0.0.1", 0, connect_timeout=GUARD)
        runner = client._runner
        assert runner is not None
        await until(lambda: runner.done() or connections >= 2 or any(f.stream == 2 for f in answers))
        assert not runner.done(), f"the client's reconnect loop died: {runner.exception()!r}"
        assert [(f.kind, f.payload) for f in answers if f.stream == 2] == [
            (FrameType.CLOSE, b"this end accepts no streams")]  # refused, saying why; the link goes on
        assert client.link.link_ready.is_set() and client.link.streams_refused == 1
        assert records(tunnel_log, "refused a stream of peer server: this end accepts no streams")
    finally:
        await client.close()
        server.close()


def test_f13_a_peer_revoked_during_its_handshake_is_not_let_in() -> None:
    client_profile = config(b"client")  # first: its key is in TEST_PINS when the policy copies them
    policy = TrustPolicy(pins={name: set(prints) for name, prints in TEST_PINS.items()})
    pair = TlsPair(client_profile=client_profile, server_profile=config(b"server", authentication_service=policy))
    pair.client.connect()
    for step in range(2):  # ClientHello in, the server's answer out: the server has validated the client
        source, sink = (pair.client, pair.server) if step == 0 else (pair.server, pair.client)
        sink.receive_data(source.data_to_send())
    policy.replace(TrustPolicy(pins={b"server": set(TEST_PINS[b"server"])}))  # SIGHUP revokes client now
    pair.pump()
    if not pair.client.closed:
        pair.client.send_data(b"a revoked peer's request")
        pair.pump()
    assert b"request" not in bytes(pair.received["server"]) and pair.server.closed


async def test_f14_rekey_counter_survives_a_reconnect() -> None:
    rekey = RekeyPolicy(max_bytes=32 * 1024)
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(MlsTlsConfiguration(config(b"server", rekey=rekey), False, MemorySessionStore()),
                          ("127.0.0.1", target_port))
    port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client", rekey=rekey), True, MemorySessionStore()),
                          ("127.0.0.1", port), retry_delay=0.01)
    try:
        local = await client.start("127.0.0.1", 0, connect_timeout=GUARD)
        start_epoch = client.link.writer.epoch
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        payload = os.urandom(1 << 20)
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), GUARD) == payload
        epoch = client.link.writer.epoch
        assert epoch - start_epoch >= 5
        client.cut()  # nobody asked for status meanwhile
        await until(lambda: client.link.stats.resumptions >= 1 and client.link.link_ready.is_set())
        assert client.snapshot()[0]["rekeys"] >= epoch - start_epoch
        writer.close()
    finally:
        await client.close()
        await server.close()
        target.close()


async def test_f15_refusals_do_not_enumerate_services_closed_to_the_peer() -> None:
    server = TunnelServer(server_config({}), {"secret": Service("secret", ("127.0.0.1", 9), frozenset({b"other"}))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        peer.send(FrameType.OPEN, 1, b"secret")
        peer.send(FrameType.OPEN, 3, b"absent")
        await peer.until(lambda: bool(peer.closes(1) and peer.closes(3)))
        assert peer.closes(1)[0].replace(b"secret", b"X") == peer.closes(3)[0].replace(b"absent", b"X")
    finally:
        peer.writer.close()
        await server.close()


async def test_f16_a_refusal_during_connect_does_not_leave_the_target_open() -> None:
    with blackhole() as address:  # the target's connect hangs: the CLOSE arrives while it is under way
        server = TunnelServer(server_config({}), {"svc": Service("svc", address)})
        port = await server.start("127.0.0.1", 0)
        peer = await Peer.connect(port)
        try:
            peer.send(FrameType.OPEN, 1, b"svc")
            await peer.writer.drain()
            link = only_link(server)
            await until(lambda: 1 in link._opening and bool(link._tasks))  # the target is being reached
            peer.send(FrameType.CLOSE, 1, b"the client's configuration no longer offers this service")
            await peer.writer.drain()
            await until(lambda: link.reliable.received_offset >= peer.link.sent_offset)
            assert 1 not in link._opening and 1 not in link.streams and 1 not in link._closed_by_peer
            await until(lambda: not link._tasks)  # the connect is abandoned, not finished and then kept open
        finally:
            peer.writer.close()
            await server.close()


async def test_f17_data_for_a_reset_target_does_not_cost_other_streams(tunnel_log) -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, as a server refusing an upload does

    rejecting = await asyncio.start_server(resets, "127.0.0.1", 0)
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), {"upload": Service("upload", rejecting.sockets[0].getsockname()),
                                              "echo": Service("echo", ("127.0.0.1", target_port))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        peer.send(FrameType.OPEN, 1, b"upload")
        await peer.until(lambda: bool(peer.closes(1)))  # the server saw the reset; our side is still sending
        peer.send(FrameType.DATA, 1, b"the rest of the upload")
        peer.send(FrameType.OPEN, 3, b"echo")  # another stream of the same client, in the same write
        peer.send(FrameType.DATA, 3, b"hello")
        with contextlib.suppress(ConnectionError):
            await peer.until(lambda: any(f.kind == FrameType.DATA and f.stream == 3 for f in peer.frames))
        assert not records(tunnel_log, "link connection ended"), records(tunnel_log, "link connection ended")
        assert target.accepted == 1, "stream 3's OPEN was counted as received and never acted on"
    finally:
        peer.writer.close()
        await server.close()
        target.close()
        rejecting.close()


async def test_f18_a_target_that_does_not_read_holds_up_only_its_own_stream() -> None:
    stalled: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    sink_socket = socket.socket()
    sink_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink_socket.bind(("127.0.0.1", 0))
    sink = await asyncio.start_server(never_reads, sock=sink_socket)
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), {"sink": Service("sink", sink_socket.getsockname()),
                                              "echo": Service("echo", ("127.0.0.1", target_port))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        peer.send(FrameType.OPEN, 1, b"sink")
        chunk = bytes(64000)
        for _ in range(256):  # 16 MB to a target that reads none of it
            peer.send(FrameType.DATA, 1, chunk)
        peer.send(FrameType.OPEN, 3, b"echo")
        peer.send(FrameType.DATA, 3, b"hello")

        def answered() -> bool:
            return any(f.kind == FrameType.DATA and f.stream == 3 for f in peer.frames)

        async def read_until_answered() -> None:
            with contextlib.suppress(ConnectionError):
                while not answered():
                    await peer._read()

        reading = asyncio.ensure_future(read_until_answered())
        # Either stream 3 is answered, or the link's reader is parked in a target's drain (it never returns:
        # the target reads nothing), which is the finding; no timing involved.
        await until(lambda: answered() or link_reader_waits_on_a_target())
        reading.cancel()
        assert answered(), "the link's reader waits for a target that does not read: every stream stalls"
    finally:
        peer.writer.close()
        await server.close()
        target.close()
        for writer in stalled:
            writer.transport.abort()
        sink.close()


async def test_f19_a_repeated_open_does_not_orphan_target_connections() -> None:
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), {"echo": Service("echo", ("127.0.0.1", target_port))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        for round_ in range(20):
            peer.send(FrameType.OPEN, 1, b"echo")  # the same stream id, again and again
            peer.send(FrameType.DATA, 1, b"x")
            await peer.until(lambda n=round_: bool(peer.closes(1))
                             or sum(f.kind == FrameType.DATA for f in peer.frames) > n)
        assert peer.closes(1)[0] == b"stream 1 is already open"  # refused, and the stream dropped
        link = only_link(server)
        await until(lambda: link.reliable.received_offset >= peer.link.sent_offset)
        await until(lambda: target.open <= 1)  # every connection the server dropped is closed (hang guard)
        assert len(link.streams) + len(link._opening) <= 1
    finally:
        peer.writer.close()
        await server.close()
        target.close()


# ==================================================================================================
# Attacks correctly refused
# ==================================================================================================

@pytest.mark.parametrize("name", [
    b"x" * 65, b"y" * 60000, b"\xff\xfe", b"db\n", b"db\r\nX-Injected: 1", b"\x1b[31mred", b"../etc/passwd",
    b"/etc/passwd", b".hidden", b"-flag", b"db\x00", b"d b", "dé".encode(), b"db/../db",
])
async def test_hostile_service_names_are_refused(name: bytes, tunnel_log) -> None:
    target = CountingTarget()
    target_port = await target.start()
    services = {n: Service(n, ("127.0.0.1", target_port)) for n in ("db", "default", "x" * 64)}
    server = TunnelServer(server_config({}), services)
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        peer.send(FrameType.OPEN, 1, name)
        peer.send(FrameType.DATA, 1, b"nothing of this may reach a target")
        peer.send(FrameType.OPEN, 3, b"db")  # a good stream after it, on the same link
        peer.send(FrameType.DATA, 3, b"ok")
        await peer.until(lambda: bool(peer.closes(1)) and any(f.kind == FrameType.DATA and f.stream == 3
                                                              for f in peer.frames))
        assert peer.closes(1) == [b"a malformed service name"]
        assert target.accepted == 1  # only stream 3's
        lines = records(tunnel_log, "refused a stream")
        assert len(lines) == 1 and "\n" not in lines[0] and len(lines[0]) < 200, lines
        assert only_link(server).streams_refused == 1
    finally:
        peer.writer.close()
        await server.close()
        target.close()


async def test_a_service_not_open_to_the_peer_is_refused_and_never_contacted() -> None:
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), {"db": Service("db", ("127.0.0.1", target_port), frozenset({b"app"}))})
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port, name=b"client")
    try:
        peer.send(FrameType.OPEN, 1, b"db")
        peer.send(FrameType.DATA, 1, b"DROP TABLE")
        await peer.until(lambda: bool(peer.closes(1)))
        assert b"not open to client" in peer.closes(1)[0] and target.accepted == 0
    finally:
        peer.writer.close()
        await server.close()
        target.close()


async def test_a_hostile_close_reason_is_one_short_printable_line(tunnel_log) -> None:
    target = CountingTarget()
    target_port = await target.start()
    server = TunnelServer(server_config({}), ("127.0.0.1", target_port))
    port = await server.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    try:
        peer.send(FrameType.OPEN, 1, b"")
        peer.send(FrameType.DATA, 1, b"hi")
        await peer.until(lambda: any(f.kind == FrameType.DATA and f.stream == 1 for f in peer.frames))
        reason = b"\n2026 WARNING forged\r\x1b[2J\xe2\x80\xae\xff" + bytes(range(256)) * 200
        peer.send(FrameType.CLOSE, 1, reason)
        await until(lambda: bool(records(tunnel_log, "a tunnelled connection was closed")) and target.open == 0)
        [line] = records(tunnel_log, "a tunnelled connection was closed")
        assert line.isprintable() and len(line) < 400, line
    finally:
        peer.writer.close()
        await server.close()
        target.close()


async def test_a_reload_removing_a_service_ends_its_streams_on_both_sides(tunnel_log) -> None:
    target = CountingTarget()
    target_port = await target.start()
    services = {n: Service(n, ("127.0.0.1", target_port)) for n in ("gone", "kept")}
    server = TunnelServer(server_config({}), services)
    port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port))
    try:
        ports = await client.start_services({n: Service(n, ("127.0.0.1", 0)) for n in services},
                                            connect_timeout=GUARD)
        streams = {}
        for name in services:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[name])
            writer.write(b"12345")
            assert await asyncio.wait_for(reader.readexactly(5), GUARD) == b"12345"
            streams[name] = (reader, writer)
        assert server.set_services({"kept": services["kept"]}) == 1
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(streams["gone"][0].read(), GUARD) == b""
        await until(lambda: bool(records(tunnel_log, "no longer offers this service")) and target.open == 1)
        reader, writer = streams["kept"]
        writer.write(b"still")
        assert await asyncio.wait_for(reader.readexactly(5), GUARD) == b"still"
        for _, writer in streams.values():
            writer.close()
    finally:
        await client.close()
        await server.close()
        target.close()


async def test_control_socket_survives_junk_idle_and_floods(tmp_path: Path) -> None:
    control = ControlServer(tmp_path / "control.sock", lambda: {"ok": True})
    await control.start()
    path = str(tmp_path / "control.sock")
    try:
        assert (tmp_path / "control.sock").stat().st_mode & 0o777 == 0o600
        idle = [await asyncio.open_unix_connection(path) for _ in range(200)]  # connect and never send
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"A" * (10 << 20))  # 10 MB without a newline
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), GUARD) == b""
        writer.close()
        assert await query(tmp_path / "control.sock") == {"ok": True}  # still answering
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"shutdown\n")
        assert b"unknown command" in await asyncio.wait_for(reader.read(), GUARD)
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
    finally:
        await control.close()


ASK = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\nexcept OSError as e:\n"
       " print('refused', e.errno); sys.exit(0)\ns.sendall(b'status\\n'); print('answer', repr(s.recv(65536)))\n")


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
async def test_control_socket_refuses_another_user(tmp_path: Path) -> None:
    folder = Path("/tmp") / f"hostile-control-{os.getpid()}"
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)  # a world-traversable folder: only the socket's own protections are left
    path = folder / "control.sock"
    control = ControlServer(path, lambda: {"secret": "fingerprints"})
    await control.start()
    try:
        def as_nobody() -> str:
            done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                   sys.executable, "-c", ASK, str(path)], capture_output=True, text=True,
                                  timeout=GUARD)
            return done.stdout + done.stderr
        assert (await asyncio.to_thread(as_nobody)).startswith("refused")  # 0600
        path.chmod(0o666)  # the operator loosens it: SO_PEERCRED still refuses
        out = await asyncio.to_thread(as_nobody)
        assert "fingerprints" not in out, out
    finally:
        await control.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_metrics_refuses_other_methods_and_paths_and_survives_slowloris() -> None:
    server = await serve_metrics("127.0.0.1", 0, lambda: {"links": [], "handshake_failures": {},
                                                           "reloads": {"applied": 0, "refused": 0}})
    port = server.sockets[0].getsockname()[1]

    async def ask(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), GUARD)
        writer.close()
        return answer

    try:
        slow = []
        for _ in range(300):  # slowloris: half a request line each, then nothing
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /met")
            slow.append(writer)
        for request in (b"POST /metrics HTTP/1.0\r\n\r\n", b"HEAD /metrics HTTP/1.0\r\n\r\n",
                        b"GET /metrics/../x HTTP/1.0\r\n\r\n", b"GET http://evil/metrics HTTP/1.0\r\n\r\n",
                        b"GET //metrics HTTP/1.0\r\n\r\n", b"\r\n\r\n", b"GET\r\n\r\n"):
            assert (await ask(request)).startswith(b"HTTP/1.0 404"), request
        assert (await ask(b"GET /metrics HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 200 OK")
        for writer in slow:
            writer.close()
    finally:
        server.close()


async def test_two_quick_sighups_both_apply(tmp_path: Path, procs) -> None:
    config_file = tmp_path / "server.toml"
    port = free_port()
    write_server_toml(config_file, tmp_path / "s", port)
    server = procs("server")
    await server.start("server", "--config", str(config_file))
    await server.says("mls-tunnel server on ")
    write_server_toml(config_file, tmp_path / "s", port, extra='[services.more]\ntarget = "127.0.0.1:10"\n')
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    server.process.send_signal(signal.SIGHUP)  # two pending SIGHUPs may merge into one (POSIX): 1 or 2 reloads
    await until(lambda: "configuration reloaded in" in server.text() or server.process.returncode is not None)
    assert server.process.returncode is None
    done = await asyncio.to_thread(subprocess.run, [*COMMAND, "status", "--state-dir", str(tmp_path / "s"), "--json"],
                                   capture_output=True, text=True, timeout=GUARD)
    report = json.loads(done.stdout)
    assert report["reloads"]["applied"] in (1, 2) and report["reloads"]["refused"] == 0
    assert {s["name"] for s in report["services"]} == {"default", "more"}


def test_an_alert_after_the_peers_close_notify_is_refused() -> None:
    pair = TlsPair()
    pair.client.connect()
    pair.pump()
    pair.client.send_eof()
    pair.pump()
    sealer = pair.client._send
    assert sealer is not None and pair.server.read_closed
    pair.server.receive_data(bytes(sealer.seal(ContentType.ALERT, bytes([2, 40]))))  # a forged-late fatal alert
    pair.pump()
    [ended] = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert ended.reason != "peer sent HANDSHAKE_FAILURE" and not ended.by_peer
