"""The session store on a real Redis Cluster (three primaries on loopback, made with redis-cli --cluster create).

Every session is one key in one hash slot, so the fenced scripts run on the slot's node: the store contract
(save, fencing, load, delete, listing) holds across nodes, and sessions spread over all three.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mls2p.errors import ConfigurationError, StaleStateError
from mls2p.redis_store import RedisSessionStore
from mls2p.sealing import SealingKey, StateSealer
from mlstls.testing import free_port

from .redis_server import require_redis

SEALER = StateSealer([SealingKey("k1", bytes(range(32)))])
GUARD = 60.0


def _answers(port: int) -> bool:
    return subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    binary = require_redis()
    ports = [free_port() for _ in range(3)]
    processes = []
    for port in ports:
        folder: Path = tmp_path_factory.mktemp(f"node{port}")
        processes.append(subprocess.Popen(
            # the bus port too (by default port + 10000: in the ephemeral range, where anything may hold it)
            [binary, "--port", str(port), "--cluster-port", str(free_port()), "--bind", "127.0.0.1", "--dir",
             str(folder), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--appendonly", "no", "--save", "", "--logfile", "log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + GUARD
        while not all(_answers(port) for port in ports):
            assert time.monotonic() < deadline, "redis cluster nodes did not start"
            time.sleep(0.05)
        created = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                 timeout=GUARD)
        assert created.returncode == 0, created.stdout + created.stderr
        while b"cluster_state:ok" not in subprocess.run(["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                                                        capture_output=True).stdout:
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.05)
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_the_store_contract_holds_on_a_cluster(cluster: list[int]) -> None:
    store = RedisSessionStore.from_url(f"redis+cluster://127.0.0.1:{cluster[1]}", SEALER, prefix="cluster-test")
    groups = [bytes([i]) * 16 for i in range(24)]
    for group in groups:
        store.save(group, b"epoch 1 of " + group, replaces=None)
    for group in groups:
        assert store.load(group) == b"epoch 1 of " + group
        with pytest.raises(StaleStateError):
            store.save(group, b"a stale write", replaces=b"not what is stored")
        store.save(group, b"epoch 2", replaces=b"epoch 1 of " + group)
    assert sorted(store.group_ids()) == sorted(groups)  # listed across every node
    nodes_used = {store.client.keyslot(store.key(group)) * 3 // 16384 for group in groups}  # type: ignore[attr-defined]
    assert len(nodes_used) == 3  # the sessions spread over the three primaries
    store.delete(groups[0], replaces=b"epoch 2")
    assert store.load(groups[0]) is None


def test_replica_acknowledgement_is_refused_with_cluster(cluster: list[int]) -> None:
    with pytest.raises(ConfigurationError, match="not supported with Redis Cluster"):
        RedisSessionStore.from_url(f"redis+cluster://127.0.0.1:{cluster[0]}", SEALER, replicas=1)
