"""Where the thief listens: loopback relays that forward traffic and keep a copy with arrival times."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

TO_SERVER, TO_CLIENT = "c2s", "s2c"
SETTLE = 0.03
"""Seconds a sender waits before a theft or a rekey, so the relay has captured (and timed) every earlier byte:
records are then split into "before" and "after" by their arrival times exactly."""


@dataclass
class Capture:
    """Every byte one TCP connection carried, per direction, with arrival times."""

    connection: int
    chunks: dict[str, list[tuple[float, bytes]]] = field(default_factory=lambda: {TO_SERVER: [], TO_CLIENT: []})

    def records(self, direction: str) -> list[tuple[float, bytes, bytes]]:
        """(arrival time, header, body) of every TLS record sent in ``direction``, in order."""
        stream = b"".join(chunk for _, chunk in self.chunks[direction])
        ends, total = [], 0
        for when, chunk in self.chunks[direction]:
            total += len(chunk)
            ends.append((total, when))
        out, position = [], 0
        while position + 5 <= len(stream):
            end = position + 5 + int.from_bytes(stream[position + 3 : position + 5], "big")
            if end > len(stream):
                break
            when = next(t for size, t in ends if size >= end)
            out.append((when, stream[position : position + 5], stream[position + 5 : end]))
            position = end
        return out

    def bytes_sent(self) -> int:
        return sum(len(chunk) for direction in self.chunks.values() for _, chunk in direction)


class TcpRelay:
    """Forwards each accepted connection to ``target`` and captures both directions."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.captures: list[Capture] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        capture = Capture(len(self.captures))
        self.captures.append(capture)
        server_reader, server_writer = await asyncio.open_connection(*self.target)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
            try:
                while data := await reader.read(1 << 16):
                    capture.chunks[direction].append((time.perf_counter(), data))
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, TO_SERVER),
                             pipe(server_reader, client_writer, TO_CLIENT))


class UdpRelay(asyncio.DatagramProtocol):
    """Forwards client <-> server datagrams and keeps the client's, with their arrival times."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.captured: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        self.captured.append((time.perf_counter(), data))
        self.transport.sendto(data, self.server)
