"""mls-tunnel as a long-running service: several services per process, reload without drops, status, metrics.

Real ``mls-tunnel`` processes (one server, two clients) with configuration files,
as an operator runs them; every wait is on a log line, an answer or a process
exit, with a hang guard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mls2p.store import MemorySessionStore
from mls2p.testing import config
from mlstls import MlsTlsConfiguration, tunnel
from mlstls.services import Service
from mlstls.testing import free_port
from mlstls.tunnel import TunnelClient, TunnelServer

GUARD = 60.0
COMMAND = [sys.executable, "-m", "mlstls.cli"]


@pytest.fixture(autouse=True)
def private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=GUARD)


def one_line(done: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert fragment in lines[0], lines[0]


def fingerprint(folder: Path) -> str:
    done = run("fingerprint", "--state-dir", str(folder))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


@dataclass
class End:
    """One mls-tunnel process: its folder, configuration file and log."""

    name: str
    root: Path
    process: asyncio.subprocess.Process | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.toml"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def start(self, mode: str, *extra: str) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(*COMMAND, mode, "--config", str(self.config), *extra,
                                                                stdout=log, stderr=log)
        await self.says(f"mls-tunnel {mode} on ")

    async def says(self, text: str, *, after: int = 0) -> str:
        """Wait until the log has ``text`` (past character ``after``); return the line."""
        for _ in range(int(GUARD / 0.05)):
            log = self.text()[after:]
            if text in log:
                return next(line for line in log.splitlines() if text in line)
            if self.process is not None and self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not in the log:\n{self.text()[-3000:]}")

    async def reload(self) -> str:
        mark = len(self.text())
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        return await self.says("reload", after=mark)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), GUARD)


def write_toml(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Fleet:
    root: Path
    server: End
    clients: dict[str, End]
    targets: dict[str, int]
    keys: dict[str, str]
    metrics_port: int

    def server_config(self, *, trusted: list[str], services: dict[str, tuple[str, list[str] | None]]) -> None:
        (self.root / "peers").write_text("".join(f"{name} {self.keys[name]}\n" for name in trusted))
        lines = [f'listen = "127.0.0.1:{self.server.ports["link"]}"', 'identity = "server"',
                 f'state-dir = "{self.server.folder}"', f'trust-file = "{self.root / "peers"}"',
                 "rekey-seconds = 0.5", f'metrics = "127.0.0.1:{self.metrics_port}"']
        for name, (target, peers) in services.items():
            lines += [f"[services.{name}]", f'target = "127.0.0.1:{self.targets[target]}"']
            if peers is not None:
                lines.append("peers = [" + ", ".join(f'"{p}"' for p in peers) + "]")
        write_toml(self.server.config, lines)

    def client_config(self, name: str, services: list[str]) -> None:
        end = self.clients[name]
        lines = [f'connect = "127.0.0.1:{self.server.ports["link"]}"', f'identity = "{name}"',
                 f'state-dir = "{end.folder}"', f'allow = ["server={self.keys["server"]}"]']
        for service in services:
            end.ports.setdefault(service, free_port())
            lines += [f"[services.{service}]", f'listen = "127.0.0.1:{end.ports[service]}"']
        write_toml(end.config, lines)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    targets = {"echo": await asyncio.start_server(echo, "127.0.0.1", 0),
               "upper": await asyncio.start_server(upper, "127.0.0.1", 0)}
    server = End("server", tmp_path, ports={"link": free_port()})
    clients = {name: End(name, tmp_path) for name in ("client-a", "client-b")}
    keys = {end.name: fingerprint(end.folder) for end in (server, *clients.values())}
    yield Fleet(tmp_path, server, clients, {name: t.sockets[0].getsockname()[1] for name, t in targets.items()},
                keys, free_port())
    for end in (*clients.values(), server):
        if end.process is not None and end.process.returncode is None:
            end.process.kill()
            await end.process.wait()
    for target in targets.values():
        target.close()


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through a local service port, half-close, read the whole answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), GUARD)
    writer.write(payload)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    return answer


async def transfer(port: int, size: int, halfway: asyncio.Event, resume: asyncio.Event,
                   chunk: int = 64 * 1024) -> tuple[str, str]:
    """Stream ``size`` random bytes through an echo service while reading, pausing halfway (``halfway`` set)
    until ``resume``: the reloads happen with the stream open and data in flight.  (sha256 sent, echoed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent, echoed = hashlib.sha256(), hashlib.sha256()

    async def send() -> None:
        for index in range(size // chunk):
            if index == size // chunk // 2:
                halfway.set()
                await resume.wait()
            data = os.urandom(chunk)
            sent.update(data)
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    async def receive() -> None:
        while data := await reader.read(1 << 16):
            echoed.update(data)

    await asyncio.wait_for(asyncio.gather(send(), receive()), 4 * GUARD)
    writer.close()
    return sent.hexdigest(), echoed.hexdigest()


async def test_services_reload_status_and_metrics(fleet: Fleet) -> None:
    a, b = fleet.clients["client-a"], fleet.clients["client-b"]
    fleet.server_config(trusted=["client-a", "client-b"],
                        services={"echo": ("echo", None), "upper": ("upper", ["client-b"])})
    fleet.client_config("client-a", ["echo", "upper"])
    fleet.client_config("client-b", ["echo"])
    await fleet.server.start("server")
    await a.start("client")
    await b.start("client")

    # -- one process, several services, each open to whom the configuration says
    assert await exchange(a.ports["echo"], b"hello echo") == b"hello echo"
    assert await exchange(a.ports["upper"], b"not for a") == b""  # refused: the connection just ends
    await a.says("is not open to client-a")  # ... and the client's log says why
    await fleet.server.says("refused a stream of peer client-a")

    # -- a reload that adds a service and revokes client-a while client-b's transfer goes on
    halfway, resume = asyncio.Event(), asyncio.Event()
    long_transfer = asyncio.ensure_future(transfer(b.ports["echo"], 12 * 1024 * 1024, halfway, resume))
    await asyncio.wait_for(halfway.wait(), GUARD)
    fleet.server_config(trusted=["client-b"], services={"echo": ("echo", None), "upper": ("upper", ["client-b"]),
                                                         "later": ("upper", ["client-b"])})
    reloaded = await fleet.server.reload()
    assert "configuration reloaded in" in reloaded and "3 service(s)" in reloaded, reloaded
    await fleet.server.says("no longer trusted")
    assert a.process is not None
    assert await asyncio.wait_for(a.process.wait(), GUARD) == 1  # refused: it stops instead of retrying
    fleet.client_config("client-b", ["echo", "later"])
    assert "configuration reloaded in" in await b.reload()
    assert await exchange(b.ports["later"], b"new service") == b"NEW SERVICE"
    resume.set()
    sent, echoed = await long_transfer
    assert sent == echoed  # not a byte lost or changed on the unaffected peer's link

    # -- a reload with a mistake keeps the configuration in force
    fleet.server.config.write_text(fleet.server.config.read_text() + "[services.broken\n")
    assert "reload refused" in await fleet.server.reload()
    assert await exchange(b.ports["later"], b"still") == b"STILL"

    # -- status, for people and for scripts
    done = run("status", "--state-dir", str(fleet.server.folder), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "server" and report["key"] == fleet.keys["server"]
    assert sorted(s["name"] for s in report["services"]) == ["echo", "later", "upper"]
    link = next(link for link in report["links"] if link["peer"] == "client-b")
    assert link["fingerprint"] == fleet.keys["client-b"] and link["state"] == "up"
    assert isinstance(link["epoch"], int) and link["bytes_in"] > 12 * 1024 * 1024
    assert report["reloads"]["applied"] == 1 and report["reloads"]["refused"] == 1
    text = run("status", "--state-dir", str(fleet.server.folder))
    assert text.returncode == 0 and "peer client-b (sha256:" in text.stdout and "service later" in text.stdout
    assert (fleet.server.folder / "control.sock").stat().st_mode & 0o777 == 0o600

    # -- Prometheus
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.metrics_port)
    writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
    page = (await asyncio.wait_for(reader.read(), GUARD)).decode()
    writer.close()
    assert page.startswith("HTTP/1.0 200 OK")
    assert 'mls_tunnel_link_up{peer="client-b"} 1.0' in page
    assert 'mls_tunnel_bytes_total{direction="in",peer="client-b"}' in page
    assert 'mls_tunnel_reloads_total{result="refused"} 1.0' in page
    assert "mls_tunnel_rekeys_total" in page and "mls_tunnel_handshake_failures_total" in page

    await b.stop()
    await fleet.server.stop()
    assert not (fleet.server.folder / "control.sock").exists()  # removed on a clean stop


def test_status_without_a_running_tunnel_is_one_line(tmp_path: Path) -> None:
    one_line(run("status", "--state-dir", str(tmp_path)), 1, "no tunnel is running")


@pytest.mark.parametrize(("table", "fragment"), [
    ('[services.db]\ntarget = "127.0.0.1:5432"\ncolour = "red"\n', "unknown option 'colour'"),
    ('[services.db]\npeers = ["a"]\n', 'needs target = "host:port"'),
    ('[services."bad name"]\ntarget = "127.0.0.1:5432"\n', "service name 'bad name'"),
    ('[services.db]\ntarget = "nowhere"\n', "is not host:port"),
])
def test_a_mistake_in_a_service_is_one_line(tmp_path: Path, table: str, fragment: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ninsecure-accept-any-peer = true\n{table}')
    one_line(run("server", "--config", str(config), "--state-dir", str(tmp_path / "s")), 2, fragment)


async def test_two_tunnels_cannot_share_a_state_folder(tmp_path: Path) -> None:
    """And SIGHUP on a tunnel without pins (nothing to re-read but its services) reloads instead of killing it."""
    first = End("server", tmp_path, ports={"link": free_port()})
    write_toml(first.config, [f'listen = "127.0.0.1:{first.ports["link"]}"', 'target = "127.0.0.1:9"',
                              "insecure-accept-any-peer = true", f'state-dir = "{first.folder}"'])
    await first.start("server")
    try:
        second = run("server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--insecure-accept-any-peer",
                     "--state-dir", str(first.folder))
        one_line(second, 2, "another mls-tunnel is running")
        assert "configuration reloaded" in await first.reload()
        assert first.process is not None and first.process.returncode is None
    finally:
        await first.stop()


# -- in one process: flow control per stream, renamed services, unexpected failures, typed options --------

async def _until(predicate, guard: float = GUARD) -> None:
    """Wait for ``predicate`` (polled); AssertionError after ``guard`` seconds (a hang guard, not a speed test)."""
    for _ in range(int(guard / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within the hang guard")


async def _in_process(services: dict[str, int]) -> tuple[TunnelServer, TunnelClient]:
    server = TunnelServer(MlsTlsConfiguration(config(b"server"), False, MemorySessionStore()),
                          {name: Service(name, ("127.0.0.1", port)) for name, port in services.items()})
    port = await server.start("127.0.0.1", 0)
    client = TunnelClient(MlsTlsConfiguration(config(b"client"), True, MemorySessionStore()), ("127.0.0.1", port),
                          retry_delay=0.01)
    return server, client


async def test_a_reader_that_falls_behind_pauses_its_own_stream_and_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloading to an application that stops reading: its stream is paused (the server stops reading the
    target), never closed and never a byte lost, while another stream of the link goes on."""
    # Small limits, so that the transfer is far larger than what a stream may have waiting: without the
    # pause it would be closed ("does not read it").  The window shrinks too (the queue limit must exceed it).
    monkeypatch.setattr(tunnel, "MAX_UNACKED", 4 << 20)
    monkeypatch.setattr(tunnel, "MAX_STREAM_QUEUE", 8 << 20)
    size = 24 << 20
    payload = os.urandom(size)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    big = await asyncio.start_server(source, "127.0.0.1", 0)
    small = await asyncio.start_server(echo, "127.0.0.1", 0)
    server, client = await _in_process({"big": big.sockets[0].getsockname()[1],
                                        "echo": small.sockets[0].getsockname()[1]})
    try:
        ports = await client.start_services({n: Service(n, ("127.0.0.1", 0)) for n in ("big", "echo")},
                                            connect_timeout=GUARD)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["big"])  # ... and reads nothing yet
        await _until(lambda: len(server.links) == 1)
        link = next(iter(server.links.values()))
        await _until(lambda: any(not state.may_send.is_set() for state in link._state.values()))  # paused
        assert client.link._queued <= tunnel.MAX_STREAM_QUEUE
        assert await exchange(ports["echo"], b"meanwhile") == b"meanwhile"  # the link is not held up
        received = await asyncio.wait_for(reader.read(), 4 * GUARD)
        assert len(received) == size and hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        writer.close()
    finally:
        await client.close()
        await server.close()
        big.close()
        small.close()


@pytest.mark.parametrize("swap", [False, True])
async def test_a_client_reload_may_rename_services_on_their_addresses(swap: bool) -> None:
    upper_target = await asyncio.start_server(upper, "127.0.0.1", 0)
    echo_target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server, client = await _in_process({"echo": echo_target.sockets[0].getsockname()[1],
                                        "upper": upper_target.sockets[0].getsockname()[1],
                                        "renamed": upper_target.sockets[0].getsockname()[1]})
    one, two = free_port(), free_port()
    try:
        await client.start_services({"echo": Service("echo", ("127.0.0.1", one)),
                                     "upper": Service("upper", ("127.0.0.1", two))}, connect_timeout=GUARD)
        assert await exchange(two, b"before") == b"BEFORE"
        if swap:  # two services trade their addresses
            fresh = {"echo": Service("echo", ("127.0.0.1", two)), "upper": Service("upper", ("127.0.0.1", one))}
        else:  # one service renamed, on the same address
            fresh = {"echo": Service("echo", ("127.0.0.1", one)), "renamed": Service("renamed", ("127.0.0.1", two))}
        await client.set_services(fresh)
        assert set(client.listeners) == set(fresh)
        assert await exchange(two, b"after") == (b"after" if swap else b"AFTER")
        assert await exchange(one, b"other") == (b"OTHER" if swap else b"other")
    finally:
        await client.close()
        await server.close()
        upper_target.close()
        echo_target.close()


async def test_a_client_survives_an_unexpected_failure_of_its_link(caplog: pytest.LogCaptureFixture) -> None:
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server, client = await _in_process({"default": target.sockets[0].getsockname()[1]})
    attach, calls = client.link.attach, []

    async def fails_once(reader, writer) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        await attach(reader, writer)

    client.link.attach = fails_once  # type: ignore[method-assign]
    try:
        port = await client.start("127.0.0.1", 0, connect_timeout=GUARD)  # up on the second connection
        assert len(calls) >= 2 and client._runner is not None and not client._runner.done()
        assert any("failed unexpectedly: RuntimeError: a bug" in r.getMessage() for r in caplog.records)
        assert await exchange(port, b"still here") == b"still here"
    finally:
        await client.close()
        await server.close()
        target.close()


@pytest.mark.parametrize(("line", "fragment"), [
    ('rekey-seconds = "30s"', "rekey-seconds must be a number, not '30s'"),
    ("rekey-seconds = [30]", "rekey-seconds must be a number"),
    ('insecure-accept-any-peer = "yes"', "insecure-accept-any-peer must be true or false"),
    ("suite = [999]", "suite must be one of"),
    ("listen = 8443", "listen must be a string"),
])
def test_a_badly_typed_option_in_the_config_file_is_one_line(tmp_path: Path, line: str, fragment: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ntarget = "127.0.0.1:9"\nallow = ["c=sha256:{"0" * 64}"]\n'
                      .replace('listen = "127.0.0.1:0"\n', "" if line.startswith("listen") else
                               'listen = "127.0.0.1:0"\n') + line + "\n")
    one_line(run("server", "--config", str(config), "--state-dir", str(tmp_path / "s")), 2, fragment)
