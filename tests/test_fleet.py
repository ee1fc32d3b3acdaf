"""A fleet: 3 server processes sharing sessions in a real Redis, behind round-robin balancers (issue 13).

50 clients each reconnect 20 times to whichever node the balancer picks,
rekeying and checking data end to end every time.  One node is killed with
SIGKILL right after it stored a commit it never sent; Redis itself is killed
and restarted under load.  Nothing may be lost: every client keeps the one
session it started with (no second fresh handshake), every echo is intact,
and no (key, nonce) pair is used twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import pytest

from benchmarks.fleet import (
    ClientReport,
    FleetKeys,
    FleetNodes,
    TcpBalancer,
    UdpBalancer,
    echo_server,
    quic_client,
    supervise,
    tunnel_client,
    write_private,
)
from mls2p.sealing import new_key_line
from mlsquic.handshake import MlsHandshakeContext
from mlstls.record import RecordProtection
from tests.redis_server import RedisServer

CLIENTS = 50
RECONNECTS = 20
FLEET_TIMEOUT = 300
pytestmark = pytest.mark.timeout(FLEET_TIMEOUT + 120)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def record_nonces(monkeypatch) -> Counter:
    """Every (key, nonce) this process's MLS-TLS records use, sealed or opened: a count above 1 is a reuse.

    The record IV stands for the key (both are expanded from the same traffic secret), and the nonce is
    the IV xor the sequence number, so (IV, sequence) names the (key, nonce) pair exactly.
    """
    uses: Counter = Counter()
    seal, open_ = RecordProtection.seal, RecordProtection.open

    def counted_seal(self, *args, **kwargs):
        uses[(self._iv, self.sequence)] += 1
        return seal(self, *args, **kwargs)

    def counted_open(self, *args, **kwargs):
        result = open_(self, *args, **kwargs)
        uses[(self._iv, self.sequence - 1)] += 1
        return result

    monkeypatch.setattr(RecordProtection, "seal", counted_seal)
    monkeypatch.setattr(RecordProtection, "open", counted_open)
    return uses


@pytest.fixture
def record_quic_secrets(monkeypatch) -> dict[bytes, set[int]]:
    """Which connections derived each QUIC traffic secret.  QUIC never repeats a packet number in one
    connection, so a (key, nonce) can repeat only if a secret serves two connections."""
    users: dict[bytes, set[int]] = defaultdict(set)
    secrets = MlsHandshakeContext._secrets

    def recorded(self, epoch, group):
        pair = secrets(self, epoch, group)
        for secret in pair:
            users[secret].add(id(self))
        return pair

    monkeypatch.setattr(MlsHandshakeContext, "_secrets", recorded)
    return users


def keyring(tmp_path):
    return write_private(tmp_path / "store.keys", new_key_line("fleet") + "\n")


async def run_fleet(nodes: FleetNodes, balancer_port: int, client: Callable[..., Awaitable[ClientReport]],
                    keys: FleetKeys, *, clients: int, reconnects: int,
                    during: Callable[[list[int]], Awaitable[None]] | None = None) -> list[ClientReport]:
    """Run the clients; ``during(progress)`` runs beside them (``progress[i]``: rounds client i has done)."""
    stop = asyncio.Event()
    supervisor = asyncio.get_running_loop().create_task(supervise(nodes, stop))
    progress = [0] * clients
    try:
        runs = [client(keys, ("127.0.0.1", balancer_port), reconnects=reconnects, progress=progress, slot=i)
                for i in range(clients)]
        if during is not None:
            runs.append(during(progress))
        results = await asyncio.wait_for(asyncio.gather(*runs), FLEET_TIMEOUT)
    finally:
        stop.set()
        await supervisor
    return [report for report in results if isinstance(report, ClientReport)]


async def crash_redis(redis_server: RedisServer, progress: list[int], *, outage: float = 1.5) -> None:
    """Once every client has done two rounds, SIGKILL Redis; start it again ``outage`` s later.

    (Every client is then past phase 1: a phase 1 whose confirmation cannot be stored never made a
    session, and its client must start afresh, which this test would count as a lost session.)
    appendfsync always keeps every write Redis acknowledged; the outage outlasts the Redis client's own
    retries, so connections do fail meanwhile.
    """
    while min(progress) < 2:
        await asyncio.sleep(0.01)
    redis_server.kill()
    await asyncio.sleep(outage)
    await asyncio.get_running_loop().run_in_executor(None, redis_server.start)


def assert_nothing_lost(reports: list[ClientReport], reconnects: int) -> None:
    assert len(reports) == CLIENTS if reconnects == RECONNECTS else reports
    # A phase 1 the server never confirmed (its node died first) is retried and is no loss; a fresh
    # handshake after the server had confirmed the session is.
    lost = [r.errors for r in reports if r.sessions_lost]
    assert not lost, f"a confirmed session was lost: {lost}"
    assert all(1 <= r.fresh_handshakes <= 2 for r in reports)
    assert sum(r.corrupted for r in reports) == 0
    assert sum(r.rekeys_stuck for r in reports) == 0, "a rekey never completed on a live connection"
    assert all(reconnects <= r.resumptions for r in reports)


def summary(reports: list[ClientReport]) -> str:
    times = sorted(t for r in reports for t in r.resume_seconds)
    counts = {name: sum(getattr(r, name) for r in reports)
              for name in ("resumptions", "retried_rounds", "failed_connects", "rekeys", "rekeys_interrupted")}
    median, p95 = 1000 * times[len(times) // 2], 1000 * times[int(len(times) * 0.95)]
    return ", ".join(f"{name} {count}" for name, count in counts.items()) + f", resume {median:.1f} ms (p95 {p95:.1f})"


async def test_tunnel_fleet_loses_nothing_when_a_node_dies_mid_commit(tmp_path, redis_server, record_nonces
                                                                      ) -> None:
    keys = FleetKeys.generate()
    target, target_address = await echo_server()
    nodes = FleetNodes(tmp_path, "tunnel", redis_url=redis_server.url, keyring=keyring(tmp_path), keys=keys,
                       target=target_address)
    nodes.start_all(die={0: 40})  # node 0 dies right after storing its 40th commit, before sending it
    balancer = TcpBalancer(nodes.addresses)
    port = await balancer.start()
    try:
        reports = await run_fleet(nodes, port, tunnel_client, keys, clients=CLIENTS, reconnects=RECONNECTS)
    finally:
        await balancer.close()
        nodes.stop_all()
        target.close()
    print("tunnel fleet:", summary(reports), "picks", balancer.picks)
    assert nodes.restarts == 1  # the node did die mid-commit, and came back
    assert_nothing_lost(reports, RECONNECTS)
    # the dead node cost each of its clients at most one extra resumption
    over = [(r.resumptions, r.retried_rounds, r.failed_connects, r.errors[-5:]) for r in reports
            if r.resumptions > RECONNECTS + 1]
    assert not over, over
    # every round rekeyed, except where the dying node broke the connection under the rekey
    assert [r.rekeys + r.rekeys_interrupted for r in reports] == [RECONNECTS + 1] * CLIENTS
    assert sum(r.rekeys_stuck for r in reports) == 0 and sum(r.rekeys_interrupted for r in reports) <= CLIENTS
    assert min(balancer.picks) > 0.2 * sum(balancer.picks)  # every node served its share of resumptions
    assert record_nonces and max(record_nonces.values()) == 1, "a (key, nonce) pair was used twice"


async def test_tunnel_fleet_rides_out_a_redis_crash(tmp_path, redis_server, record_nonces) -> None:
    keys = FleetKeys.generate()
    target, target_address = await echo_server()
    nodes = FleetNodes(tmp_path, "tunnel", redis_url=redis_server.url, keyring=keyring(tmp_path), keys=keys,
                       target=target_address)
    nodes.start_all()
    balancer = TcpBalancer(nodes.addresses)
    port = await balancer.start()
    clients, reconnects = 20, 8

    try:
        reports = await run_fleet(nodes, port, tunnel_client, keys, clients=clients, reconnects=reconnects,
                                  during=lambda progress: crash_redis(redis_server, progress))
    finally:
        await balancer.close()
        nodes.stop_all()
        target.close()
    print("tunnel fleet, Redis crash:", summary(reports))
    assert len(reports) == clients
    assert_nothing_lost(reports, reconnects)
    assert sum(r.failed_connects for r in reports) > 0  # the outage was felt, and ridden out
    assert max(record_nonces.values()) == 1


async def test_quic_fleet_loses_nothing_when_a_node_dies_mid_commit(tmp_path, redis_server, record_quic_secrets
                                                                    ) -> None:
    keys = FleetKeys.generate()
    nodes = FleetNodes(tmp_path, "quic", redis_url=redis_server.url, keyring=keyring(tmp_path), keys=keys)
    nodes.start_all(die={1: 40})
    balancer = UdpBalancer(nodes.addresses)
    port = await balancer.start()

    try:
        reports = await run_fleet(nodes, port, quic_client, keys, clients=CLIENTS, reconnects=RECONNECTS,
                                  during=lambda progress: crash_redis(redis_server, progress))
    finally:
        balancer.close()
        nodes.stop_all()
    print("QUIC fleet:", summary(reports), "picks", balancer.picks)
    assert nodes.restarts == 1
    assert_nothing_lost(reports, RECONNECTS)
    assert sum(r.failed_connects for r in reports) > 0  # the Redis outage was felt, and ridden out
    assert min(balancer.picks) > 0.2 * sum(balancer.picks)
    shared = [secret for secret, users in record_quic_secrets.items() if len(users) > 1]
    assert record_quic_secrets and not shared, "a QUIC traffic secret served two connections"
