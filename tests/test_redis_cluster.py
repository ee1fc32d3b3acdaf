"""The session store on a real Redis Cluster (three primaries on loopback, made with redis-cli --cluster create).

Every session is one key in one hash slot, so the fenced scripts run on the slot's node: the store contract
(save, fencing, load, delete, listing) holds across nodes, and sessions spread over all three.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.redis_topologies import ClusterRedis
from mls2p.errors import ConfigurationError, StaleStateError
from mls2p.redis_store import RedisSessionStore
from mls2p.sealing import SealingKey, StateSealer

from .redis_server import require_redis

SEALER = StateSealer([SealingKey("k1", bytes(range(32)))])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    redis = ClusterRedis(tmp_path_factory.mktemp("cluster"), require_redis())
    try:
        redis.start()
        yield [node.port for node in redis.nodes]
    finally:
        redis.stop()


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
