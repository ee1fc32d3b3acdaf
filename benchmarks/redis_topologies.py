"""Redis as operators run it, on loopback: a primary with a replica and three Sentinels, and a Redis Cluster.

For the failover test (tests/test_fleet_failover.py), the Cluster test
(tests/test_redis_cluster.py) and ``bench_fleet``, which measures resumption
and rekey through each next to a single Redis.  Every process is a real
``redis-server`` with its own folder; each topology starts its processes,
waits until they can serve, and kills them all on :meth:`stop`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from mlstls.testing import free_port

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
SENTINEL_SERVICE = "mls"


class RedisNode:
    """One redis-server process (a data node, a Sentinel or a Cluster node) with its own folder and arguments."""

    def __init__(self, binary: str, folder: Path, *args: str) -> None:
        self.binary, self.folder, self.args = binary, folder, args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([self.binary, *self.args, "--port", str(self.port), "--bind", HOST,
                                         "--dir", str(self.folder), "--logfile", str(self.folder / "log"), *extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL (a crash): only what is in its AOF survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=HOST, port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + READY_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {READY_TIMEOUT:g} s")
        time.sleep(0.05)


class SentinelRedis:
    """A primary, one replica and three Sentinels (quorum 2); ``url`` is the store URL through the Sentinels.

    ``down-after-milliseconds`` is 1500: a busy machine stalls a process for a few hundred milliseconds, and
    Sentinels that took that for a failure failed a new primary back over to the old one, restarted and not yet
    resynchronised (docs/fleet.md, "A flapping Sentinel").
    """

    def __init__(self, root: Path, binary: str = "redis-server") -> None:
        data = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
        self.primary = RedisNode(binary, root / "primary", *data)
        self.replica = RedisNode(binary, root / "replica", *data)
        self.sentinels = [RedisNode(binary, root / f"sentinel{i}") for i in range(3)]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"{HOST}:{n.port}" for n in self.sentinels) + f"/{SENTINEL_SERVICE}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start("--replicaof", HOST, str(self.primary.port))
        for node in self.sentinels:
            node.folder.mkdir(parents=True, exist_ok=True)
            config = node.folder / "sentinel.conf"
            config.write_text(f"sentinel monitor {SENTINEL_SERVICE} {HOST} {self.primary.port} 2\n"
                              f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1500\n"
                              f"sentinel failover-timeout {SENTINEL_SERVICE} 2000\n"
                              f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n")
            node.args = (str(config), "--sentinel")
            node.start()
        _until(self.ready, "the Sentinels know the replica and each other")

    def ready(self) -> bool:
        """Every Sentinel knows the replica and the two other Sentinels (learnt from the primary's INFO and
        hello messages, every few seconds): only then can a failover happen."""
        import redis

        try:
            for node in self.sentinels:
                state: Any = redis.Redis(port=node.port, socket_timeout=1).sentinel_master(SENTINEL_SERVICE)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
        except (redis.RedisError, KeyError):
            return False
        return True

    def primary_port(self, sentinel: int = 0) -> int:
        """The primary's port as Sentinel ``sentinel`` sees it."""
        import redis

        address: Any = redis.Redis(port=self.sentinels[sentinel].port,
                                   socket_timeout=1).sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        _, port = address
        return int(port)

    @staticmethod
    def replica_online(primary_port: int) -> bool:
        """The primary at ``primary_port`` has a replica that finished its synchronisation."""
        import redis

        try:
            info = redis.Redis(port=primary_port, socket_timeout=1).info("replication")
        except redis.RedisError:
            return False
        return any(isinstance(value, dict) and value.get("state") == "online" for key, value in info.items()
                   if key.startswith("slave"))

    def stop(self) -> None:
        for node in (self.primary, self.replica, *self.sentinels):
            node.kill()


class ClusterRedis:
    """A Redis Cluster of ``primaries`` primaries (each with ``replicas`` replicas), made with ``redis-cli``."""

    def __init__(self, root: Path, binary: str = "redis-server", *, primaries: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [RedisNode(binary, root / f"node{i}", "--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf", "--appendonly", "yes", "--appendfsync", "always", "--save", "")
                      for i in range(primaries * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            # an explicit bus port: the default (port + 10000) lies in the ephemeral range, where anything may
            # hold it
            node.start("--cluster-port", str(free_port()))
        _until(lambda: all(node.answers() for node in self.nodes), "the cluster nodes answer")
        created = subprocess.run(["redis-cli", "--cluster", "create", *[f"{HOST}:{n.port}" for n in self.nodes],
                                  "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                 capture_output=True, text=True, timeout=READY_TIMEOUT)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        _until(self.healthy, "the cluster is up")

    def healthy(self) -> bool:
        import redis

        try:
            return all(redis.Redis(port=node.port, socket_timeout=1).cluster("info")["cluster_state"] == "ok"
                       for node in self.nodes if node.process is not None and node.process.poll() is None)
        except (redis.RedisError, KeyError):
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
