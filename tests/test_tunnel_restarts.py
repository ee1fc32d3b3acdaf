"""The tunnel as its users run it: processes killed with SIGKILL and started again, data checked each time.

Each scenario runs the real ``mls-tunnel`` commands as subprocesses with their
own state folders, moves data through before and after, and checks it byte for
byte (sha256).  Timeouts are hang guards only; the restart times are measured
by benchmarks/bench_tunnel_restart.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from mlstls.testing import GUARD
from mlstls.testing import TunnelProcesses as Tunnel


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
