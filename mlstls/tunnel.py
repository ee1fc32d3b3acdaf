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
  and a target that cannot be reached");
* a slow or silent reader (a target, or a local application): each stream is
  written by a task of its own from a bounded queue, and a stream whose queue
  fills is paused (flow control per stream), so it holds up nothing else; a
  peer's streams, held data and pending connects are bounded per link
  (:data:`MAX_STREAMS`, :data:`MAX_CONNECTING_HELD`, :data:`MAX_STREAM_QUEUE`,
  :data:`MAX_LINK_QUEUE`, :data:`CONNECT_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from mls2p.errors import AlertDescription
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .errors import HandshakeError, TunnelError
from .link import MAX_FRAME_PAYLOAD, Frame, FrameType, ReliableLink
from .services import DEFAULT_SERVICE, Address, Service, decode_open, encode_open
from .streams import MlsTlsWriter, _RateLimitedLog, open_connection, start_server

log = logging.getLogger(__name__)

MAX_UNACKED = 32 * 1024 * 1024
"""Pause reading local sockets while this much is unacknowledged on the link."""


TEMPORARY_ALERTS = frozenset({AlertDescription.INTERNAL_ERROR, AlertDescription.CLOSE_NOTIFY})
"""Ends of a resumption that say nothing against the session (the server's store was unreachable, another of
its nodes continued the session at that moment, the connection was lost): retried for ``resume_give_up``."""

MAX_CLOSE_REASON = 300
"""Bytes of a failed stream's reason carried in its CLOSE frame (the peer's log line stays one short line)."""

MAX_STREAMS = 256
"""Streams per link, counting those whose target is still being reached: an OPEN beyond is refused."""

CONNECT_TIMEOUT = 10.0
"""Seconds a server gives a target to accept a stream's connection; then the stream is refused."""

MAX_CONNECTING_HELD = 2 << 20
"""Bytes a server holds for a stream whose target is still being reached; beyond, the stream is closed."""

PAUSE_CONNECTING_AT = 64 << 10
"""Bytes held for a stream still connecting at which the peer is asked to pause that stream."""

PAUSE_AT = 2 << 20
"""Bytes waiting for one stream's local connection (or target) at which the peer is asked to pause the stream:
a slow reader holds up its own stream only, never the link."""

RESUME_AT = 1 << 20
"""A paused stream resumes once this little waits for its local connection."""

MAX_STREAM_QUEUE = 64 << 20
"""Bytes one stream may have waiting for its local connection: more than a peer that honours pauses can send
(PAUSE_AT plus a full MAX_UNACKED window in flight), so only a peer that ignores them reaches it; the stream
is then closed, with a reason."""

MAX_LINK_QUEUE = 256 << 20
"""Bytes all streams of a link may have waiting; beyond, the stream whose data crosses it is closed."""

FLOW_STREAM = 0
"""DATA frames on stream 0 (no stream has this id) carry flow control: ``op (u8) | stream id (u32)``.  A peer
of an earlier release drops them (DATA for a stream it does not know), so nothing changes for it."""
FLOW = struct.Struct(">BI")
FLOW_PAUSE = 1
FLOW_RESUME = 2

REFUSAL_LOG_INTERVAL = 1.0
"""Seconds between two "refused a stream" lines of one link (the lines held back are counted in the next)."""

MAX_LOGGED_NAME = 64


TUNNEL_ALERTS = frozenset({AlertDescription.BAD_CERTIFICATE, AlertDescription.CERTIFICATE_REVOKED,
                           AlertDescription.DECRYPT_ERROR})
SETTINGS_ALERTS = frozenset({AlertDescription.HANDSHAKE_FAILURE, AlertDescription.DECODE_ERROR,
                             AlertDescription.ILLEGAL_PARAMETER, AlertDescription.MISSING_EXTENSION,
                             AlertDescription.PROTOCOL_VERSION, AlertDescription.UNEXPECTED_MESSAGE})
"""Alerts that end a fresh handshake when the two ends are set up differently (another --mode, --apq on one end
only, another --apq-suite): the server answers, so "cannot reach" would send the user to the wrong place."""
"""Alerts that mean "your identity was refused": retrying cannot help without a change of configuration."""


class ListenError(OSError):
    """A client service's local address cannot be listened on: the system's error, and which ``service``."""

    def __init__(self, service: Service, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.service = service
        self.error = error


def printable(name: bytes | str | None, limit: int | None = MAX_LOGGED_NAME) -> str:
    """``name`` as one short printable line (a peer chooses its identity: it must not forge log lines or
    terminal output); ``limit`` None keeps its length."""
    if name is None:
        return "?"
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class LinkStats:
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    resumptions: int = 0
    fresh_handshakes: int = 0
    rekeys: int = 0
    last_rekey: float | None = None
    """time.monotonic() when the last rekey took effect; None until the first (the handshake is none)."""
    resets: int = 0
    rekeys_abandoned: int = 0
    """Our rekeys given up because the session store could not take them (the keys stayed; tried later)."""
    commits_deferred: int = 0
    """Times the peer's commit waited because the session store could not take its epoch."""
    epochs_stored_late: int = 0
    """Our confirmed commits whose new epoch the session store took only later (the keys changed on time)."""
    full_commits: int = 0
    """APQ: our FULL commits (the PQ group's epochs we made), on connections that ended."""
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


Resolver = Callable[[str, "bytes | None"], "Service | str"]
"""A server's service lookup: (service name, peer identity) -> the service, or why the stream is refused (for
the server's log: the peer is told the same thing whether the service does not exist or is closed to it)."""


class _Stream:
    """One stream as a link keeps it: what waits for its local connection (or target), and its flow control."""

    def __init__(self) -> None:
        self.queue: deque[bytes | None] = deque()  # DATA to write; None: the peer's side ended (write EOF)
        self.queued = 0
        self.wake = asyncio.Event()
        self.paused = False  # we asked the peer to pause this stream
        self.may_send = asyncio.Event()  # cleared while the peer asks us to pause it
        self.may_send.set()
        self.peer_ended = False  # the peer's CLOSE arrived
        self.discarding = False  # the local connection takes no more: the peer's DATA is dropped
        self.tasks: set[asyncio.Task[None]] = set()


class TunnelLink:
    """One side of the link: streams multiplexed over whatever MLS-TLS connection is current.

    A server's link opens each stream's target through ``resolve`` (the server's service table as it is
    when the OPEN arrives), in a task of its own: a slow target holds up only its own stream.  What arrives
    for a stream is written to its local connection (or target) by a task of its own too, from a queue: a
    connection that reads slowly, or not at all, has its stream paused (the peer stops sending for it) and
    holds up nothing else.
    """

    def __init__(self, *, is_client: bool, resolve: Resolver | None = None) -> None:
        self.is_client = is_client
        self.resolve = resolve
        self.reliable = ReliableLink()
        self.writer: MlsTlsWriter | None = None
        self.peer_identity: bytes | None = None
        self.peer_fingerprint: str | None = None
        self.group_id: bytes | None = None
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.stream_services: dict[int, str] = {}
        self._state: dict[int, _Stream] = {}  # every stream we know, open or being connected
        self._opening: dict[int, deque[bytes | None]] = {}  # streams whose target is being reached: data held
        self._queued = 0  # bytes waiting in every stream's queue
        self.streams_refused = 0
        self.next_stream = 1 if is_client else 2
        self.stats = LinkStats()
        self.link_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._epoch_seen: int | None = None
        self._closed_by_peer: set[int] = set()  # streams whose CLOSE arrived while ours had not ended
        self._closed_by_us: set[int] = set()  # streams we sent CLOSE for while the peer's had not ended
        self._refusals = _RateLimitedLog(REFUSAL_LOG_INTERVAL, log)

    # -- the MLS-TLS connection underneath --------------------------------------------

    async def attach(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        """Run the link over one connection until it breaks (a newer connection replaces an older one)."""
        previous = self.writer
        if previous is not None and previous.transport is not None:
            previous.transport.abort()  # a half-open older connection: the newer one wins
        self.writer = writer
        self._epoch_seen = writer.epoch
        self.peer_identity = writer.get_extra_info("mls_peer_identity")
        self.peer_fingerprint = writer.get_extra_info("mls_peer_fingerprint")
        self._watch_epochs(writer)
        self._write(self.reliable.connected())
        try:
            while data := await reader.read(1 << 18):
                self.stats.bytes_in += len(data)
                self._count_rekeys(writer)
                frames, reply = self.reliable.feed(data)
                if self.reliable.synchronized and not self.link_ready.is_set() and self.writer is writer:
                    self.link_ready.set()
                self._write(reply)
                for frame in frames:
                    self._dispatch(frame)
                self._update_space()
        except (ConnectionError, MLSError) as exc:
            self.stats.last_error = str(exc)
            log.info("link connection ended: %s", exc)
        finally:
            self._count_rekeys(writer)
            abandoned, deferred, late = _put_off_counts(writer)
            self.stats.rekeys_abandoned += abandoned
            self.stats.commits_deferred += deferred
            self.stats.epochs_stored_late += late
            self.stats.full_commits += _full_commits(writer)
            if self.writer is writer:
                self.link_ready.clear()
                self.reliable.disconnected()
                self.writer = None
            with contextlib.suppress(Exception):
                writer.close()

    def _watch_epochs(self, writer: MlsTlsWriter) -> None:
        """Count each rekey when it takes effect (the protocol's epoch hook), not when someone asks."""
        protocol = getattr(writer, "_protocol", None)
        if protocol is not None and getattr(protocol, "_on_epoch", None) is None:
            protocol._on_epoch = lambda epoch: self._count_rekeys(writer, epoch)

    def _count_rekeys(self, writer: MlsTlsWriter, epoch: int | None = None) -> None:
        if writer is not self.writer:
            return
        epoch = writer.epoch if epoch is None else epoch
        if epoch is not None and self._epoch_seen is not None and epoch > self._epoch_seen:
            self.stats.rekeys += epoch - self._epoch_seen
            self.stats.last_rekey = time.monotonic()
        if epoch is not None:
            self._epoch_seen = epoch

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

    # -- frames from the peer -------------------------------------------------------------

    def _dispatch(self, frame: Frame) -> None:
        """Act on one frame at once: nothing here waits for a stream's local connection or target."""
        if frame.kind == FrameType.RESET:
            self._reset_streams()
        elif frame.kind == FrameType.OPEN:
            self._open_target(frame.stream, frame.payload)
        elif frame.kind == FrameType.DATA and frame.stream == FLOW_STREAM:
            self._flow(frame.payload)
        elif frame.kind == FrameType.DATA:
            self._data(frame.stream, frame.payload)
        elif frame.kind == FrameType.CLOSE and frame.payload:
            self._refused_stream(frame.stream, frame.payload)
        elif frame.kind == FrameType.CLOSE:
            # The peer's side ended: half-close ours once what it sent before is written.  The stream is
            # gone once both sides have ended (our CLOSE goes out when our local side ends; see _pump).
            state = self._state.get(frame.stream)
            if state is None or state.peer_ended:
                return
            state.peer_ended = True
            if state.discarding:
                self._ended(frame.stream, self._closed_by_peer, self._closed_by_us)
            else:
                state.queue.append(None)
                state.wake.set()

    def _data(self, stream: int, payload: bytes) -> None:
        state = self._state.get(stream)
        if state is None or state.peer_ended or state.discarding or not payload:
            return  # a stream we closed (or refused): its data in flight is dropped
        connecting = stream in self._opening
        limit = MAX_CONNECTING_HELD if connecting else MAX_STREAM_QUEUE
        if state.queued + len(payload) > limit:
            what = "its target is still being reached" if connecting else "its connection does not read it"
            self._drop(stream, f"stream closed: more than {limit >> 10} KiB waiting while {what}")
            return
        if self._queued + len(payload) > MAX_LINK_QUEUE:
            self._drop(stream, f"stream closed: more than {MAX_LINK_QUEUE >> 20} MiB waiting on this link")
            return
        state.queue.append(payload)
        state.queued += len(payload)
        self._queued += len(payload)
        state.wake.set()
        if not state.paused and state.queued >= (PAUSE_CONNECTING_AT if connecting else PAUSE_AT):
            state.paused = True
            self._send(Frame(FrameType.DATA, FLOW_STREAM, FLOW.pack(FLOW_PAUSE, stream)))

    def _flow(self, payload: bytes) -> None:
        """The peer asks us to pause (or resume) sending one stream; anything else on stream 0 is ignored."""
        if len(payload) != FLOW.size:
            return
        op, stream = FLOW.unpack(payload)
        state = self._state.get(stream)
        if state is None:
            return
        if op == FLOW_PAUSE:
            state.may_send.clear()
        elif op == FLOW_RESUME:
            state.may_send.set()

    def _taken(self, stream: int, state: _Stream, size: int) -> None:
        """``size`` bytes of ``stream`` were written to its local connection: resume it if it was paused."""
        state.queued -= size
        self._queued -= size
        if state.paused and state.queued <= RESUME_AT and self._state.get(stream) is state:
            state.paused = False
            self._send(Frame(FrameType.DATA, FLOW_STREAM, FLOW.pack(FLOW_RESUME, stream)))

    # -- streams ------------------------------------------------------------------------

    def _reset_streams(self) -> None:
        """The peer restarted: every stream of the old link is gone."""
        self.stats.resets += 1
        log.warning("the tunnel peer restarted: closing %d open stream(s); new streams work", len(self.streams))
        self._forget_streams()

    def _forget_streams(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for local in self.streams.values():
            with contextlib.suppress(Exception):
                local.transport.abort()  # an abrupt close tells the local application something broke
        self.streams.clear()
        self.stream_services.clear()
        self._state.clear()
        self._opening.clear()
        self._queued = 0
        self._closed_by_peer.clear()
        self._closed_by_us.clear()

    def _refused(self, reason: str) -> None:
        """Count a refused stream and log it (at most one line a second per link)."""
        self.streams_refused += 1
        self._refusals.log(f"refused a stream of peer {printable(self.peer_identity)}: {reason}")

    def _open_target(self, stream: int, payload: bytes) -> None:
        """Server: find the stream's service and start reaching its target (or refuse the stream, saying why)."""
        if self.resolve is None:  # a client opens the streams; the server never does
            self._refused("this end accepts no streams")
            self._refuse(stream, "this end accepts no streams")
            return
        if stream == FLOW_STREAM or stream in self._state:
            # The peer's idea of the stream differs from ours: refuse it, and drop ours (never a second
            # target connection under one id, and never one left behind).
            why = f"stream {stream} is already open" if stream != FLOW_STREAM else "stream 0 is reserved"
            self._refused(why)
            self._drop(stream, why)
            return
        if len(self._state) >= MAX_STREAMS:
            self._refused(f"{MAX_STREAMS} streams are open on this link")
            self._refuse(stream, f"too many streams: {MAX_STREAMS} are open on this link")
            return
        name = decode_open(payload)
        found = self.resolve(name, self.peer_identity) if name is not None else "a malformed service name"
        if isinstance(found, str):
            self._refused(found)
            # The same answer whether the service does not exist or is closed to this peer: a peer learns
            # nothing of the services it may not use (the server's log says which).
            told = found if name is None else f"the service {name!r} is not open to {printable(self.peer_identity)}"
            self._refuse(stream, told)
            return
        state = self._state[stream] = _Stream()
        self._opening[stream] = state.queue
        self.stream_services[stream] = found.name
        self._track(self._connect_target(stream, found, state), state)

    def _refuse(self, stream: int, reason: str) -> None:
        # The client's user would see only a closed connection: tell them why.  Only an authenticated
        # peer (one whose key we trust) ever gets this far, so what this says reaches no stranger.
        self._send(Frame(FrameType.CLOSE, stream, reason.encode()[:MAX_CLOSE_REASON]))

    def _drop(self, stream: int, reason: str) -> None:
        """Close ``stream`` on both sides at once: tell the peer why, forget it here."""
        self._refuse(stream, reason)
        self.close_stream(stream)

    async def _connect_target(self, stream: int, service: Service, state: _Stream) -> None:
        host, port = service.address
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if self._state.get(stream) is not state:
                return
            timed_out = isinstance(exc, TimeoutError) and not exc.errno  # (an OSError too, since 3.11)
            why = f"no answer within {CONNECT_TIMEOUT:g} s" if timed_out else _reason(exc)
            log.warning("cannot reach target %s:%d of service %s: %s", host, port, service.name, why)
            self._drop(stream, f"the server could not reach its target {host}:{port}: {why}")
            return
        if self._state.get(stream) is not state:  # the link reset (or the stream was closed) meanwhile
            writer.close()
            return
        self._opening.pop(stream, None)
        self.streams[stream] = writer
        self._track(self._pump(stream, reader, writer, state), state)
        await self._write_out(stream, writer, state)

    async def _write_out(self, stream: int, local: asyncio.StreamWriter, state: _Stream) -> None:
        """Write what the peer sends for ``stream`` to its local connection (or target), in order.

        A connection that fails (a target that reset, say) costs its own stream only: the rest of what the
        peer sends for it is dropped, and the peer is told to close its side if ours is still open.
        """
        try:
            while True:
                if not state.queue:
                    state.wake.clear()
                    await state.wake.wait()
                    continue
                item = state.queue.popleft()
                if item is None:
                    with contextlib.suppress(Exception):
                        local.write_eof() if local.can_write_eof() else local.close()
                    self._ended(stream, self._closed_by_peer, self._closed_by_us)
                    return
                if local.transport.is_closing():
                    raise ConnectionResetError("the connection was closed")
                local.write(item)
                await local.drain()
                self._taken(stream, state, len(item))
        except OSError as exc:
            self._local_failed(stream, state, exc)

    def _local_failed(self, stream: int, state: _Stream, error: OSError) -> None:
        if self._state.get(stream) is not state:
            return
        what = "target" if self.resolve is not None else "local connection"
        log.info("stream %d: the %s failed: %s", stream, what, _reason(error))
        self._queued -= state.queued
        state.queued = 0
        state.queue.clear()
        if stream in self._closed_by_us:
            # Our side had ended already (the target said all it had, then reset): drop what the peer still
            # sends, and end the stream when its CLOSE comes, as usual.
            state.discarding = True
            if state.peer_ended:
                self._ended(stream, self._closed_by_peer, self._closed_by_us)
            return
        self._drop(stream, f"the {what} connection failed: {_reason(error)}")

    def _refused_stream(self, stream: int, payload: bytes) -> None:
        """The peer could not open ``stream`` (a CLOSE with a reason): log why, and close the local connection.

        The stream never existed on the peer's side (or the peer dropped it), so nothing more is sent for
        it, and the local connection is closed both ways at once (not half-closed as for an ordinary CLOSE:
        nothing will ever answer it).  A stream whose target is still being reached is dropped likewise.
        """
        if stream not in self._state:
            return  # a stream already gone (both sides dropped it at once): nothing to close, nothing to log
        reason = printable(payload[:MAX_CLOSE_REASON], MAX_CLOSE_REASON)  # one log line, whatever it holds
        log.warning("a tunnelled connection was closed: %s", reason)
        self.close_stream(stream)

    def close_stream(self, stream: int) -> None:
        """Drop ``stream`` at once: its local connection is aborted, its tasks end, nothing more is sent for
        it."""
        self._closed_by_peer.discard(stream)
        self._closed_by_us.discard(stream)
        self.stream_services.pop(stream, None)
        self._opening.pop(stream, None)
        state = self._state.pop(stream, None)
        if state is not None:
            self._queued -= state.queued
            state.queue.clear()
            current = asyncio.current_task()
            for task in state.tasks:
                if task is not current:
                    task.cancel()
        local = self.streams.pop(stream, None)
        if local is not None:
            with contextlib.suppress(Exception):
                local.transport.abort()

    def close_service_streams(self, keep: Callable[[str], bool], reason: str) -> int:
        """Close the streams whose service ``keep`` rejects (a reload removed it, or closed it to this peer),
        telling the peer why; returns how many."""
        doomed = [stream for stream, name in self.stream_services.items() if not keep(name)]
        for stream in doomed:
            self._drop(stream, reason)
        return len(doomed)

    def open_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   service: str = DEFAULT_SERVICE) -> None:
        """Client side: a new local connection becomes a stream of ``service``."""
        stream = self.next_stream
        self.next_stream += 2
        self._send(Frame(FrameType.OPEN, stream, encode_open(service)))
        state = self._state[stream] = _Stream()
        self.streams[stream] = writer
        self.stream_services[stream] = service
        self._track(self._pump(stream, reader, writer, state), state)
        self._track(self._write_out(stream, writer, state), state)

    async def _pump(self, stream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    state: _Stream) -> None:
        try:
            while data := await reader.read(MAX_FRAME_PAYLOAD):
                await self._space.wait()
                await state.may_send.wait()
                if self._state.get(stream) is not state:
                    return
                self._send(Frame(FrameType.DATA, stream, data))
                if self.writer is not None:
                    with contextlib.suppress(ConnectionError):
                        await self.writer.drain()
        except OSError:
            pass
        if self._state.get(stream) is state:
            self._send(Frame(FrameType.CLOSE, stream))
            self._ended(stream, self._closed_by_us, self._closed_by_peer)

    def _ended(self, stream: int, side: set[int], other: set[int]) -> None:
        """One side of ``stream`` ended; when the other had too, forget the stream and close the socket."""
        if stream not in other:
            side.add(stream)
            return
        other.discard(stream)
        self.stream_services.pop(stream, None)
        state = self._state.pop(stream, None)
        if state is not None:
            self._queued -= state.queued
        local = self.streams.pop(stream, None)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()

    def _track(self, coroutine: Coroutine[object, object, None], state: _Stream | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if state is not None:
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self.streams.values():
            writer.close()
        if self.writer is not None:
            self.writer.close()

    def drop(self) -> None:
        """Forget this link for good (its peer started over): abort its streams and its connection."""
        self._forget_streams()
        if self.writer is not None and self.writer.transport is not None:
            self.writer.transport.abort()

    def snapshot(self, state: str) -> dict[str, Any]:
        """What ``mls-tunnel status`` and the metrics report of this link (no secrets): the peer, the state,
        the epoch and rekeys, bytes each way, streams, reconnects, the last error."""
        if self.writer is not None:
            self._count_rekeys(self.writer)
        epoch = self.writer.epoch if self.writer is not None else None
        # The last rekey that took effect, not the handshake (which sets the connection's own clock): None
        # until the first one.
        last = self.stats.last_rekey
        ago = time.monotonic() - last if last is not None else None
        abandoned, deferred, late = _put_off_counts(self.writer) if self.writer is not None else (0, 0, 0)
        session = self.writer.connection.session if self.writer is not None else None
        return {"peer": printable(self.peer_identity, 256) if self.peer_identity else None,
                "fingerprint": self.peer_fingerprint, "state": state, "epoch": epoch,
                "last_rekey_seconds_ago": None if ago is None else round(ago, 1), "rekeys": self.stats.rekeys,
                "bytes_in": self.stats.bytes_in, "bytes_out": self.stats.bytes_out, "streams": len(self.streams),
                "streams_refused": self.streams_refused, "reconnects": self.stats.reconnects,
                "resumptions": self.stats.resumptions, "fresh_handshakes": self.stats.fresh_handshakes,
                "failed_connects": self.stats.failed_connects, "resets": self.stats.resets,
                "rekeys_abandoned": self.stats.rekeys_abandoned + abandoned,
                "commits_deferred": self.stats.commits_deferred + deferred,
                "epochs_stored_late": self.stats.epochs_stored_late + late,
                "pq_epoch": session.pq_epoch if session is not None else None,
                "full_commits": self.stats.full_commits + (_full_commits(self.writer) if self.writer else 0),
                "last_error": self.stats.last_error or None}


def _full_commits(writer: MlsTlsWriter) -> int:
    """APQ: our FULL commits on ``writer``'s connection."""
    endpoint = writer.connection.endpoint
    return endpoint.full_commits if endpoint is not None else 0


def _put_off_counts(writer: MlsTlsWriter) -> tuple[int, int, int]:
    """(our rekeys abandoned, peer commits deferred, epochs stored late) on ``writer``'s connection because the
    store could not take them at once (docs/fleet.md)."""
    endpoint = writer.connection.endpoint
    if endpoint is None:
        return 0, 0, 0
    return endpoint.abandoned_rekeys, endpoint.deferred_commits, endpoint.late_confirmations


def settings_of(configuration: MlsTlsConfiguration) -> str:
    """The handshake settings both ends must agree on, as a user gives them: '--mode housley, --apq require
    (suite 81)'."""
    profile = configuration.profile
    mode = "housley" if configuration.housley is not None else "alongside" if configuration.tls else "mls"
    apq = f"--apq {profile.apq} (suite {profile.apq_suite})" if profile.apq != "off" else "--apq off"
    return f"--mode {mode}, {apq}"


def status_line(link: dict[str, Any]) -> str:
    """One line of a link's snapshot, for the periodic status log (``epoch -`` while there are no keys)."""
    epoch = "-" if link["epoch"] is None else link["epoch"]
    ago = "-" if link["last_rekey_seconds_ago"] is None else f"{link['last_rekey_seconds_ago']:.0f}s ago"
    peer = f"{link['peer']} " if link["peer"] else ""
    line = (f"{peer}{link['state']} | epoch {epoch} rekeys {link['rekeys']} last {ago} | in {link['bytes_in']} B "
            f"out {link['bytes_out']} B | streams {link['streams']} | reconnects {link['reconnects']}")
    return line + (f" | last error: {link['last_error']}" if link["last_error"] else "")


def _reason(error: OSError) -> str:
    """What went wrong, in the system's words (asyncio's "Connect call failed ..." says only where)."""
    if error.errno and not isinstance(error, socket.gaierror):  # getaddrinfo's codes are not errno values
        return os.strerror(error.errno).lower()
    return error.strerror or str(error) or type(error).__name__


# -- the two ends --------------------------------------------------------------------------

class TunnelServer:
    """Accept MLS-TLS links and forward their streams to the targets of their services.

    ``services`` is a target address (the one default service, as ``--target`` gives) or the service table;
    :meth:`set_services` swaps in a new table (a reload).  Handshakes that fail are counted by reason
    (:attr:`handshake_failures`), for status and metrics.
    """

    def __init__(self, configuration: MlsTlsConfiguration, services: Address | Mapping[str, Service]) -> None:
        self.configuration = configuration
        self.services: Mapping[str, Service] = (
            {DEFAULT_SERVICE: Service(DEFAULT_SERVICE, services)} if isinstance(services, tuple) else dict(services))
        self.links: dict[bytes, TunnelLink] = {}
        self.server: asyncio.Server | None = None
        self.handshake_failures: dict[str, int] = {}

    async def start(self, host: str, port: int) -> int:
        self.server = await start_server(self._accept, host, port, configuration=self.configuration,
                                         on_handshake_failure=self._failed)
        return int(self.server.sockets[0].getsockname()[1])

    def _failed(self, reason: str) -> None:
        self.handshake_failures[reason] = self.handshake_failures.get(reason, 0) + 1

    def resolve(self, name: str, peer: bytes | None) -> Service | str:
        """The service a stream asks for, if it exists and is open to ``peer``; else why not."""
        service = self.services.get(name)
        if service is None:
            return f"this server has no service {name!r}"
        if not service.open_to(peer):
            return f"the service {name!r} is not open to {printable(peer)}"
        return service

    def set_services(self, services: Mapping[str, Service]) -> int:
        """Put a new service table in force; streams of services it removes, moves to another target or closes
        to their peer end (the peer is told why); returns how many.  Other streams (a change of a service's
        ``peers`` keeps those of the peers it still names), and every link, are untouched."""
        old, self.services = self.services, dict(services)
        closed = 0
        for link in self.links.values():
            def keep(name: str, link: TunnelLink = link) -> bool:
                fresh, before = self.services.get(name), old.get(name)
                return (fresh is not None and before is not None and fresh.address == before.address
                        and fresh.open_to(link.peer_identity))
            closed += link.close_service_streams(keep, "the server's configuration no longer offers this service")
        return closed

    async def _accept(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        session = writer.connection.session
        assert session is not None and session.group_id is not None
        link = self.links.get(session.group_id)
        if link is None:
            self._forget_links_of(writer.get_extra_info("mls_peer_identity"))
            link = self.links[session.group_id] = TunnelLink(is_client=False, resolve=self.resolve)
            link.group_id = session.group_id
        else:
            link.stats.reconnects += 1
        try:
            await link.attach(reader, writer)
        except Exception as exc:  # a bug must cost this connection only, never the server
            link.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.error("link of peer %s failed unexpectedly: %s", printable(link.peer_identity),
                      link.stats.last_error, exc_info=True)

    def _forget_links_of(self, identity: bytes | None) -> None:
        """A peer started a new session: its links that are down belong to sessions it gave up (a restart
        without its state, say).  Drop them, with their streams' target connections, so that status and
        metrics show one link per peer, and nothing waits for a resumption that cannot come."""
        if identity is None:
            return
        for group_id, link in list(self.links.items()):
            if link.peer_identity == identity and link.writer is None and not link.link_ready.is_set():
                log.info("peer %s started a new session: dropping its old link (group %s, %d stream(s))",
                         printable(identity), group_id.hex()[:16], len(link.streams))
                link.drop()
                del self.links[group_id]

    def snapshot(self) -> list[dict[str, Any]]:
        return [link.snapshot("up" if link.link_ready.is_set() else "waiting") for link in self.links.values()]

    def live_connections(self) -> int:
        """Clients' connections now open (links that are down are not counted)."""
        return sum(1 for link in self.links.values() if link.writer is not None and not link.writer.is_closing())

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
        self.settings_mismatch = False  # the last fresh handshake ended over settings (SETTINGS_ALERTS)
        self.group_id: bytes | None = configuration.resume_group_id
        self.listeners: dict[str, tuple[Service, asyncio.Server]] = {}
        self.handshake_failures: dict[str, int] = {}
        self.state = "connecting"
        self.refused: str | None = None
        self.failed_here = False
        """The last attempt failed on this side (our store, say), not on the way to the server or in it."""
        self.stopped = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._random = random.Random()

    @property
    def local(self) -> asyncio.Server | None:
        """The default service's listener (the one ``start`` opens)."""
        found = self.listeners.get(DEFAULT_SERVICE)
        return found[1] if found is not None else None

    async def start(self, host: str, port: int, *, connect_timeout: float | None = None) -> int:
        """Connect (or resume), then listen on ``host``:``port`` for the default service; raises TunnelError if
        that cannot happen.  Returns the port listened on."""
        ports = await self.start_services({DEFAULT_SERVICE: Service(DEFAULT_SERVICE, (host, port))},
                                          connect_timeout=connect_timeout)
        return ports[DEFAULT_SERVICE]

    async def start_services(self, services: Mapping[str, Service], *,
                             connect_timeout: float | None = None) -> dict[str, int]:
        """Connect (or resume), then listen for each service; returns the port each listens on."""
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
            if self.settings_mismatch:
                here = settings_of(self.configuration)
                raise TunnelError(f"the handshake with the tunnel server at {self.remote[0]}:{self.remote[1]} failed "
                                  f"({self.link.stats.last_error}): it answers, so check that --mode, --apq and "
                                  f"--apq-suite are the same on both ends (this end: {here})")
            raise TunnelError(f"cannot reach the tunnel server at {self.remote[0]}:{self.remote[1]} "
                              f"({self.link.stats.last_error or 'no answer'}); is it running and reachable?")
        try:
            await self.set_services(services)
        except OSError:
            await self.close()
            raise
        return {name: int(server.sockets[0].getsockname()[1]) for name, (_, server) in self.listeners.items()}

    async def set_services(self, services: Mapping[str, Service]) -> int:
        """Listen for exactly ``services``: new ones start, removed or moved ones stop (their open streams
        end); unchanged ones keep their listener and streams.  Returns how many streams were closed.  A new
        address that cannot be bound raises OSError with the listeners as they were.

        A new listener on an address that a listener being replaced holds (a service renamed, or two
        services swapping addresses) is bound once that listener is closed."""
        replaced = [n for n in self.listeners if self.listeners[n][0] != services.get(n)]
        wanted = {n: s for n, s in services.items() if self.listeners.get(n, (None,))[0] != s}
        started: dict[str, tuple[Service, asyncio.Server]] = {}
        closed_early: list[str] = []
        try:
            later = []
            for name, service in wanted.items():
                try:
                    started[name] = (service, await self._listen(name, service))
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE or not self._held_by(service.address, replaced):
                        raise
                    later.append(name)
            if later:
                for name in replaced:
                    if any(self._held_by(wanted[n].address, [name]) for n in later):
                        self.listeners[name][1].close()
                        closed_early.append(name)
                for name in later:
                    started[name] = (wanted[name], await self._listen(name, wanted[name]))
        except OSError:
            for _, server in started.values():
                server.close()
            for name in closed_early:  # put back what was closed for nothing (its address is free again)
                service = self.listeners[name][0]
                with contextlib.suppress(OSError):
                    self.listeners[name] = (service, await self._listen(name, service))
            raise
        closed = 0
        for name in replaced:
            self.listeners.pop(name)[1].close()
            def keep(service: str, gone: str = name) -> bool:
                return service != gone
            closed += self.link.close_service_streams(keep, "the client's configuration no longer offers this service")
        self.listeners.update(started)
        return closed

    async def _listen(self, name: str, service: Service) -> asyncio.Server:
        try:
            return await asyncio.start_server(functools.partial(self._local, name), *service.address)
        except OSError as exc:  # which service, for the one line that reports it
            raise ListenError(service, exc) from exc

    def live_connections(self) -> int:
        """Connections to the server now open (0 or 1)."""
        writer = self.link.writer
        return int(writer is not None and not writer.is_closing())

    def _held_by(self, address: Address, names: list[str]) -> bool:
        """Does a listener of one of ``names`` hold ``address``'s port (a fixed one)?"""
        if address[1] == 0:
            return False
        return any(sock.getsockname()[1] == address[1]
                   for name in names if name in self.listeners for sock in self.listeners[name][1].sockets)

    async def _local(self, service: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.link.link_ready.wait()  # streams start on a synchronized link, never into a reset
        if service in self.listeners:
            self.link.open_local(reader, writer, service)
        else:
            writer.close()  # the service went while the link was down

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
                reason = exc.alert.name.lower()
                self.handshake_failures[reason] = self.handshake_failures.get(reason, 0) + 1
                self.failed_here = not exc.by_peer and exc.alert == AlertDescription.INTERNAL_ERROR
                self.settings_mismatch = not resuming and exc.alert in SETTINGS_ALERTS
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
            except Exception as exc:  # a bug (ours, or a malicious server's doing) costs this attempt only
                failures += 1
                self.link.stats.failed_connects += 1
                self.link.stats.last_error = f"{type(exc).__name__}: {exc}"
                self.failed_here = True
                log.error("the connection to the tunnel server failed unexpectedly: %s; retrying with backoff",
                          self.link.stats.last_error, exc_info=True)
            else:
                failed_before, failures, refusals = failures, 0, 0
                resume_failed_since = None
                try:
                    session = writer.connection.session
                    assert session is not None
                    self._settle(session.group_id, resumed=resuming)
                    await self.link.attach(reader, writer)
                except Exception as exc:  # likewise: log it, count it, reconnect with (growing) backoff
                    failures = failed_before + 1
                    self.link.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("the link failed unexpectedly: %s; reconnecting with backoff",
                              self.link.stats.last_error, exc_info=True)
                    with contextlib.suppress(Exception):
                        writer.close()
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

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.link.snapshot(self.state)]

    async def close(self) -> None:
        self._stopping = True
        for _, server in self.listeners.values():
            server.close()
        await self.link.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
