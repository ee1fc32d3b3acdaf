"""What sharing sessions in Redis costs: round trips per operation, and resumption and rekey latency.

    python -m benchmarks.bench_fleet [--rounds N] [--json FILE]

Two parts, both against a redis-server this benchmark starts itself:

* Redis round trips a server node makes for phase 1, a resumption, a rekey
  the client starts and one the server starts, counted by the store (exact,
  not timed);
* the time a client takes to resume (connect to established) and then to
  rekey (ConnectionUpdate to switched epoch), through real ``mls-tunnel
  server`` processes on loopback.  Baseline, in the same run: one node with
  its sessions in a local folder.  Measured: 3 nodes sharing Redis behind a
  round-robin balancer, so every resumption lands on another node than the
  last, with the sessions in one Redis, in Redis through Sentinel (a primary,
  a replica, three Sentinels; without and with WAIT for the replica), and in
  a three-primary Redis Cluster.  Rounds alternate between the modes; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.fleet import FleetKeys, FleetNodes, RedisServer, TcpBalancer, echo_server, write_private
from benchmarks.redis_topologies import ClusterRedis, SentinelRedis
from benchmarks.report import Figure, versions, write_json
from mls2p.command import run_command
from mls2p.errors import ConfigurationError
from mls2p.redis_store import RedisSessionStore
from mls2p.sealing import load_keyring, new_key_line
from mls2p.store import MemorySessionStore
from mls2p.testing import config
from mlstls.config import MlsTlsConfiguration
from mlstls.connection import MlsTlsConnection
from mlstls.streams import open_connection
from mlstls.testing import exchange


def round_trips(store: RedisSessionStore) -> dict[str, int]:
    """Redis commands one server node sends per operation (in memory, sans-I/O connections)."""
    client_profile, server_profile = config(b"client"), config(b"server")
    client_store = MemorySessionStore()
    counts: dict[str, int] = {}

    def measured(name: str, client: MlsTlsConnection, server: MlsTlsConnection,
                 start: MlsTlsConnection | None = None) -> None:
        before = store.round_trips
        if start is client and not client.established:
            client.connect()
        elif start is not None:
            start.rekey()
        exchange(client, server)
        counts[name] = store.round_trips - before

    client = MlsTlsConnection(MlsTlsConfiguration(client_profile, True, client_store))
    server = MlsTlsConnection(MlsTlsConfiguration(server_profile, False, store))
    measured("phase1", client, server, client)
    assert client.session is not None
    measured("client_rekey", client, server, client)
    measured("server_rekey", client, server, server)
    client = MlsTlsConnection(MlsTlsConfiguration(client_profile, True, client_store,
                                                  resume_group_id=client.session.group_id))
    server = MlsTlsConnection(MlsTlsConfiguration(server_profile, False, store))
    measured("resumption", client, server, client)
    if not (client.established and server.established):
        raise RuntimeError("the round-trip run did not complete")
    return counts


async def resume_and_rekey(keys: FleetKeys, address: tuple[str, int], store: MemorySessionStore
                           ) -> tuple[float, float]:
    """(seconds to resume, seconds to rekey) of one connection; the first call runs phase 1."""
    stored = store.group_ids()
    configuration = MlsTlsConfiguration(keys.client_profile(), True, store,
                                        resume_group_id=stored[0] if stored else None)
    started = time.perf_counter()
    _, writer = await open_connection(*address, configuration=configuration)
    resumed = time.perf_counter() - started
    epoch = writer.epoch
    assert epoch is not None
    started = time.perf_counter()
    writer.rekey()
    while writer.epoch == epoch:
        await asyncio.sleep(0.0005)
    rekeyed = time.perf_counter() - started
    writer.close()
    return resumed, rekeyed


TOPOLOGIES = {
    "local": "one node, folder store",
    "fleet": "3 nodes, one Redis",
    "sentinel": "3 nodes, Redis via Sentinel",
    "sentinel_wait": "3 nodes, Sentinel, WAIT 1 replica",
    "cluster": "3 nodes, Redis Cluster (3 primaries)",
}
"""Where the sessions are, per mode (every fleet behind its own round-robin balancer: another node each time)."""


async def report(args: argparse.Namespace) -> int:
    keys = FleetKeys.generate()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as name:
        root = Path(name)
        redis = RedisServer(root / "redis")
        sentinel = SentinelRedis(root / "sentinel")
        cluster = ClusterRedis(root / "cluster")
        target, target_address = await echo_server()
        keyring = write_private(root / "store.keys", new_key_line("bench") + "\n")
        urls = {"fleet": redis.url, "sentinel": sentinel.url, "sentinel_wait": sentinel.url, "cluster": cluster.url}
        nodes = {mode: FleetNodes(root / mode, "tunnel", redis_url=urls.get(mode), keyring=keyring if mode in urls
                                  else None, keys=keys, target=target_address, count=1 if mode == "local" else 3,
                                  store_replicas=1 if mode == "sentinel_wait" else 0)
                 for mode in TOPOLOGIES}
        balancers = {mode: TcpBalancer(fleet.addresses) for mode, fleet in nodes.items() if mode != "local"}
        try:
            try:
                redis.start()
                sentinel.start()
                cluster.start()
            except FileNotFoundError:
                raise ConfigurationError("redis-server is not installed (Debian: apt-get install redis-server)"
                                         ) from None
            trips = round_trips(RedisSessionStore.from_url(redis.url, load_keyring(keyring), prefix="trips"))
            addresses = {"local": nodes["local"].addresses[0]}
            for mode, fleet in nodes.items():
                fleet.start_all()
                if mode in balancers:
                    addresses[mode] = ("127.0.0.1", await balancers[mode].start())
            stores = {mode: MemorySessionStore() for mode in TOPOLOGIES}
            samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in TOPOLOGIES}
            for mode in samples:  # phase 1, not measured
                await resume_and_rekey(keys, addresses[mode], stores[mode])
            for _ in range(args.rounds):
                for mode in samples:
                    samples[mode].append(await resume_and_rekey(keys, addresses[mode], stores[mode]))
        finally:
            for balancer in balancers.values():
                await balancer.close()
            for fleet in nodes.values():
                fleet.stop_all()
            target.close()
            redis.stop()
            sentinel.stop()
            cluster.stop()
    figures: dict[str, Figure] = {"rounds": args.rounds, **versions("redis"), "redis_server_version": _redis_version()}
    for name, count in trips.items():
        figures[f"redis_round_trips_{name}"] = count
    for mode, label in TOPOLOGIES.items():
        figures[f"resume_ms_{mode}"] = 1000 * statistics.median(s[0] for s in samples[mode])
        figures[f"rekey_ms_{mode}"] = 1000 * statistics.median(s[1] for s in samples[mode])
        ratios = ""
        if mode != "local":
            for what in ("resume", "rekey"):
                figures[f"{what}_{mode}_vs_local"] = (float(figures[f"{what}_ms_{mode}"])
                                                      / float(figures[f"{what}_ms_local"]))
            ratios = (f"   (x{figures[f'resume_{mode}_vs_local']:.2f}, x{figures[f'rekey_{mode}_vs_local']:.2f} "
                      "of local)")
        print(f"{label:38} resume {figures[f'resume_ms_{mode}']:7.2f} ms   rekey {figures[f'rekey_ms_{mode}']:7.2f} ms"
              + ratios)
    print("Redis round trips per server operation:", ", ".join(f"{k} {v}" for k, v in trips.items()))
    write_json(args.json, figures)
    return 0


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "not installed"
    return next((word[2:] for word in out.split() if word.startswith("v=")), out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_command(functools.partial(report, args), prog="bench_fleet", verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
