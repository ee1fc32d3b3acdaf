"""asyncio streams over MLS-TLS, mirroring ``asyncio.open_connection`` / ``asyncio.start_server``.

    reader, writer = await mlstls.open_connection("127.0.0.1", 8443, configuration=config)
    writer.write(b"hello")
    await writer.drain()
    data = await reader.read(100)

The reader is an :class:`asyncio.StreamReader` (an :class:`MlsTlsStreamReader`);
the writer has the :class:`asyncio.StreamWriter` methods plus
:meth:`MlsTlsWriter.rekey`, :attr:`MlsTlsWriter.epoch` and
:attr:`MlsTlsWriter.truncated`, and ``get_extra_info`` answers the peer's
identity, key fingerprint, cipher suite and epoch (``mls_peer_identity``,
``mls_peer_fingerprint``, ``mls_cipher_suite``, ``mls_epoch``: docs/tls.md).
All I/O and timing live here; the protocol logic is the sans-I/O
:class:`~mlstls.connection.MlsTlsConnection`.

Half-close: :meth:`MlsTlsWriter.write_eof` sends close_notify and keeps
reading, as TLS 1.3 allows (RFC 8446 section 6.1); the peer's reader sees
EOF and the peer may still answer, until it closes too (docs/tls.md).

Truncation: once keys exist, the stream ends cleanly only with the peer's
close_notify.  If the peer's bytes stop without one (a FIN or a reset: a
crash, or an attacker cutting the connection), the reader delivers every
byte that arrived and then raises :class:`~mlstls.errors.TruncatedStream`
instead of returning ``b""``; ``writer.truncated`` (also
``writer.get_extra_info("truncated")``) tells the same afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mls2p.errors import AlertDescription
from mls2p.identity import SESSION_INFO, session_extra_info
from mls2p.session import TwoPartySession

from .config import MlsTlsConfiguration
from .connection import (
    ConnectionTerminated,
    DataReceived,
    EpochChanged,
    HandshakeCompleted,
    StreamEnded,
)
from .errors import ConfigurationError, HandshakeError, StateError, TruncatedStream
from .modes import new_connection

if TYPE_CHECKING:
    from .modes import Connection as AnyConnection

_SETTINGS_HINTED = frozenset({AlertDescription.DECODE_ERROR, AlertDescription.MISSING_EXTENSION,
                              AlertDescription.HANDSHAKE_FAILURE, AlertDescription.PROTOCOL_VERSION})
"""Refusals of a client's first message that another mode or APQ setting on the client explains."""

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
"""How often the time-based rekey policy is checked."""


class MlsTlsStreamReader(asyncio.StreamReader):
    """An :class:`asyncio.StreamReader` that can end in a truncation: data first, then the error.

    A plain reader's :meth:`~asyncio.StreamReader.set_exception` makes the next
    read raise even while received bytes are still buffered; a truncated stream
    must still hand over everything that arrived intact (it was authenticated)
    and raise only where the clean end would have been, where ``read`` would
    return ``b""`` and ``readexactly``/``readuntil`` would raise
    :class:`asyncio.IncompleteReadError`.  ``readline``, ``read(-1)`` and
    ``async for`` go through these methods.
    """

    _truncation: TruncatedStream | None = None

    def feed_truncation(self, error: TruncatedStream) -> None:
        """End the stream with ``error``: raised, via :meth:`set_exception`, once the buffer is drained."""
        self._truncation = error
        self.feed_eof()
        if self.at_eof():
            self.set_exception(error)

    def _truncated(self) -> TruncatedStream:
        assert self._truncation is not None
        self.set_exception(self._truncation)  # every later read raises it too, and exception() reports it
        return self._truncation

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        if not data and n != 0 and self._truncation is not None:
            raise self._truncated()
        return data

    async def readexactly(self, n: int) -> bytes:
        try:
            return await super().readexactly(n)
        except asyncio.IncompleteReadError as exc:
            if self._truncation is None:
                raise
            raise self._truncated() from exc  # exc.partial holds the bytes that did arrive

    async def readuntil(self, separator: Any = b"\n") -> bytes:  # Any: what the base takes varies by version
        try:
            return await super().readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            if self._truncation is None:
                raise
            raise self._truncated() from exc


