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
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from mls2p.errors import AlertDescription
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .errors import HandshakeError, TunnelError
from .link import MAX_FRAME_PAYLOAD, Frame, FrameType, ReliableLink
from .services import DEFAULT_SERVICE, Address, Service, decode_open, encode_open
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


Resolver = Callable[[str, "bytes | None"], "Service | str"]
"""A server's service lookup: (service name, peer identity) -> the service, or why the stream is refused."""


class TunnelLink:
    """One side of the link: streams multiplexed over whatever MLS-TLS connection is current.

    A server's link opens each stream's target through ``resolve`` (the server's service table as it is
    when the OPEN arrives), in a task of its own: a slow target holds up only its own stream.
    """

    def __init__(self, *, is_client: bool, resolve: Resolver | None = None) -> None:
        self.is_client = is_client
        self.resolve = resolve
        self.reliable = ReliableLink()
        self.writer: MlsTlsWriter | None = None
        self.peer_identity: bytes | None = None
        self.peer_fingerprint: str | None = None
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.stream_services: dict[int, str] = {}
        self._opening: dict[int, list[bytes | None]] = {}  # streams whose target is being reached: data held
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
            self._open_target(frame.stream, frame.payload)
        elif frame.kind in (FrameType.DATA, FrameType.CLOSE) and frame.stream in self._opening:
            self._opening[frame.stream].append(frame.payload if frame.kind == FrameType.DATA else None)
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
        self.stream_services.clear()
        self._opening.clear()
        self._closed_by_peer.clear()
        self._closed_by_us.clear()

    def _open_target(self, stream: int, payload: bytes) -> None:
        """Server: find the stream's service and start reaching its target (or refuse the stream, saying why)."""
        assert self.resolve is not None, "only the server side opens target connections"
        name = decode_open(payload)
        found = self.resolve(name, self.peer_identity) if name is not None else "a malformed service name"
        if isinstance(found, str):
            self.streams_refused += 1
            who = (self.peer_identity or b"?").decode("utf-8", "replace")
            log.warning("refused a stream of peer %s: %s", who, found)
            self._refuse(stream, found)
            return
        self._opening[stream] = []
        self.stream_services[stream] = found.name
        self._track(self._connect_target(stream, found))

    def _refuse(self, stream: int, reason: str) -> None:
        # The client's user would see only a closed connection: tell them why.  Only an authenticated
        # peer (one whose key we trust) ever gets this far, so what this says reaches no stranger.
        self._send(Frame(FrameType.CLOSE, stream, reason.encode()[:MAX_CLOSE_REASON]))

    async def _connect_target(self, stream: int, service: Service) -> None:
        host, port = service.address
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self._opening.pop(stream, None)
            self.stream_services.pop(stream, None)
            log.warning("cannot reach target %s:%d of service %s: %s", host, port, service.name, exc)
            self._refuse(stream, f"the server could not reach its target {host}:{port}: {_reason(exc)}")
            return
        held = self._opening.pop(stream, None)
        if held is None:  # the link reset (or the service went) while we connected
            writer.close()
            return
        self.streams[stream] = writer
        for data in held:
            if data is None:  # the client's side had already ended
                await self._dispatch(Frame(FrameType.CLOSE, stream))
            else:
                writer.write(data)
        await self._pump(stream, reader, writer)

    def _refused_stream(self, stream: int, payload: bytes) -> None:
        """The peer could not open ``stream`` (a CLOSE with a reason): log why, and close the local connection.

        The stream never existed on the peer's side, so nothing more is sent for it, and the local connection
        is closed both ways at once (not half-closed as for an ordinary CLOSE: nothing will ever answer it).
        """
        text = payload[:MAX_CLOSE_REASON].decode("utf-8", "replace")
        reason = "".join(char if char.isprintable() else "?" for char in text)  # one log line, whatever it holds
        log.warning("a tunnelled connection was closed: %s", reason)
        self.close_stream(stream)

    def close_stream(self, stream: int) -> None:
        """Drop ``stream`` at once: its local connection is aborted, nothing more is sent for it."""
        self._closed_by_peer.discard(stream)
        self._closed_by_us.discard(stream)
        self.stream_services.pop(stream, None)
        self._opening.pop(stream, None)
        local = self.streams.pop(stream, None)
        if local is not None:
            with contextlib.suppress(Exception):
                local.transport.abort()

    def close_service_streams(self, keep: Callable[[str], bool], reason: str) -> int:
        """Close the streams whose service ``keep`` rejects (a reload removed it, or closed it to this peer),
        telling the peer why; returns how many."""
        doomed = [stream for stream, name in self.stream_services.items() if not keep(name)]
        for stream in doomed:
            self._refuse(stream, reason)
            self.close_stream(stream)
        return len(doomed)

    def open_local(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   service: str = DEFAULT_SERVICE) -> None:
        """Client side: a new local connection becomes a stream of ``service``."""
        stream = self.next_stream
        self.next_stream += 2
        self._send(Frame(FrameType.OPEN, stream, encode_open(service)))
        self.streams[stream] = writer
        self.stream_services[stream] = service
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
        self.stream_services.pop(stream, None)
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

    def snapshot(self, state: str) -> dict[str, Any]:
        """What ``mls-tunnel status`` and the metrics report of this link (no secrets): the peer, the state,
        the epoch and rekeys, bytes each way, streams, reconnects, the last error."""
        epoch = self.writer.epoch if self.writer is not None else None
        if epoch is not None and self._epoch_seen is not None and epoch > self._epoch_seen:
            self.stats.rekeys += epoch - self._epoch_seen
        self._epoch_seen = epoch if epoch is not None else self._epoch_seen
        last = self.writer.connection.last_rekey if self.writer is not None else None
        ago = asyncio.get_running_loop().time() - last if last is not None else None
        return {"peer": (self.peer_identity or b"").decode("utf-8", "replace") or None,
                "fingerprint": self.peer_fingerprint, "state": state, "epoch": epoch,
                "last_rekey_seconds_ago": None if ago is None else round(ago, 1), "rekeys": self.stats.rekeys,
                "bytes_in": self.stats.bytes_in, "bytes_out": self.stats.bytes_out, "streams": len(self.streams),
                "streams_refused": self.streams_refused, "reconnects": self.stats.reconnects,
                "resumptions": self.stats.resumptions, "fresh_handshakes": self.stats.fresh_handshakes,
                "failed_connects": self.stats.failed_connects, "resets": self.stats.resets,
                "last_error": self.stats.last_error or None}


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
            return f"the service {name!r} is not open to {(peer or b'?').decode('utf-8', 'replace')}"
        return service

    def set_services(self, services: Mapping[str, Service]) -> int:
        """Put a new service table in force; streams of services it removes, changes or closes to their peer
        end (the peer is told why); returns how many.  Other streams, and every link, are untouched."""
        old, self.services = self.services, dict(services)
        closed = 0
        for link in self.links.values():
            def keep(name: str, link: TunnelLink = link) -> bool:
                fresh = self.services.get(name)
                return fresh is not None and fresh == old.get(name) and fresh.open_to(link.peer_identity)
            closed += link.close_service_streams(keep, "the server's configuration no longer offers this service")
        return closed

    async def _accept(self, reader: asyncio.StreamReader, writer: MlsTlsWriter) -> None:
        session = writer.connection.session
        assert session is not None and session.group_id is not None
        link = self.links.get(session.group_id)
        if link is None:
            link = self.links[session.group_id] = TunnelLink(is_client=False, resolve=self.resolve)
        else:
            link.stats.reconnects += 1
        await link.attach(reader, writer)

    def snapshot(self) -> list[dict[str, Any]]:
        return [link.snapshot("up" if link.link_ready.is_set() else "waiting") for link in self.links.values()]

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
        address that cannot be bound raises OSError with the listeners as they were."""
        started: dict[str, tuple[Service, asyncio.Server]] = {}
        try:
            for name, service in services.items():
                if self.listeners.get(name, (None,))[0] != service:
                    handler = functools.partial(self._local, name)
                    started[name] = (service, await asyncio.start_server(handler, *service.address))
        except OSError:
            for _, server in started.values():
                server.close()
            raise
        closed = 0
        for name in [n for n in self.listeners if n not in services or n in started]:
            self.listeners.pop(name)[1].close()
            def keep(service: str, gone: str = name) -> bool:
                return service != gone
            closed += self.link.close_service_streams(keep, "the client's configuration no longer offers this service")
        self.listeners.update(started)
        return closed

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
