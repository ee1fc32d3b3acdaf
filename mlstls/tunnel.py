"""A long-lived secure TCP tunnel over MLS-TLS (the ``mls-tunnel`` command is :mod:`mlstls.cli`).

Every local connection accepted by the client is carried as one stream of a
single MLS-TLS link to the server, which opens the matching connection to the
target.  The link rekeys for post-compromise security on a timer and by
volume, survives a cut TCP connection (the client reconnects and resumes the
MLS group; :mod:`mlstls.link` retransmits exactly what was lost), prints a
status line, and shuts down cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .link import MAX_FRAME_PAYLOAD, Frame, FrameType, ReliableLink
from .streams import MlsTlsWriter, open_connection, start_server

log = logging.getLogger(__name__)

MAX_UNACKED = 32 * 1024 * 1024
"""Pause reading local sockets while this much is unacknowledged on the link."""


@dataclass
class LinkStats:
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.monotonic)


class TunnelLink:
    """One side of the link: streams multiplexed over whatever MLS-TLS connection is current."""

    def __init__(self, *, is_client: bool, target: tuple[str, int] | None = None) -> None:
        self.is_client = is_client
        self.target = target
        self.reliable = ReliableLink()
        self.writer: MlsTlsWriter | None = None
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.next_stream = 1 if is_client else 2
        self.stats = LinkStats()
        self.link_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the MLS-TLS connection underneath --------------------------------------------

    async def attach(self, reader: asyncio.StreamReader, writer: MlsTlsWriter, *, fresh: bool) -> None:
        """Run the link over one connection until it breaks."""
        self.writer = writer
        self._write(self.reliable.connected(fresh=fresh))
        self.link_ready.set()
        try:
            while data := await reader.read(1 << 18):
                self.stats.bytes_in += len(data)
                frames, reply = self.reliable.feed(data)
                self._write(reply)
                for frame in frames:
                    await self._dispatch(frame)
                self._update_space()
        except (ConnectionError, MLSError) as exc:
            log.info("link connection ended: %s", exc)
        finally:
            self.link_ready.clear()
            self.reliable.disconnected()
            self.writer = None
            with contextlib.suppress(Exception):
                writer.close()

    def _write(self, data: bytes) -> None:
        if data and self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)
            self.stats.bytes_out += len(data)

    def _send(self, frame: Frame) -> None:
        self._write(self.reliable.send(frame))
        self._update_space()

    def _update_space(self) -> None:
        if self.reliable.unacked < MAX_UNACKED:
            self._space.set()
        else:
            self._space.clear()

    # -- streams ------------------------------------------------------------------------

    async def _dispatch(self, frame: Frame) -> None:
        if frame.kind == FrameType.OPEN:
            await self._open_target(frame.stream)
        elif frame.kind == FrameType.DATA:
            local = self.streams.get(frame.stream)
            if local is not None:
                local.write(frame.payload)
                await local.drain()
        elif frame.kind == FrameType.CLOSE:
            local = self.streams.pop(frame.stream, None)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.write_eof() if local.can_write_eof() else local.close()

    async def _open_target(self, stream: int) -> None:
        assert self.target is not None, "only the server side opens target connections"
        try:
            reader, writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("cannot reach target %s:%d: %s", *self.target, exc)
            self._send(Frame(FrameType.CLOSE, stream))
            return
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer))

    def open_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client side: a new local connection becomes a stream."""
        stream = self.next_stream
        self.next_stream += 2
        self._send(Frame(FrameType.OPEN, stream))
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer))

    async def _pump(self, stream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(MAX_FRAME_PAYLOAD):
                await self._space.wait()
                self._send(Frame(FrameType.DATA, stream, data))
                if self.writer is not None:
                    with contextlib.suppress(ConnectionError):
                        await self.writer.drain()
        except ConnectionError:
            pass
        self._send(Frame(FrameType.CLOSE, stream))

    def _track(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self.streams.values():
            writer.close()
        if self.writer is not None:
            self.writer.close()

    def status(self) -> str:
        epoch = self.writer.epoch if self.writer is not None else None
        session = self.writer.connection.session if self.writer is not None else None
        last = self.writer.connection.last_rekey if self.writer is not None else None
        age = f"{asyncio.get_running_loop().time() - last:.0f}s ago" if last is not None else "-"
        state = "up" if self.link_ready.is_set() else "reconnecting"
        return (f"link {state} epoch {epoch} last rekey {age} | in {self.stats.bytes_in} B out "
                f"{self.stats.bytes_out} B | streams {len(self.streams)} | unacked {self.reliable.unacked} B "
                f"| reconnects {self.stats.reconnects}" + (f" | {session.state.value}" if session else ""))


# -- the two ends --------------------------------------------------------------------------

class TunnelServer:
    """Accept MLS-TLS links and forward their streams to ``target``."""

    def __init__(self, configuration: MlsTlsConfiguration, target: tuple[str, int]) -> None:
        self.configuration = configuration
        self.target = target
        self.links: dict[bytes, TunnelLink] = {}
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await start_server(self._accept, host, port, configuration=self.configuration)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        session = writer.connection.session
        assert session is not None and session.group_id is not None
        link = self.links.get(session.group_id)
        fresh = link is None
        if link is None:
            link = self.links[session.group_id] = TunnelLink(is_client=False, target=self.target)
        else:
            link.stats.reconnects += 1
        await link.attach(reader, writer, fresh=fresh)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in self.links.values():
            await link.close()


class TunnelClient:
    """Listen locally; carry every accepted connection over one resumable link."""

    def __init__(self, configuration: MlsTlsConfiguration, remote: tuple[str, int], *,
                 retry_delay: float = 0.5) -> None:
        self.configuration = configuration
        self.remote = remote
        self.retry_delay = retry_delay
        self.link = TunnelLink(is_client=True)
        self.group_id: bytes | None = configuration.resume_group_id
        self.local: asyncio.Server | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        self._runner = asyncio.get_running_loop().create_task(self._keep_linked())
        await asyncio.wait_for(self.link.link_ready.wait(), 30)
        self.local = await asyncio.start_server(self._local, host, port)
        return self.local.sockets[0].getsockname()[1]

    def _local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.link.open_local(reader, writer)

    async def _keep_linked(self) -> None:
        first = True
        while not self._stopping:
            config = dataclasses.replace(self.configuration, resume_group_id=self.group_id)
            try:
                reader, writer = await open_connection(*self.remote, configuration=config)
            except (OSError, MLSError, TimeoutError) as exc:
                log.info("cannot reach the tunnel server: %s; retrying", exc)
                await asyncio.sleep(self.retry_delay)
                continue
            session = writer.connection.session
            assert session is not None
            self.group_id = session.group_id
            if not first:
                self.link.stats.reconnects += 1
            await self.link.attach(reader, writer, fresh=first)
            first = False
            if not self._stopping:
                await asyncio.sleep(self.retry_delay)

    def cut(self) -> None:
        """Abort the current TCP connection (tests and operators: force a reconnect)."""
        if self.link.writer is not None and self.link.writer.transport is not None:
            self.link.writer.transport.abort()

    async def close(self) -> None:
        self._stopping = True
        if self.local is not None:
            self.local.close()
        await self.link.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
