"""Cost of one rekey on each side, and throughput over time while rekeying at a fixed interval."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

from mls2p import ProfileConfig, RekeyPolicy, SendMessage, TwoPartySession
from mls2p.testing import config


def profile(name: bytes, rekey: RekeyPolicy | None = None) -> ProfileConfig:
    """A profile whose peer is any key made here (both ends of every experiment pin each other)."""
    return config(name, rekey=rekey or RekeyPolicy())


@dataclass
class SideCost:
    committer_ms: float
    replier_ms: float
    wire_bytes: int
    messages: int = 2
    round_trips: float = 1.0


def mls_rekey_cost(rounds: int = 50) -> SideCost:
    """CPU of each side for one ConnectionUpdate + EpochKeyUpdate (median), and its bytes."""
    alice, hello = TwoPartySession.initiator(profile(b"a"))
    bob = TwoPartySession.responder(profile(b"b"))
    # initiator() and update() return the SendMessage of their profile message first
    alice.receive(next(a for a in bob.receive(cast(SendMessage, hello[0]).data) if isinstance(a, SendMessage)).data)
    committer, replier, size = [], [], 0
    for _ in range(rounds):
        t0 = time.process_time()
        update = alice.update()
        t1 = time.process_time()
        reply = bob.receive(cast(SendMessage, update[0]).data)
        t2 = time.process_time()
        alice.receive(next(a for a in reply if isinstance(a, SendMessage)).data)
        t3 = time.process_time()
        committer.append((t1 - t0) + (t3 - t2))
        replier.append(t2 - t1)
        size = len(cast(SendMessage, update[0]).data) + sum(len(a.data) for a in reply if isinstance(a, SendMessage))
    committer.sort()
    replier.sort()
    return SideCost(1000 * committer[len(committer) // 2], 1000 * replier[len(replier) // 2], size)


@dataclass
class Series:
    label: str
    times: list[float] = field(default_factory=list)
    megabytes_per_second: list[float] = field(default_factory=list)
    epochs: int = 0
    longest_gap: float = 0.0  # the longest pause in delivery (a stall)


async def throughput_over_time(rekey_seconds: float | None, duration: float, bucket: float = 0.1) -> Series:
    """Push data through a real mlstls connection; sample the receiver's rate every ``bucket`` seconds."""
    from mlstls import MlsTlsConfiguration, MlsTlsWriter, open_connection, start_server

    arrivals: list[tuple[float, int]] = []

    async def sink(reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        while data := await reader.read(1 << 20):
            arrivals.append((time.perf_counter(), len(data)))

    server = await start_server(sink, "127.0.0.1", 0, configuration=MlsTlsConfiguration(profile(b"s"),
                                                                                         is_client=False))
    port = server.sockets[0].getsockname()[1]
    policy = RekeyPolicy(max_seconds=rekey_seconds) if rekey_seconds else RekeyPolicy()
    _, writer = await open_connection("127.0.0.1", port, configuration=MlsTlsConfiguration(profile(b"c", policy)))
    chunk = bytes(64 * 1024)
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    epochs = writer.epoch or 0
    writer.close()
    await asyncio.sleep(0.2)
    server.close()
    label = f"rekey every {rekey_seconds:g} s" if rekey_seconds else "no rekey"
    series = Series(label, epochs=epochs - 1)
    buckets: dict[int, int] = {}
    previous = started
    for when, size in arrivals:
        buckets[int((when - started) / bucket)] = buckets.get(int((when - started) / bucket), 0) + size
        series.longest_gap = max(series.longest_gap, when - previous)
        previous = when
    for index in range(int(duration / bucket)):
        series.times.append(index * bucket)
        series.megabytes_per_second.append(buckets.get(index, 0) / bucket / (1 << 20))
    return series
