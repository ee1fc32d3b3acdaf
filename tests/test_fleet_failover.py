"""A Redis failover under Sentinel, with and without replica acknowledgement (issue 24, step 2).

Real redis-server processes: a primary, a replica and three Sentinels on
loopback.  A tunnel server (in this process) stores its sessions through the
Sentinel URL; tunnel clients rekey every 0.2 s and echo data.  The primary is
SIGKILLed mid-run, Sentinel promotes the replica, the old primary comes back as a
replica (as an operator's supervisor restarts it).  Then the tunnel server is
replaced by a new one (a restart or another node: nothing in memory), so every
client must resume from what Redis holds.  With ``replicas=1`` (WAIT) each
confirmed state was on the replica before it counted, so every client resumes;
the run without it measures what is lost (printed for docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from benchmarks.fleet import echo_server, write_private
from benchmarks.redis_topologies import SentinelRedis
from mls2p import RekeyPolicy
from mls2p.sealing import new_key_line
from mls2p.store import MemorySessionStore, open_store
from mls2p.testing import config
from mlstls import MlsTlsConfiguration
from mlstls.testing import free_port
from mlstls.tunnel import TunnelClient, TunnelServer

from .redis_server import require_redis

GUARD = 60.0
CLIENTS = 4


async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(GUARD / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {GUARD} s")


async def run(tmp_path: Path, replicas: int) -> tuple[int, int]:
    """(clients that resumed their session after the failover, clients that lost it)."""
    redis = SentinelRedis(tmp_path, require_redis())
    url = redis.url
    keyring = write_private(tmp_path / "store.keys", new_key_line("fleet") + "\n")
    target, target_address = await echo_server()
    server_profile = config(b"server")
    client_profile = config(b"client", rekey=RekeyPolicy(max_seconds=0.2))
    port = free_port()
    server: TunnelServer | None = None
    clients: list[TunnelClient] = []

    async def start_server() -> TunnelServer:
        for _ in range(int(GUARD / 0.1)):  # Redis (through Sentinel) may not answer yet
            try:
                store = open_store(url, keyring=keyring, replicas=replicas, replica_timeout=0.2)
                break
            except Exception:  # not up yet: Sentinel has no primary, or it does not answer
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the store never answered")
        node = TunnelServer(MlsTlsConfiguration(server_profile, False, store), target_address)
        await node.start("127.0.0.1", port)
        return node

    try:
        redis.start()
        server = await start_server()
        for _ in range(CLIENTS):
            client = TunnelClient(MlsTlsConfiguration(client_profile, True, MemorySessionStore()), ("127.0.0.1", port),
                                  retry_delay=0.05, max_retry_delay=0.3)
            await client.start("127.0.0.1", 0, connect_timeout=GUARD)
            clients.append(client)
        await asyncio.sleep(1.5)  # rekeys under way, every state written through the primary
        first_primary = redis.primary_port()
        redis.primary.kill()
        await until(lambda: all(redis.primary_port(i) != first_primary for i in range(len(redis.sentinels))),
                    "every Sentinel follows the promoted replica")
        new_primary = redis.primary_port()
        redis.primary.start()  # back, and Sentinel turns it into a replica of the new primary
        await until(lambda: redis.replica_online(new_primary), "the old primary resynchronised as a replica")
        await asyncio.sleep(1.5)  # rekeys go on against the new primary
        await server.close()  # a new node: nothing in memory, every session from Redis
        server = await start_server()
        for client in clients:
            client.cut()
        await until(lambda: all(c.link.stats.resumptions + c.link.stats.fresh_handshakes >= 2 for c in clients),
                    "every client reconnected")
        resumed = sum(c.link.stats.fresh_handshakes == 1 for c in clients)
        return resumed, CLIENTS - resumed
    finally:
        for client in clients:
            await client.close()
        if server is not None:
            await server.close()
        target.close()
        redis.stop()


async def test_with_replica_acknowledgement_a_failover_loses_no_confirmed_session(tmp_path: Path) -> None:
    started = time.monotonic()
    resumed, lost = await run(tmp_path, replicas=1)
    print(f"failover with WAIT 1: {resumed} resumed, {lost} lost ({time.monotonic() - started:.1f} s)")
    assert lost == 0


@pytest.mark.parametrize("replicas", [0])
async def test_without_it_the_loss_is_measured(tmp_path: Path, replicas: int) -> None:
    resumed, lost = await run(tmp_path, replicas=replicas)
    print(f"failover without WAIT: {resumed} resumed, {lost} lost")
    assert resumed + lost == CLIENTS
