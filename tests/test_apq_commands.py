"""``mls-tunnel --apq`` and the QUIC demo's: the real commands as subprocesses, both APQ modes, status, and the
refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mlstls.testing import echo, free_port

from .test_commands import free_udp_port
from .test_tunnel_cli import COMMAND, TIMEOUT, one_line_error, run, start


def fingerprint(state_dir: Path, suite: int = 1) -> str:
    done = subprocess.run([*COMMAND, "fingerprint", "--state-dir", str(state_dir), "--suite", str(suite)],
                          capture_output=True, text=True, timeout=TIMEOUT, check=True)
    return done.stdout.strip()


def status(state_dir: Path) -> dict:
    done = subprocess.run([*COMMAND, "status", "--state-dir", str(state_dir), "--json"], capture_output=True,
                          text=True, timeout=TIMEOUT, check=True)
    return json.loads(done.stdout)


async def echo_once(port: int, size: int = 200_000) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = os.urandom(size)
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    writer.close()


async def run_pair(tmp_path: Path, *apq: str, pq_suite: int | None = None) -> dict:
    """A server and client with ``apq`` options, data through, until the client made FULL commits beyond its
    first; returns the client's link status."""
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    pins = {side: [fingerprint(folder)] + ([fingerprint(folder, pq_suite)] if pq_suite else [])
            for side, folder in (("server", server_dir), ("client", client_dir))}
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server_port, client_port = free_port(), free_port()
    server = await start("server", "--listen", f"127.0.0.1:{server_port}",
                         "--target", f"127.0.0.1:{target.sockets[0].getsockname()[1]}", "--state-dir", str(server_dir),
                         "--identity", "server", *[f"--allow=client={pin}" for pin in pins["client"]],
                         "--rekey-seconds", "0.2", *apq)
    client = await start("client", "--listen", f"127.0.0.1:{client_port}", "--connect", f"127.0.0.1:{server_port}",
                         "--state-dir", str(client_dir), "--identity", "client",
                         *[f"--allow=server={pin}" for pin in pins["server"]], "--rekey-seconds", "0.2", *apq)
    try:
        await echo_once(client_port)
        for _ in range(int(TIMEOUT / 0.1)):
            (link,) = status(client_dir)["links"]
            if link["full_commits"] >= 2:
                break
            await asyncio.sleep(0.1)
        await echo_once(client_port)
        return link
    finally:
        for process in (client, server):
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), TIMEOUT)
        target.close()


async def test_tunnel_with_apq_rekeys_with_full_commits(tmp_path) -> None:
    link = await run_pair(tmp_path, "--apq", "require", "--full-every", "2")
    assert link["full_commits"] >= 2 and link["pq_epoch"] >= 3 and link["fresh_handshakes"] == 1
    assert link["epoch"] > link["pq_epoch"]  # PARTIAL rekeys between the FULL ones


async def test_tunnel_with_apq_mode_1_pins_the_ml_dsa_key_too(tmp_path) -> None:
    link = await run_pair(tmp_path, "--apq", "require", "--apq-suite", "85", "--full-every", "1", pq_suite=85)
    assert link["full_commits"] >= 2 and link["epoch"] == link["pq_epoch"]  # every commit FULL


async def test_a_client_that_requires_apq_refuses_a_server_without_it(tmp_path) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client"
    port = free_port()
    server = await start("server", "--listen", f"127.0.0.1:{port}", "--target", "127.0.0.1:9", "--identity",
                         "server", "--state-dir", str(server_dir), f"--allow=client={fingerprint(client_dir)}")
    try:
        refused = await asyncio.to_thread(run, "client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{port}",
                                          "--identity", "client", "--state-dir", str(client_dir),
                                          f"--allow=server={fingerprint(server_dir)}", "--apq", "require")
        one_line_error(refused, 1, "without APQ, which we require", "check that --mode, --apq and --apq-suite are "
                       "the same on both ends (this end: --mode mls, --apq require (suite 81))")
        other_mode = await asyncio.to_thread(run, "client", "--mode", "housley", "--listen", "127.0.0.1:0",
                                             "--connect", f"127.0.0.1:{port}", "--identity", "client", "--state-dir",
                                             str(client_dir), f"--allow=server={fingerprint(server_dir)}")
        one_line_error(other_mode, 1, "it answers, so check that --mode", "(this end: --mode housley, --apq off)")
    finally:
        server.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 130


def test_apq_mistakes_are_one_line(tmp_path) -> None:
    pin = "server=sha256:" + "a" * 64
    base = ("client", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9", "--allow", pin,
            "--state-dir", str(tmp_path))
    one_line_error(run(*base, "--apq", "require", "--full-every", "-1"), 2, "full_every")
    one_line_error(run(*base, "--apq-suite", "85", "--full-every", "3"), 2,
                   "--apq-suite, --full-every need --apq prefer or --apq require")  # never silently ignored
    # a --config file's value of an option with choices is checked like the command line's (it was not, for
    # string options: "apq = 'sometimes'" passed, and so did "tls-mode")
    for key in ("apq", "tls-mode"):
        (tmp_path / "bad.toml").write_text(f"{key} = 'sometimes'\n")
        one_line_error(run(*base, "--config", str(tmp_path / "bad.toml")), 2, f"{key} must be one of")
    one_line_error(run(*base, "--apq", "require", "--suite", "82"), 2, "not a classical")
    one_line_error(run(*base, "--apq", "require", "--suite", "81"), 2, "not also offered as a classical one")


def test_quic_demo_with_apq_makes_full_commits() -> None:
    port = str(free_udp_port())
    done = subprocess.run([sys.executable, "-m", "examples.quic_demo", "--port", port, "--apq", "require",
                           "--full-every", "1", "--rounds", "4", "--interval", "0.3", "--rekey-seconds", "0.1"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    echoes = [line for line in done.stdout.splitlines() if line.startswith("echo ")]
    assert len(echoes) == 4 and all("intact=True" in line for line in echoes), done.stdout
    # every commit FULL: the PQ epoch moves with the epoch
    last = echoes[-1]
    epoch, pq_epoch = int(last.split("epoch ")[1].split(",")[0]), int(last.split("PQ epoch ")[1])
    assert epoch == pq_epoch >= 2, last
    wrong = run("server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--allow",
                "client=sha256:" + "b" * 64, "--apq", "sometimes")  # argparse's usage, then the one error
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].endswith("invalid choice: 'sometimes' (choose from 'off', "
                                                           "'prefer', 'require')")


def test_a_config_file_says_mode_or_tls_mode(tmp_path) -> None:
    from mlstls.cli import _parser, _with_config_file

    for key in ("mode", "tls-mode"):
        (tmp_path / "client.toml").write_text(f"{key} = 'housley'\nlisten = '127.0.0.1:0'\nconnect = '127.0.0.1:9'\n")
        assert _with_config_file(_parser(), ["client", "--config", str(tmp_path / "client.toml")]).tls_mode == "housley"
