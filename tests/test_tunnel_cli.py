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

import pytest

from mlstls.testing import TunnelProcesses, free_port

TIMEOUT = 60
COMMAND = [sys.executable, "-m", "mlstls.cli"]


@pytest.fixture(autouse=True)
def private_state_home(tmp_path, monkeypatch) -> None:
    """Commands run without --state-dir keep their key in the XDG state folder: a temporary one, not the home's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))




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
        assert b"connected | epoch" in status and b"rekeys" in status, status
    finally:
        client.send_signal(signal.SIGINT)
        server.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), TIMEOUT) for p in (client, server)]
        target.close()
    assert codes == [130, 143]  # Ctrl-C and SIGTERM: clean stops, the conventional statuses
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


FAKE_PIN = "server=sha256:" + "a" * 64


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    lines = [line for line in done.stderr.strip().splitlines() if line]
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=TIMEOUT)


def test_every_mistake_is_one_line(tmp_path) -> None:
    one_line_error(run("client", "--listen", "nowhere", "--connect", "127.0.0.1:9", "--allow", FAKE_PIN), 2,
                   "'nowhere' is not host:port")
    one_line_error(run("client", "--connect", "127.0.0.1:9", "--allow", FAKE_PIN), 2, "needs --listen")
    one_line_error(run("client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9", "--allow", FAKE_PIN,
                       "--state-dir", "/proc/no-such-folder"), 2, "cannot write the state folder /proc/no-such-folder")
    (tmp_path / "bad.toml").write_text("lisen = '127.0.0.1:0'\n")
    one_line_error(run("client", "--config", str(tmp_path / "bad.toml")), 2, "unknown option 'lisen'")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(run("server", "--listen", f"127.0.0.1:{port}", "--target", "127.0.0.1:9",
                           "--allow", "client=sha256:" + "b" * 64), 2, f"--listen 127.0.0.1:{port}",
                       "address already in use", "choose another port")  # a configuration mistake: no restart
    one_line_error(run("client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{free_port()}",
                       "--allow", FAKE_PIN, "--connect-timeout", "1"), 1, "cannot reach the tunnel server",
                   "is it running")


def test_a_config_file_holds_the_options(tmp_path) -> None:
    (tmp_path / "client.toml").write_text(
        f'listen = "127.0.0.1:0"\nconnect = "127.0.0.1:{free_port()}"\nallow = ["{FAKE_PIN}"]\n'
        'connect-timeout = 1\n')
    one_line_error(run("client", "--config", str(tmp_path / "client.toml")), 1, "cannot reach the tunnel server")


async def test_refused_identities_end_the_client_with_the_reason(tmp_path) -> None:
    server_dir = tmp_path / "server"
    server_key = fingerprint(server_dir)
    stranger_key = fingerprint(tmp_path / "stranger")
    port = free_port()
    server = await start("server", "--listen", f"127.0.0.1:{port}", "--target", "127.0.0.1:9", "--identity", "server",
                         "--state-dir", str(server_dir), "--allow", f"client={fingerprint(tmp_path / 'client')}")
    try:
        refused = await asyncio.to_thread(run, "client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{port}",
                                          "--identity", "client", "--state-dir", str(tmp_path / "stranger"),
                                          "--allow", f"server={server_key}")
        one_line_error(refused, 1, "the server refused us", "BAD_CERTIFICATE")
        assert stranger_key != server_key
        mitm = await asyncio.to_thread(run, "client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{port}",
                                       "--identity", "client", "--state-dir", str(tmp_path / "client"),
                                       "--allow", FAKE_PIN)
        one_line_error(mitm, 1, "we refused the server", "presented key")
    finally:
        server.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 130  # Ctrl-C: a clean stop, status 130


def test_refusals_are_logged_at_most_once_a_second(caplog) -> None:
    from mlstls import streams

    limited = streams._RateLimitedLog(interval=3600)  # nothing passes after the first within the hour
    with caplog.at_level("WARNING", logger="mlstls.streams"):
        for attempt in range(50):
            limited.log(f"refused attempt {attempt}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused attempt 0"]


def test_store_options_and_commands(tmp_path) -> None:
    from tests.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        made = run("store-key", "--id", "2026-12")
        assert made.returncode == 0 and made.stdout.startswith("2026-12 ") and len(made.stdout.split()[1]) == 64
        keys = tmp_path / "store.keys"
        keys.write_text(made.stdout)
        keys.chmod(0o600)
        server = ("server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--allow", FAKE_PIN)
        one_line_error(run(*server, "--store", redis.url), 2, "needs a sealing keyring")
        one_line_error(run(*server, "--store-keyring", str(keys)), 2, "give --store redis://")
        one_line_error(run(*server, "--store", redis.url, "--store-keyring", str(keys), "--trust-on-first-use",
                           "--state-dir", str(tmp_path / "s")), 2, "a fleet would pin differently")
        one_line_error(run(*server, "--store", f"redis://127.0.0.1:{free_port()}/0", "--store-keyring", str(keys)),
                       1, "Redis session store failed")
        keys.chmod(0o644)
        one_line_error(run(*server, "--store", redis.url, "--store-keyring", str(keys)), 2, "readable by others")
        keys.chmod(0o600)
        resealed = run("store-reseal", "--store", redis.url, "--store-keyring", str(keys))
        assert resealed.returncode == 0 and "resealed 0 session(s) with key '2026-12'" in resealed.stdout
        one_line_error(run("store-reseal", "--store", str(tmp_path), "--store-keyring", str(keys)), 2,
                       "works on a Redis --store")
    finally:
        redis.stop()


async def test_sighup_reloads_trust_and_disconnects_a_revoked_peer_at_once(tmp_path) -> None:
    """Revocation without a restart (security round 3, finding 5): SIGHUP re-reads --trust-file; the revoked
    client's link is closed at once, its resumption and a fresh handshake are refused, and it stops."""
    procs = TunnelProcesses(tmp_path)
    await procs.start_target()
    assert procs.target is not None
    peers = tmp_path / "server-peers"
    peers.write_text(f"client {procs.client_key}\n")
    procs.server = await procs._spawn("server", "--listen", f"127.0.0.1:{procs.server_port}", "--target",
                                      f"127.0.0.1:{procs.target.sockets[0].getsockname()[1]}", "--state-dir",
                                      str(procs.server_dir), "--identity", "server", "--trust-file", str(peers))
    await procs.start_client()
    try:
        await asyncio.wait_for(procs.echo_through(), 60)
        peers.write_text("client sha256:nonsense\n")  # a mistake: the reload is refused, nothing changes
        procs.server.send_signal(signal.SIGHUP)
        await _log_says(procs.log, "reload refused")
        await asyncio.wait_for(procs.echo_through(), 60)
        peers.write_text("# the client is revoked\n")
        procs.server.send_signal(signal.SIGHUP)
        await _log_says(procs.log, "no longer trusted")
        assert procs.client is not None
        assert await asyncio.wait_for(procs.client.wait(), 60) == 1  # refused: it stops instead of retrying
        assert procs.server.returncode is None  # the server lives on
        assert "server refused us" in procs.log.read_text()
    finally:
        for process in (procs.client, procs.server):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        procs.target.close()


async def _log_says(log: Path, text: str) -> None:
    for _ in range(600):
        if text in log.read_text(errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{log.read_text(errors='replace')[-3000:]}")
