"""What a new operator of ``mls-tunnel`` met (its first-use report), run as real processes.

A second tunnel on the same configuration, a listen address in use, a service naming an unknown peer, status
before any rekey and on a client, status into a closed pipe, a client whose stored session was made under
another identity, a config-file address mistake, reload warnings, a refused client's last words.  Every wait
is on a log line, an answer or a process exit, with a hang guard (never a measure of speed).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mls2p.store import FileSessionStore
from mlstls.testing import free_port
from tests.test_tunnel_services import COMMAND, GUARD, End, echo, exchange, fingerprint, one_line, run, write_toml


@pytest.fixture(autouse=True)
def private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


class Pair:
    """A server and a client End, their keys, and an echo target."""

    def __init__(self, root: Path, target_port: int) -> None:
        self.root = root
        self.server = End("server", root, ports={"link": free_port()})
        self.client = End("client", root, ports={"echo": free_port()})
        self.target_port = target_port
        self.keys = {end.name: fingerprint(end.folder) for end in (self.server, self.client)}

    def server_config(self, *extra: str, allow: list[str] | None = None) -> None:
        allow = [f"client={self.keys['client']}"] if allow is None else allow
        write_toml(self.server.config, [
            f'listen = "127.0.0.1:{self.server.ports["link"]}"', 'identity = "server"',
            f'state-dir = "{self.server.folder}"', "allow = [" + ", ".join(f'"{a}"' for a in allow) + "]", *extra,
            "[services.echo]", f'target = "127.0.0.1:{self.target_port}"'])

    def client_config(self, *extra: str, identity: str = "client") -> None:
        write_toml(self.client.config, [
            f'connect = "127.0.0.1:{self.server.ports["link"]}"', f'identity = "{identity}"',
            f'state-dir = "{self.client.folder}"', f'allow = ["server={self.keys["server"]}"]', *extra,
            "[services.echo]", f'listen = "127.0.0.1:{self.client.ports["echo"]}"'])


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    made = Pair(tmp_path, target.sockets[0].getsockname()[1])
    yield made
    for end in (made.client, made.server):
        if end.process is not None and end.process.returncode is None:
            end.process.kill()
            await end.process.wait()
    target.close()


def status(folder: Path) -> dict:
    done = run("status", "--state-dir", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    report: dict = json.loads(done.stdout)
    return report


async def until(predicate, what: str) -> None:
    """Wait for ``predicate`` (polled); a hang guard, not a speed test."""
    for _ in range(int(GUARD / 0.05)):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within the hang guard: {what}")


# -- 1. a second tunnel, and a listen address that cannot be bound ---------------------------------------

async def test_a_second_tunnel_on_the_same_config_says_so_and_a_busy_listen_is_a_configuration_mistake(
        pair: Pair) -> None:
    pair.server_config()
    await pair.server.start("server")
    second = run("server", "--config", str(pair.server.config))
    one_line(second, 2, "another mls-tunnel is running")
    assert "mls-tunnel server" not in second.stdout, second.stdout  # nothing announced: no banner, no key line

    # The same --listen from another folder: the port is taken.  Exit status 2 (systemd does not restart it
    # every 2 s), one line naming the option, never "[Errno 98]".
    port = pair.server.ports["link"]
    other = run("server", "--config", str(pair.server.config), "--state-dir", str(pair.root / "other"))
    one_line(other, 2, f"--listen 127.0.0.1:{port}: cannot listen there: address already in use")
    assert "Errno" not in other.stderr

    # A client service whose address is in use (the server's port, here): its table names it.
    pair.client.ports["echo"] = port
    pair.client_config()
    busy = run("client", "--config", str(pair.client.config))
    one_line(busy, 2, f"{pair.client.config}: [services.echo] listen 127.0.0.1:{port}: cannot listen there")


# -- 2. a service naming a peer no trust option names -----------------------------------------------------

async def test_a_service_naming_an_unknown_peer_is_warned_at_start_and_at_reload(pair: Pair) -> None:
    write_toml(pair.server.config, [
        f'listen = "127.0.0.1:{pair.server.ports["link"]}"', f'state-dir = "{pair.server.folder}"',
        f'allow = ["client={pair.keys["client"]}"]',
        "[services.web]", f'target = "127.0.0.1:{pair.target_port}"', 'peers = ["client", "zed"]',
        "[services.db]", f'target = "127.0.0.1:{pair.target_port}"', 'peers = ["client"]'])
    await pair.server.start("server")
    warning = "[services.web] peers: zed is named by no trust option (--allow, --trust-file)"
    await pair.server.says(warning)
    mark = len(pair.server.text())
    assert "configuration reloaded" in await pair.server.reload()
    await pair.server.says(warning, after=mark)
    assert "[services.db] peers" not in pair.server.text()  # every name it lists is pinned


# -- 3. status before any rekey, and on a client ----------------------------------------------------------

async def test_status_shows_no_last_rekey_before_the_first_and_no_peers_on_a_client(pair: Pair) -> None:
    pair.server_config("rekey-seconds = 3600")
    pair.client_config("rekey-seconds = 3600")
    await pair.server.start("server")
    await pair.client.start("client")
    assert await exchange(pair.client.ports["echo"], b"hello") == b"hello"
    for end in (pair.client, pair.server):
        report = status(end.folder)
        assert [(link["rekeys"], link["last_rekey_seconds_ago"]) for link in report["links"]] == [(0, None)], report
        text = run("status", "--state-dir", str(end.folder))
        assert text.returncode == 0 and "rekeys 0, last rekey -\n" in text.stdout + "\n", text.stdout
    human = run("status", "--state-dir", str(pair.client.folder)).stdout
    assert f"service echo listening on 127.0.0.1:{pair.client.ports['echo']}\n" in human, human
    assert "trusted peer" not in human
    assert "(any trusted peer)" in run("status", "--state-dir", str(pair.server.folder)).stdout


async def test_status_shows_the_last_rekey_once_there_is_one(pair: Pair) -> None:
    pair.server_config("rekey-seconds = 0.3")
    pair.client_config()
    await pair.server.start("server")
    await pair.client.start("client")
    await until(lambda: status(pair.client.folder)["links"][0]["rekeys"] > 0, "a rekey")
    link = status(pair.client.folder)["links"][0]
    assert isinstance(link["last_rekey_seconds_ago"], float | int) and link["last_rekey_seconds_ago"] >= 0
    assert " s ago" in run("status", "--state-dir", str(pair.client.folder)).stdout


# -- 4. status into a closed pipe ---------------------------------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])
async def test_status_into_a_closed_pipe_ends_quietly(pair: Pair, verbose: bool) -> None:
    pair.server_config()
    await pair.server.start("server")
    reading, writing = os.pipe()
    os.close(reading)  # the reader is gone before anything is written (as `| head -c 10` once it has enough)
    try:
        done = subprocess.run([*COMMAND, *(["-v"] if verbose else []), "status", "--state-dir",
                               str(pair.server.folder), "--json"], stdout=writing, stderr=subprocess.PIPE,
                              text=True, timeout=GUARD)
    finally:
        os.close(writing)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# -- 5. a stored session made under another identity ------------------------------------------------------

async def test_a_session_stored_under_another_identity_is_not_resumed(pair: Pair) -> None:
    key = pair.keys["client"]
    pair.server_config(allow=[f"alice={key}"])
    await pair.server.start("server")
    pair.client_config(identity="alice")
    await pair.client.start("client")
    assert await exchange(pair.client.ports["echo"], b"as alice") == b"as alice"
    await pair.client.stop()
    sessions = FileSessionStore(pair.client.folder / "sessions")
    [alice_session] = sessions.group_ids()

    pair.server_config(allow=[f"bob={key}"])  # the same key, renamed on both ends
    assert "configuration reloaded" in await pair.server.reload()
    pair.client_config(identity="bob")
    mark = len(pair.client.text())
    await pair.client.start("client", "-v")
    await pair.client.says("mls-tunnel client on ", after=mark)  # this start's (the log holds the first's too)
    line = await pair.client.says("the stored session belongs to identity alice", after=mark)
    assert "fresh authenticated handshake" in line
    assert await exchange(pair.client.ports["echo"], b"as bob") == b"as bob"
    assert "cannot resume" not in pair.client.text()[mark:]
    assert status(pair.server.folder)["handshake_failures"] == {}  # not a bad_certificate cost to the server
    await until(lambda: alice_session not in sessions.group_ids(), "the old session forgotten")
    assert len(sessions.group_ids()) == 1
    client_link = status(pair.client.folder)["links"][0]
    assert (client_link["resumptions"], client_link["fresh_handshakes"]) == (0, 1)


# -- 6. an address mistake in a config file names its place ----------------------------------------------

def test_an_address_mistake_in_a_service_names_the_service_and_key(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text('listen = "127.0.0.1:0"\ninsecure-accept-any-peer = true\n'
                                          '[services.web]\ntarget = "localhost"\n')
    done = subprocess.run([*COMMAND, "server", "--config", "server.toml", "--state-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=GUARD, cwd=tmp_path)
    one_line(done, 2, "mls-tunnel: server.toml: [services.web] target: 'localhost' is not host:port "
                      "(for example 127.0.0.1:8443)")
    one_line(run("client", "--connect", "127.0.0.1:9", "--listen", "localhost", "--insecure-accept-any-peer"), 2,
             "--listen: 'localhost' is not host:port")


# -- 7. reload logs -----------------------------------------------------------------------------------

async def test_a_restart_only_change_is_said_once_and_only_live_connections_are_counted(pair: Pair) -> None:
    pair.server_config()
    pair.client_config()
    await pair.server.start("server")
    await pair.client.start("client")
    assert await exchange(pair.client.ports["echo"], b"up") == b"up"
    assert "1 live connection(s) re-checked" in await pair.server.reload()

    pair.server_config("rekey-seconds = 12")
    mark = len(pair.server.text())
    await pair.server.reload()
    await pair.server.says("--rekey-seconds changed: it takes effect at the next start", after=mark)
    mark = len(pair.server.text())
    assert "configuration reloaded" in await pair.server.reload()
    await pair.server.reload()
    assert "--rekey-seconds changed" not in pair.server.text()[mark:], pair.server.text()[mark:]  # said once
    pair.server_config("rekey-seconds = 13")  # another value: said again
    mark = len(pair.server.text())
    await pair.server.reload()
    await pair.server.says("--rekey-seconds changed", after=mark)

    await pair.client.stop()  # its connection is closed: not counted any more
    await until(lambda: status(pair.server.folder)["links"][0]["state"] == "waiting", "the link down")
    assert "0 live connection(s) re-checked" in await pair.server.reload()


# -- 8. a refused client's last words ---------------------------------------------------------------------

async def test_a_revoked_client_ends_with_the_reason_and_no_shutting_down_line(pair: Pair) -> None:
    pair.server_config()
    pair.client_config()
    await pair.server.start("server")
    await pair.client.start("client")
    assert await exchange(pair.client.ports["echo"], b"up") == b"up"
    (pair.root / "peers").write_text("# the client is revoked\n")
    pair.server_config(f'trust-file = "{pair.root / "peers"}"', allow=[])
    await pair.server.reload()
    assert pair.client.process is not None
    assert await asyncio.wait_for(pair.client.process.wait(), GUARD) == 1
    lines = [line for line in pair.client.text().splitlines() if line.strip()]
    assert "the server refused us" in lines[-1], lines[-3:]
    assert not any("shutting down" in line for line in lines), lines[-3:]
    await pair.server.stop()
    assert "mls-tunnel: shutting down" in pair.server.text()  # a stop asked for still says so


def test_store_replicas_needs_a_redis_store(tmp_path: Path) -> None:
    """--store-replicas asks Redis replicas to acknowledge each write; with a folder store it is a mistake."""
    done = run("server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--insecure-accept-any-peer",
               "--state-dir", str(tmp_path / "s"), "--store-replicas", "1")
    one_line(done, 2, "--store-replicas is for a Redis --store")
