"""A long-lived secure TCP tunnel over MLS-TLS (the ``mls-tunnel`` command is :mod:`mlstls.cli`).

Every local connection accepted by the client is carried as one stream of a
single MLS-TLS link to the server, which opens the matching connection to the
target.  The link rekeys for post-compromise security on a timer and by
volume.  It survives the events of a long life:

* a cut TCP connection: the client reconnects (exponential backoff with
  jitter, capped), resumes the MLS group, and :mod:`mlstls.link` retransmits
  exactly what was lost;
* a restart of either end (or both) with the same state folder: the client
  resumes the stored group where both stores allow it and otherwise runs a
  fresh authenticated handshake (one log line says which); the link detects
  the restart and resets: open streams are closed, new ones work;
* a refused identity: the client stops at once with the reason (or keeps
  retrying, if told to), and the server logs refusals at most once a second;
* a target the server cannot reach: the server closes the stream with a CLOSE
  frame whose payload says why (an ordinary CLOSE has none), and the client
  logs that reason and closes the local connection (docs/tunnel.md, "Streams,
  and a target that cannot be reached").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

from mls2p.errors import AlertDescription
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .errors import HandshakeError, TunnelError
from .link import MAX_FRAME_PAYLOAD, Frame, FrameType, ReliableLink
from .streams import MlsTlsWriter, open_connection, start_server

log = logging.getLogger(__name__)

MAX_UNACKED = 32 * 1024 * 1024
"""Pause reading local sockets while this much is unacknowledged on the link."""


TEMPORARY_ALERTS = frozenset({AlertDescription.INTERNAL_ERROR, AlertDescription.CLOSE_NOTIFY})
"""Ends of a resumption that say nothing against the session (the server's store was unreachable, another of
its nodes continued the session at that moment, the connection was lost): retried for ``resume_give_up``."""

MAX_CLOSE_REASON = 300
"""Bytes of a failed stream's reason carried in its CLOSE frame (the peer's log line stays one short line)."""


TUNNEL_ALERTS = frozenset({AlertDescription.BAD_CERTIFICATE, AlertDescription.CERTIFICATE_REVOKED,
                           AlertDescription.DECRYPT_ERROR})
"""Alerts that mean "your identity was refused": retrying cannot help without a change of configuration."""


@dataclass
class LinkStats:
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    resumptions: int = 0
    fresh_handshakes: int = 0
    rekeys: int = 0
    resets: int = 0
    last_error: str = ""
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
        self._epoch_seen: int | None = None
        self._closed_by_peer: set[int] = set()  # streams whose CLOSE arrived while ours had not ended
        self._closed_by_us: set[int] = set()  # streams we sent CLOSE for while the peer's had not ended

    # -- the MLS-TLS connection underneath --------------------------------------------

    async def attach(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        """Run the link over one connection until it breaks (a newer connection replaces an older one)."""
        previous = self.writer
        if previous is not None and previous.transport is not None:
            previous.transport.abort()  # a half-open older connection: the newer one wins
        self.writer = writer
        self._epoch_seen = writer.epoch
        self._write(self.reliable.connected())
        try:
            while data := await reader.read(1 << 18):
                self.stats.bytes_in += len(data)
                frames, reply = self.reliable.feed(data)
                if self.reliable.synchronized and not self.link_ready.is_set() and self.writer is writer:
                    self.link_ready.set()
                self._write(reply)
                for frame in frames:
                    await self._dispatch(frame)
                self._update_space()
        except (ConnectionError, MLSError) as exc:
            self.stats.last_error = str(exc)
            log.info("link connection ended: %s", exc)
        finally:
            if self.writer is writer:
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
        if frame.kind == FrameType.RESET:
            self._reset_streams()
        elif frame.kind == FrameType.OPEN:
            await self._open_target(frame.stream)
        elif frame.kind == FrameType.DATA:
            local = self.streams.get(frame.stream)
            if local is not None:
                local.write(frame.payload)
                await local.drain()
        elif frame.kind == FrameType.CLOSE and frame.payload:
            self._refused_stream(frame.stream, frame.payload)
        elif frame.kind == FrameType.CLOSE:
            # The peer's side ended: half-close ours.  The stream is gone once both sides have ended
            # (our CLOSE goes out when our local side ends; see _pump).
            local = self.streams.get(frame.stream)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.write_eof() if local.can_write_eof() else local.close()
                self._ended(frame.stream, self._closed_by_peer, self._closed_by_us)

    def _reset_streams(self) -> None:
        """The peer restarted: every stream of the old link is gone."""
        self.stats.resets += 1
        log.warning("the tunnel peer restarted: closing %d open stream(s); new streams work", len(self.streams))
        for task in list(self._tasks):
            task.cancel()
        for local in self.streams.values():
            with contextlib.suppress(Exception):
                local.transport.abort()  # an abrupt close tells the local application something broke
        self.streams.clear()
        self._closed_by_peer.clear()
        self._closed_by_us.clear()

    async def _open_target(self, stream: int) -> None:
        assert self.target is not None, "only the server side opens target connections"
        try:
            reader, writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("cannot reach target %s:%d: %s", *self.target, exc)
            # The client's user would see only a closed connection: tell them why.  Only an authenticated
            # peer (one whose key we trust) ever gets this far, so the target's address reaches no stranger.
            reason = f"the server could not reach its target {self.target[0]}:{self.target[1]}: {_reason(exc)}"
            self._send(Frame(FrameType.CLOSE, stream, reason.encode()[:MAX_CLOSE_REASON]))
            return
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer))

    def _refused_stream(self, stream: int, payload: bytes) -> None:
        """The peer could not open ``stream`` (a CLOSE with a reason): log why, and close the local connection.

        The stream never existed on the peer's side, so nothing more is sent for it, and the local connection
        is closed both ways at once (not half-closed as for an ordinary CLOSE: nothing will ever answer it).
        """
        text = payload[:MAX_CLOSE_REASON].decode("utf-8", "replace")
        reason = "".join(char if char.isprintable() else "?" for char in text)  # one log line, whatever it holds
        log.warning("a tunnelled connection was closed: %s", reason)
        self._closed_by_peer.discard(stream)
        self._closed_by_us.discard(stream)
        local = self.streams.pop(stream, None)
        if local is not None:
            with contextlib.suppress(Exception):
                local.transport.abort()

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
        if stream in self.streams:
            self._send(Frame(FrameType.CLOSE, stream))
            self._ended(stream, self._closed_by_us, self._closed_by_peer)

    def _ended(self, stream: int, side: set[int], other: set[int]) -> None:
        """One side of ``stream`` ended; when the other had too, forget the stream and close the socket."""
        if stream not in other:
            side.add(stream)
            return
        other.discard(stream)
        local = self.streams.pop(stream, None)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()

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

    def status(self, state: str) -> str:
        """One status line: state, epoch, rekeys, bytes, streams, reconnects, last error."""
        epoch = self.writer.epoch if self.writer is not None else None
        if epoch is not None and self._epoch_seen is not None and epoch > self._epoch_seen:
            self.stats.rekeys += epoch - self._epoch_seen
        self._epoch_seen = epoch if epoch is not None else self._epoch_seen
        last = self.writer.connection.last_rekey if self.writer is not None else None
        age = f"{asyncio.get_running_loop().time() - last:.0f}s ago" if last is not None else "-"
        line = (f"{state} | epoch {epoch} rekeys {self.stats.rekeys} last {age} | in {self.stats.bytes_in} B "
                f"out {self.stats.bytes_out} B | streams {len(self.streams)} | reconnects {self.stats.reconnects}")
        return line + (f" | last error: {self.stats.last_error}" if self.stats.last_error else "")


def _reason(error: OSError) -> str:
    """What went wrong, in the system's words (asyncio's "Connect call failed ..." says only where)."""
    if error.errno and not isinstance(error, socket.gaierror):  # getaddrinfo's codes are not errno values
        return os.strerror(error.errno).lower()
    return error.strerror or str(error) or type(error).__name__


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
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        session = writer.connection.session
        assert session is not None and session.group_id is not None
        link = self.links.get(session.group_id)
        if link is None:
            link = self.links[session.group_id] = TunnelLink(is_client=False, target=self.target)
        else:
            link.stats.reconnects += 1
        await link.attach(reader, writer)

    def status(self) -> list[str]:
        return [link.status("up" if link.link_ready.is_set() else "waiting") for link in self.links.values()]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in self.links.values():
            await link.close()


class TunnelClient:
    """Listen locally; carry every accepted connection over one resumable link.

    Reconnects with exponential backoff (``retry_delay`` doubling to
    ``max_retry_delay``, with jitter).  A refused identity stops the client
    (:attr:`refused` is set) unless ``retry_refused``.  A server that keeps
    failing our resumption for reasons of its own (internal_error: its store is
    down) is retried for ``resume_give_up`` seconds, one that refuses it
    ``resume_refusals`` times in a row; then the client runs a fresh
    authenticated handshake, so a lasting server-side fault cannot lock it out.
    A failed resumption never deletes the stored session: whatever ended it (a
    plaintext alert anyone on the path can forge, a store that is down) is not
    authenticated, and the session is forgotten only after a new one is
    confirmed.
    """

    def __init__(self, configuration: MlsTlsConfiguration, remote: tuple[str, int], *,
                 retry_delay: float = 0.25, max_retry_delay: float = 2.0, retry_refused: bool = False,
                 resume_give_up: float = 60.0, resume_refusals: int = 2) -> None:
        self.configuration = configuration
        self.remote = remote
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.retry_refused = retry_refused
        self.resume_give_up = resume_give_up
        self.resume_refusals = resume_refusals
        self.link = TunnelLink(is_client=True)
        self.group_id: bytes | None = configuration.resume_group_id
        self.local: asyncio.Server | None = None
        self.state = "connecting"
        self.refused: str | None = None
        self.failed_here = False
        """The last attempt failed on this side (our store, say), not on the way to the server or in it."""
        self.stopped = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._random = random.Random()

    async def start(self, host: str, port: int, *, connect_timeout: float | None = None) -> int:
        """Connect (or resume), then listen on ``host``:``port``; raises TunnelError if that cannot happen."""
        self._runner = asyncio.get_running_loop().create_task(self._keep_linked())
        ready = asyncio.ensure_future(self.link.link_ready.wait())
        stopped = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait({ready, stopped}, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (ready, stopped):
            waiter.cancel()
        if not self.link.link_ready.is_set():
            await self.close()
            if self.refused is not None:
                raise TunnelError(self.refused)
            if self.failed_here:
                raise TunnelError(f"the connection to the tunnel server at {self.remote[0]}:{self.remote[1]} "
                                  f"failed on this side: {self.link.stats.last_error}")
            raise TunnelError(f"cannot reach the tunnel server at {self.remote[0]}:{self.remote[1]} "
                              f"({self.link.stats.last_error or 'no answer'}); is it running and reachable?")
        self.local = await asyncio.start_server(self._local, host, port)
        return int(self.local.sockets[0].getsockname()[1])

    async def _local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.link.link_ready.wait()  # streams start on a synchronized link, never into a reset
        self.link.open_local(reader, writer)

    async def _keep_linked(self) -> None:
        failures = 0
        resume_failed_since: float | None = None  # when our resumptions began failing
        refusals = 0  # resumptions refused in a row (not counting a server's own temporary failures)
        while not self._stopping:
            resuming = self.group_id is not None
            config = dataclasses.replace(self.configuration, resume_group_id=self.group_id)
            self.state = "resuming" if resuming else "connecting"
            try:
                reader, writer = await open_connection(*self.remote, configuration=config)
            except HandshakeError as exc:
                failures += 1
                self.link.stats.failed_connects += 1
                self.link.stats.last_error = str(exc)
                self.failed_here = not exc.by_peer and exc.alert == AlertDescription.INTERNAL_ERROR
                if exc.alert in TUNNEL_ALERTS and not self.retry_refused and (not resuming or not exc.by_peer):
                    # We refused the server (our own, authenticated decision), or the server refused a
                    # fresh handshake: retrying cannot help without a change of configuration.
                    who = "the server refused us" if exc.by_peer else "we refused the server"
                    self.refused = f"{who}: {exc}"
                    self.state = "refused"
                    self.stopped.set()
                    return
                if resuming:
                    now = asyncio.get_running_loop().time()
                    resume_failed_since = now if resume_failed_since is None else resume_failed_since
                    refusals += exc.alert not in TEMPORARY_ALERTS
                    unreadable = not exc.by_peer and exc.alert == AlertDescription.HANDSHAKE_FAILURE
                    if unreadable or refusals >= self.resume_refusals or (
                            now - resume_failed_since >= self.resume_give_up):
                        # Our stored state cannot be used, or the server keeps refusing it: run a fresh
                        # authenticated handshake.  The stored session is forgotten only once the new one
                        # is confirmed (_settle), never on this failure: a refusal in plaintext is not
                        # authenticated, and one forged alert must not cost the session.
                        resume_failed_since, refusals = None, 0
                        log.warning("cannot resume the stored session (%s); running a fresh authenticated "
                                    "handshake", exc)
                        self.group_id = None
                        continue
                    log.warning("resumption failed (%s); keeping the stored session, retrying with backoff", exc)
            except (OSError, MLSError, TimeoutError) as exc:
                failures += 1
                self.link.stats.failed_connects += 1
                self.link.stats.last_error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
                self.failed_here = False
                if failures == 1:  # before the first connection, start() reports it instead
                    was_up = self.link.stats.resumptions + self.link.stats.fresh_handshakes > 0
                    (log.warning if was_up else log.info)(
                        "cannot reach the tunnel server at %s:%d: %s; retrying with backoff", *self.remote, exc)
            else:
                failures = refusals = 0
                resume_failed_since = None
                session = writer.connection.session
                assert session is not None
                self._settle(session.group_id, resumed=resuming)
                await self.link.attach(reader, writer)
            if not self._stopping:
                self.state = "reconnecting"
                await asyncio.sleep(self._backoff(failures))

    def _settle(self, group_id: bytes | None, *, resumed: bool) -> None:
        if resumed:
            self.link.stats.resumptions += 1
            log.info("resumed the stored MLS session (group %s)", group_id.hex() if group_id else "?")
        else:
            self.link.stats.fresh_handshakes += 1
            log.info("new MLS session (group %s) after a fresh authenticated handshake",
                     group_id.hex() if group_id else "?")
        if self.link.stats.resumptions + self.link.stats.fresh_handshakes > 1:
            self.link.stats.reconnects += 1
        self.group_id = group_id
        self.state = "resumed" if resumed else "connected"
        self.link.stats.last_error = ""
        store = self.configuration.store
        if store is not None:  # one session only: forget any other the store still holds
            for other in store.group_ids():
                if other != group_id:
                    self._forget_session(other)

    def _forget_session(self, group_id: bytes | None) -> None:
        store = self.configuration.store
        if store is None or group_id is None:
            return
        with contextlib.suppress(MLSError):
            store.delete(group_id, replaces=store.load(group_id))

    def _backoff(self, failures: int) -> float:
        """Exponential, capped, with jitter in [0.5, 1.5): reconnect storms spread out."""
        base = min(self.max_retry_delay, self.retry_delay * (2 ** min(failures, 16)))
        return base * (0.5 + self._random.random())

    def cut(self) -> None:
        """Abort the current TCP connection (tests and operators: force a reconnect)."""
        if self.link.writer is not None and self.link.writer.transport is not None:
            self.link.writer.transport.abort()

    def status(self) -> list[str]:
        return [self.link.status(self.state)]

    async def close(self) -> None:
        self._stopping = True
        if self.local is not None:
            self.local.close()
        await self.link.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