class MlsTlsProtocol(asyncio.Protocol):
    """Glue between an asyncio transport and an :class:`MlsTlsConnection`."""

    def __init__(self, configuration: MlsTlsConfiguration,
                 on_epoch: Callable[[int], None] | None = None) -> None:
        self.connection: AnyConnection = new_connection(configuration)
        self.reader = MlsTlsStreamReader(limit=1 << 24)
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._on_epoch = on_epoch
        self.terminated: ConnectionTerminated | None = None
        self.truncated = False
        """The peer's bytes ended (FIN or reset) after keys existed and before its close_notify."""
        self.connection.wakeup = self._flush  # a trust reload may close the connection outside data_received

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.connection.is_client:
            self.connection.connect(self._loop.time())
        self._flush()
        self._timer = self._loop.call_later(POLL_INTERVAL, self._poll)

    def data_received(self, data: bytes) -> None:
        self.connection.receive_data(data, self._loop.time())
        self._flush()

    def eof_received(self) -> bool | None:
        self._peer_ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._peer_ended(exc)  # a reset or a failed send; None is our own close or abort, or follows a FIN
        self.connection.connection_lost()
        self._process_events()
        if not self.handshake.done():
            self.handshake.set_exception(HandshakeError(f"connection lost during the handshake: {exc}"))
        self.reader.feed_eof()
        if self._timer is not None:
            self._timer.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _peer_ended(self, exc: Exception | None) -> None:
        """The peer's bytes stopped: a clean end only after its close_notify (or before any keys).

        An open connection with keys (no close_notify either way, no failure)
        means the stream was cut: the reader raises :class:`TruncatedStream`
        after the data that arrived, so a cut cannot pass for a complete stream.
        """
        if self.truncated:
            return
        if self.connection.established and not self.connection.closed and not self.connection.read_closed:
            self.truncated = True
            how = f"{type(exc).__name__}: {exc}" if exc is not None else "TCP FIN"
            error = TruncatedStream(f"the stream ended without the peer's close_notify ({how}): data may be missing")
            error.__cause__ = exc
            self.reader.feed_truncation(error)
        else:
            self.reader.feed_eof()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # internals
    def write(self, data: bytes) -> None:
        self.connection.send_data(data, self._loop.time())
        self._flush()

    def write_eof(self) -> None:
        """Send close_notify and keep reading (RFC 8446 section 6.1: each side closes its own direction);
        TCP's own write side is shut after it, so the peer sees close_notify and then FIN."""
        if self.connection.write_closed or self.connection.closed:
            return
        if not self.connection.established:
            raise StateError("write_eof() before the handshake completed")
        self.connection.send_eof()
        self._flush()
        if self.transport is not None and not self.transport.is_closing() and self.transport.can_write_eof():
            self.transport.write_eof()

    async def drain(self) -> None:
        if self.connection.closed and self.terminated and self.terminated.alert != 0:
            raise ConnectionResetError(self.terminated.reason)
        if self._paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    def _poll(self) -> None:
        self.connection.poll(self._loop.time())
        self._flush()
        if not self.connection.closed:
            self._timer = self._loop.call_later(POLL_INTERVAL, self._poll)

    def _flush(self) -> None:
        self._send(self.connection.data_to_send())
        self._process_events()

    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _process_events(self) -> None:
        while (event := self.connection.next_event()) is not None:
            if isinstance(event, DataReceived):
                self.reader.feed_data(event.data)
            elif isinstance(event, HandshakeCompleted):
                if not self.handshake.done():
                    self.handshake.set_result(event.epoch)
            elif isinstance(event, EpochChanged):
                if self._on_epoch is not None:
                    self._on_epoch(event.epoch)
            elif isinstance(event, StreamEnded):
                self.reader.feed_eof()  # the peer half-closed: we may still write until we close
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
                if not self.handshake.done():
                    self.handshake.set_exception(HandshakeError(event.reason, alert=event.alert,
                                                                by_peer=event.by_peer,
                                                                authenticated=event.authenticated))
                if event.alert != 0:
                    self.reader.set_exception(ConnectionResetError(event.reason))
                else:
                    self.reader.feed_eof()
                if self.transport is not None:
                    self._send(self.connection.data_to_send())
                    self.transport.close()


