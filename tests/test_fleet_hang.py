"""A Redis that hangs (SIGSTOP) must not freeze a tunnel server's links, nor cost a session (issue 24, step 1).

A real ``mls-tunnel server`` on a real redis-server, two real clients rekeying
every 0.3 s, one of them echoing a steady stream.  Redis is stopped for 3 s and
continued.  Asserted (conditions, not timings): the stream's echo keeps
arriving while Redis is stopped, rekeys stop during the stop and resume after
it, and no session is lost (no client falls back to a fresh handshake).  The
longest gap in the echo is printed for the closing note, not judged here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.fleet import write_private
from mls2p.sealing import new_key_line
from mlstls.testing import free_port

from .redis_server import RedisServer

GUARD = 60.0
COMMAND = [sys.executable, "-m", "mlstls.cli"]


def fingerprint(folder: Path) -> str:
    done = subprocess.run([*COMMAND, "fingerprint", "--state-dir", str(folder)], capture_output=True, text=True,
                          timeout=GUARD, check=True)
    return done.stdout.strip()


async def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(GUARD / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within the hang guard")


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_a_hung_redis_freezes_no_link_and_loses_no_session(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    keys = write_private(tmp_path / "store.keys", new_key_line("fleet") + "\n")
    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    server_dir = tmp_path / "server"
    server_key = fingerprint(server_dir)
    clients = {name: tmp_path / name for name in ("c1", "c2")}
    client_keys = {name: fingerprint(folder) for name, folder in clients.items()}
    server_port = free_port()
    log = tmp_path / "log"
    processes: list[asyncio.subprocess.Process] = []

    async def spawn(*args: str) -> None:
        with log.open("ab") as sink:
            processes.append(await asyncio.create_subprocess_exec(*COMMAND, "-v", *args, stdout=sink, stderr=sink))

    try:
        await spawn("server", "--listen", f"127.0.0.1:{server_port}", "--target",
                    f"127.0.0.1:{target.sockets[0].getsockname()[1]}", "--state-dir", str(server_dir),
                    "--identity", "server", "--store", redis.url, "--store-keyring", str(keys),
                    "--rekey-seconds", "0.3", *[f"--allow={name}={key}" for name, key in client_keys.items()])
        ports = {name: free_port() for name in clients}
        for name, folder in clients.items():
            await spawn("client", "--listen", f"127.0.0.1:{ports[name]}", "--connect", f"127.0.0.1:{server_port}",
                        "--state-dir", str(folder), "--identity", name, "--allow", f"server={server_key}",
                        "--rekey-seconds", "0.3", "--retry-forever")
        await wait_for(lambda: log.read_text().count("mls-tunnel client on") == 2, "both clients up")

        reader, writer = await asyncio.open_connection("127.0.0.1", ports["c1"])
        arrivals: list[float] = []
        stop = asyncio.Event()

        async def stream() -> None:
            while not stop.is_set():
                chunk = os.urandom(4096)
                writer.write(chunk)
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(len(chunk)), GUARD) == chunk
                arrivals.append(time.monotonic())
                await asyncio.sleep(0.01)

        streaming = asyncio.ensure_future(stream())
        await asyncio.sleep(1.5)  # rekeys under way on both links
        assert redis.process is not None
        reloaded = log.read_text()
        redis.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        await asyncio.sleep(3.0)
        during = [t for t in arrivals if t > stopped_at]
        redis.process.send_signal(signal.SIGCONT)
        resumed_at, log_at_resume = time.monotonic(), len(log.read_text())
        await asyncio.sleep(2.5)
        stop.set()
        await asyncio.wait_for(streaming, GUARD)
        writer.close()

        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        text = log.read_text()
        print(f"echoes during the 3 s stop: {len(during)}; longest gap {max(gaps) * 1000:.0f} ms; "
              f"store unavailable lines: {text.count('session store unavailable')}")
        assert len(during) > 10  # the link carried data while Redis was stopped
        assert "session store unavailable" in text[len(reloaded):]  # the stop was felt by the store...
        assert "cannot resume the stored session" not in text  # ... and no session was lost:
        assert text.count("new MLS session") == 2  # one fresh handshake per client, at the start, none since
        after = [t for t in arrivals if t > resumed_at]
        assert after  # and data flows after it, rekeys resume, and no link had to reconnect
        assert "switched to epoch" in text[log_at_resume:]
        assert "StaleStateError" not in text and "link connection ended" not in text
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), GUARD)
        if redis.process is not None:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
        target.close()


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