class MlsTlsWriter:
    """The writing half, with the :class:`asyncio.StreamWriter` interface."""

    def __init__(self, protocol: MlsTlsProtocol) -> None:
        self._protocol = protocol

    @property
    def connection(self) -> AnyConnection:
        return self._protocol.connection

    @property
    def session(self) -> TwoPartySession | None:
        return self.connection.session

    @property
    def epoch(self) -> int | None:
        return self.connection.epoch

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._protocol.transport

    def write(self, data: bytes) -> None:
        self._protocol.write(bytes(data))

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    async def drain(self) -> None:
        await self._protocol.drain()

    def rekey(self, *, full: bool = False) -> None:
        """Start a PCS rekey now (``full``: a FULL commit in an APQ session, docs/pq.md)."""
        self.connection.rekey(full=full)
        self._protocol._flush()

    def can_write_eof(self) -> bool:
        """True: :meth:`write_eof` is a real half-close (unlike asyncio's ``ssl`` transports)."""
        return True

    def write_eof(self) -> None:
        """Half-close: send close_notify (the peer's reader sees a clean EOF) and keep reading.

        The peer may still send; its stream ends cleanly at its own close_notify.  Writing afterwards
        raises :class:`~mlstls.errors.StateError`; :meth:`close` ends the connection.  Rekeys stop
        once either side has half-closed (one side no longer speaks, so none could complete).
        """
        self._protocol.write_eof()

    def is_closing(self) -> bool:
        return self.connection.closed or (self.transport is None or self.transport.is_closing())

    def close(self) -> None:
        self.connection.close()
        self._protocol._flush()

    async def wait_closed(self) -> None:
        await self._protocol.closed

    @property
    def truncated(self) -> bool:
        """True once the peer's bytes ended after keys existed without its close_notify (a cut stream).

        The reader has then raised, or will raise after the buffered data,
        :class:`~mlstls.errors.TruncatedStream`; False while open and after a
        clean close (either side's close_notify) or a fatal alert.
        """
        return self._protocol.truncated

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``socket``...), plus the connection's.

        ``mls_epoch``: the MLS epoch of the keys our records are sealed with (None before keys exist);
        ``truncated``: see :attr:`truncated`; ``mls_session``, ``mls_group_id``, ``mls_cipher_suite``,
        ``mls_peer_identity``, ``mls_peer_credential``, ``mls_peer_fingerprint``: the session's
        (:func:`mls2p.identity.session_extra_info`, the same names an mlsquic protocol answers).
        """
        if name == "truncated":
            return self.truncated
        if name == "mls_epoch":
            return self.epoch
        if name in SESSION_INFO:
            return session_extra_info(self.session, name, default)
        return self.transport.get_extra_info(name, default) if self.transport else default


_TLS_ARGUMENTS = ("ssl", "server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout")
"""asyncio's TLS arguments: MLS-TLS runs its own handshake over plain TCP, so asyncio's TLS must stay off."""


def _check_arguments(function: str, configuration: object, *, is_client: bool, handshake_timeout: object,
                     asyncio_arguments: dict[str, Any]) -> None:
    """Refuse what :func:`open_connection`/:func:`start_server` cannot honour, naming the argument.

    ``ssl=True`` (or a context) would wrap the MLS-TLS byte stream in a second, unrelated TLS
    connection that the peer does not speak, ending in an SSLError from deep inside asyncio.
    """
    if not isinstance(configuration, MlsTlsConfiguration):
        raise ConfigurationError(f"{function}: configuration must be a mlstls.MlsTlsConfiguration, "
                                 f"not {type(configuration).__name__}")
    if configuration.is_client != is_client:
        raise ConfigurationError(f"{function}: configuration must have is_client={is_client}")
    if (isinstance(handshake_timeout, bool) or not isinstance(handshake_timeout, int | float)
            or not handshake_timeout > 0):
        raise ConfigurationError(f"{function}: handshake_timeout must be a number of seconds > 0, "
                                 f"not {handshake_timeout!r}")
    for name in _TLS_ARGUMENTS:
        if asyncio_arguments.get(name) not in (None, False):
            raise ConfigurationError(
                f"{function}: {name} is not supported: MLS-TLS runs its own handshake over plain TCP; for MLS "
                "alongside TLS 1.3 pass MlsTlsConfiguration(tls=mlstls.TlsSettings(cafile=..., server_hostname=...))")


async def open_connection(host: str, port: int, *, configuration: MlsTlsConfiguration,
                          handshake_timeout: float = 10.0, **kwargs: Any) -> tuple[asyncio.StreamReader, MlsTlsWriter]:
    """Connect, run the MLS handshake (or resume), and return (reader, writer).

    ``kwargs`` go to :meth:`asyncio.loop.create_connection` (``local_addr``, ``happy_eyeballs_delay``...),
    except its TLS arguments (``ssl``, ``server_hostname``...): a ConfigurationError names them.
    """
    _check_arguments("open_connection", configuration, is_client=True, handshake_timeout=handshake_timeout,
                     asyncio_arguments=kwargs)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: MlsTlsProtocol(configuration), host, port, **kwargs)
    try:
        await asyncio.wait_for(protocol.handshake, handshake_timeout)
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.close()
        raise
    return protocol.reader, MlsTlsWriter(protocol)


ClientConnected = Callable[[asyncio.StreamReader, MlsTlsWriter], Awaitable[None] | None]


class _RateLimitedLog:
    """At most one warning per ``interval`` seconds on ``logger``; the lines held back are counted in the next
    one (the package's refusal lines: handshakes here, streams in mlstls.tunnel)."""

    def __init__(self, interval: float = 1.0, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.logger = logger
        self._last = -interval
        self._held = 0

    def log(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        self.logger.warning("%s%s", line, f" ({held} more since the last report)" if held else "")


_REFUSALS = _RateLimitedLog()

MAX_HANDSHAKES = 256
"""Connections a server lets run their handshake at once; beyond, new ones are closed at once."""


class _Refused(asyncio.Protocol):
    """What a server at its handshake limit gives a new connection: an immediate close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def start_server(client_connected_cb: ClientConnected, host: str | None = None, port: int = 0, *,
                       configuration: MlsTlsConfiguration, handshake_timeout: float = 10.0,
                       max_handshakes: int = MAX_HANDSHAKES,
                       on_handshake_failure: Callable[[str], None] | None = None, **kwargs: Any) -> asyncio.Server:
    """Serve MLS-TLS; ``client_connected_cb`` runs once a connection's handshake is done (peer
    authenticated, keys confirmed).  A handshake that takes longer than ``handshake_timeout`` is
    dropped, and at most ``max_handshakes`` run at once.  ``on_handshake_failure`` is told why each
    failed handshake failed (the alert's name, ``"timeout"`` or ``"busy"``), for counters."""
    loop = asyncio.get_running_loop()
    _check_arguments("start_server", configuration, is_client=False, handshake_timeout=handshake_timeout,
                     asyncio_arguments=kwargs)
    if isinstance(max_handshakes, bool) or not isinstance(max_handshakes, int) or max_handshakes < 1:
        raise ConfigurationError(f"start_server: max_handshakes must be an int >= 1, not {max_handshakes!r}")
    tasks: set[asyncio.Task[None]] = set()
    handshaking: set[MlsTlsProtocol] = set()

    def factory() -> asyncio.Protocol:
        if len(handshaking) >= max_handshakes:
            log.warning("MLS-TLS server: %d handshakes already running; refusing a connection", len(handshaking))
            if on_handshake_failure is not None:
                on_handshake_failure("busy")
            return _Refused()
        protocol = MlsTlsProtocol(configuration)
        handshaking.add(protocol)
        protocol.handshake.add_done_callback(lambda _: handshaking.discard(protocol))
        task = loop.create_task(_serve_one(protocol, client_connected_cb, handshake_timeout, on_handshake_failure))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return protocol

    return await loop.create_server(factory, host, port, **kwargs)


async def _serve_one(protocol: MlsTlsProtocol, callback: ClientConnected, timeout: float,
                     on_failure: Callable[[str], None] | None) -> None:
    try:
        await asyncio.wait_for(protocol.handshake, timeout)
    except (HandshakeError, TimeoutError) as exc:
        peer = protocol.transport.get_extra_info("peername") if protocol.transport is not None else None
        hint = (" (a client with another --mode, --apq or --apq-suite?)"
                if isinstance(exc, HandshakeError) and exc.alert in _SETTINGS_HINTED and not exc.by_peer else "")
        _REFUSALS.log(f"handshake from {peer} failed: {exc or 'timed out'}{hint}")
        if on_failure is not None:
            on_failure(exc.alert.name.lower() if isinstance(exc, HandshakeError) else "timeout")
        if protocol.transport is not None:
            protocol.transport.close()
        return
    result = callback(protocol.reader, MlsTlsWriter(protocol))
    if asyncio.iscoroutine(result):
        await result
