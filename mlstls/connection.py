"""MLS in place of the TLS 1.3 handshake (draft-kohbrok-mls-tls-01) over a byte stream, sans-I/O.

One :class:`MlsTlsConnection` per TCP connection, driven like aioquic's
``QuicConnection``: feed it received bytes and the time, collect bytes to send
with :meth:`data_to_send` and events with :meth:`next_event`.  The MLS side is
a :class:`~mls2p.session.TwoPartySession`, which outlives connections (a new
connection resumes it); :class:`~mls2p.bootstrap.ProfileEndpoint` starts,
resumes, stores and rekeys it exactly as mlsquic does.

Wire format (docs/tls.md): until keys exist, profile messages travel in
TLSPlaintext records of type handshake; afterwards everything is a protected
TLS 1.3 record (RFC 8446 section 5), keyed per direction from
``MLS-Exporter("MLS-TLS c ap traffic" | "MLS-TLS s ap traffic", "", Hash.length)``.
Handshake-type content is a stream of profile messages plus one frame of our
own, the *key switch* (type 24, empty): its sender protects everything after
it with the new epoch's keys, so each direction switches exactly at a known
point in the stream (the profile switches both directions together, which a
byte stream cannot express without such a marker).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mls2p.bootstrap import ProfileEndpoint
from mls2p.errors import AlertDescription, InternalError, StateError, alert_for, as_project_error
from mls2p.session import KeysChanged, SendMessage, SessionAction, TwoPartySession
from mls2p.trust import watch_trust
from mls2p.wire import MessageBuffer, ProfileMessageType
from mlscore.errors import MLSError

from .config import MlsTlsConfiguration
from .errors import RecordError, UnexpectedMessage
from .record import (
    MAX_PLAINTEXT,
    ContentType,
    RecordProtection,
    RecordSplitter,
    aead_spec,
    plaintext_records,
)

log = logging.getLogger(__name__)

CLIENT_LABEL = "MLS-TLS c ap traffic"
SERVER_LABEL = "MLS-TLS s ap traffic"
KEY_SWITCH_FRAME = b"\x18\x00"
"""Our transport frame (type 24, as TLS KeyUpdate): 'my next records use the new epoch'."""
KEY_CONFIRM_FRAME = b"\x19\x00"
"""Our transport frame (type 25): the client's first protected record after phase 1, so the server
learns at once that the client holds the keys (like TLS Finished); any record would prove it."""
_NEEDS_AN_ANSWER = frozenset({ProfileMessageType.CONNECTION_UPDATE, ProfileMessageType.COMMIT_REQUEST})
"""Profile messages that make us send (an EpochKeyUpdate, a commit): left unprocessed after our close_notify."""
REKEY_MARGIN = 1 << 20
"""Start a rekey this many records before the key-usage limit (RFC 8446 section 5.5)."""


# -- events ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HandshakeCompleted:
    epoch: int
    resumed: bool


@dataclass(frozen=True)
class DataReceived:
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class EpochChanged:
    """Our sending keys now come from ``epoch`` (a PCS rekey took effect)."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class StreamEnded:
    """The peer's close_notify arrived under the keys: it sends nothing more, and we may still send
    (a half-close, RFC 8446 section 6.1) until our own :meth:`MlsTlsConnection.close`."""


@dataclass(frozen=True)
class ConnectionTerminated:
    alert: AlertDescription
    reason: str
    by_peer: bool
    authenticated: bool = True
    """False when the peer's alert came in plaintext (before keys were confirmed): anyone on the path could
    have sent it, so it may end this connection attempt and nothing more (never a stored session)."""


Event = HandshakeCompleted | DataReceived | EpochChanged | StreamEnded | ConnectionTerminated


class MlsTlsConnection:
    """One MLS-TLS connection (either side)."""

    def __init__(self, configuration: MlsTlsConfiguration, *, tls_binding: bytes | None = None) -> None:
        self.configuration = configuration
        # Alongside TLS 1.3, the TLS exporter value: the MLS-Exporter context and the salt the record
        # secrets are extracted with (docs/alongside.md).  None in place of TLS (the draft's derivation).
        self.tls_binding = tls_binding
        self.is_client = configuration.is_client
        self.endpoint = ProfileEndpoint(configuration.profile, is_client=configuration.is_client,
                                        store=configuration.store, resume_group_id=configuration.resume_group_id)
        self._splitter = RecordSplitter()
        self._frames = MessageBuffer()
        self._send: RecordProtection | None = None
        self._recv: RecordProtection | None = None
        self._pending_recv: RecordProtection | None = None
        self._out: list[bytes | bytearray] = []  # whole records: plaintext ones first, then only protected ones
        self._plaintext_out = 0  # how many of _out (from the front) are plaintext records
        self._events: deque[Event] = deque()
        self.closed = False
        self.write_closed = False
        """We sent close_notify with :meth:`send_eof`: nothing more goes out, the peer's records still come in."""
        self.read_closed = False
        """The peer's close_notify arrived (:class:`StreamEnded`): nothing more comes in, we may still send."""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.last_rekey: float | None = None
        self._now: float = 0.0
        self.wakeup: Callable[[], None] | None = None
        """Sends what the connection queued outside ``receive_data`` (the asyncio protocol sets its flush)."""
        self._recheck_trust = False
        """The trust configuration was replaced during the handshake: check the peer again at confirmation."""
        watch_trust(configuration.profile.authentication_service, self)

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"MlsTlsConnection({side}, epoch={self.epoch}, established={self.established})"

    # -- public API ------------------------------------------------------------------

    @property
    def session(self) -> TwoPartySession | None:
        return self.endpoint.session

    @property
    def established(self) -> bool:
        return self._send is not None and not self.closed

    @property
    def epoch(self) -> int | None:
        return self._send.epoch if self._send else None

    def connect(self, now: float = 0.0) -> None:
        """Client: send the ClientHello, or a ResumptionRequest for a stored group."""
        if not self.is_client:
            raise StateError("only the client connects")
        self._now = now
        self._run(self.endpoint.start)

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Bytes from the socket; errors close the connection with an alert, never raise."""
        if self.closed:
            return
        self._now = now
        self.bytes_received += len(data)
        try:
            for header, body in self._splitter.feed(data):
                self._record(header, body)
                if self.closed:
                    return
        except Exception as exc:  # never raises: anything, ours or a library's, closes with an alert
            self._fail(as_project_error(exc))

    def send_data(self, data: bytes, now: float | None = None) -> None:
        """Application bytes; rekeys by policy and before the key-usage limit.

        ``now`` (the transport's clock) lets a side that only sends rekey on time too.
        """
        if now is not None:
            self._now = now
        if self.closed:
            raise StateError("the connection is closed")
        if self._send is None:
            raise StateError("the handshake has not completed")
        if self.write_closed:
            raise StateError("cannot send after send_eof(): close_notify was sent")
        view = memoryview(data)
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._out.append(self._send.seal(ContentType.APPLICATION_DATA, view[start : start + MAX_PLAINTEXT],
                                             self.configuration.padding))
        self.bytes_sent += len(data)
        self.endpoint.record_sent(len(data))
        self._maybe_rekey()

    def rekey(self, *, full: bool = False) -> None:
        """Start a PCS rekey now: our own ConnectionUpdate, whoever's turn it is, if the session is synced
        (and neither side has half-closed: the rekey could not complete).  ``full``: a FULL commit in an APQ
        session (docs/pq.md)."""
        if self._send is not None and not self.closed and not self.write_closed and not self.read_closed:
            self._run(lambda: self.endpoint.rekey(full=full, now=self._now))

    def close(self) -> None:
        """Send close_notify (unless :meth:`send_eof` did) and end; the group state stays stored for a later
        resumption."""
        if self.closed:
            return
        if not self.write_closed:
            self._alert(AlertDescription.CLOSE_NOTIFY, warning=True)
        self._terminate(AlertDescription.CLOSE_NOTIFY, "closed locally", by_peer=False)

    def send_eof(self) -> None:
        """Half-close: send close_notify and keep reading the peer's records (RFC 8446 section 6.1).

        Nothing follows it from our side: no data, and no answer to a rekey (a peer's ConnectionUpdate
        or CommitRequest that arrives afterwards is left unprocessed, so neither session moves to an
        epoch the other cannot confirm).  Once the peer's close_notify arrives too, the connection ends.
        """
        if self.closed or self.write_closed:
            return
        if self._send is None:
            raise StateError("the handshake has not completed")
        self._alert(AlertDescription.CLOSE_NOTIFY, warning=True)
        self.write_closed = True
        if self.read_closed:
            self._terminate(AlertDescription.CLOSE_NOTIFY, "closed both ways", by_peer=False)

    def connection_lost(self) -> None:
        """The transport went away; the session keeps its state for resumption."""
        self.endpoint.connection_lost()
        if not self.closed:
            self._terminate(AlertDescription.CLOSE_NOTIFY, "transport lost", by_peer=True)

    def data_to_send(self) -> bytes:
        plaintext, protected = self.records_to_send()
        return plaintext + protected

    def records_to_send(self) -> tuple[bytes, bytes]:
        """What :meth:`data_to_send` returns, cut where protected records begin.

        Plaintext records (before keys exist) always precede protected ones;
        the alongside transport sends the first inside TLS, the second on TCP.
        """
        plaintext = b"".join(self._out[: self._plaintext_out])
        protected = b"".join(self._out[self._plaintext_out :])
        self._out.clear()
        self._plaintext_out = 0
        return plaintext, protected

    def _queue_plaintext(self, content_type: ContentType, data: bytes) -> None:
        if len(self._out) != self._plaintext_out:
            raise InternalError("a plaintext record would follow protected ones")
        self._out.append(plaintext_records(content_type, data))
        self._plaintext_out += 1

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`poll` next has work (a due rekey, an unanswered CommitRequest, a held peer commit)."""
        return None if self.closed else self.endpoint.next_timer(self._now)

    def poll(self, now: float) -> None:
        """Timers: the time-based rekey policy, an unanswered CommitRequest, a peer commit held by its
        budget (call at :meth:`get_timer`, or periodically)."""
        self._now = now
        if self._send is not None and not self.closed and not self.write_closed and not self.read_closed:
            self._run(lambda: self.endpoint.poll(now))
        self._maybe_rekey()

    def trust_changed(self) -> None:
        """The trust configuration was replaced (mls2p.trust.TrustPolicy.replace): close if the peer is out.

        A confirmed connection is checked at once; one still in its handshake (whose peer was validated
        under the configuration replaced) is checked again when it is confirmed, before any of the peer's
        data is delivered.
        """
        if self.closed:
            return
        if not self.endpoint.confirmed:
            self._recheck_trust = True
            return
        try:
            self.endpoint.check_peer()
        except MLSError as exc:
            log.warning("trust configuration replaced: closing the connection of a peer no longer trusted (%s)", exc)
            self._fail(exc)
            if self.wakeup is not None:
                self.wakeup()

    # -- records ---------------------------------------------------------------------

    def _record(self, header: bytes, body: bytes) -> None:
        kind = header[0]
        if self.read_closed:
            raise UnexpectedMessage("a record after the peer's close_notify")
        payload: bytes | memoryview
        if kind == ContentType.APPLICATION_DATA:
            if self._recv is None:
                raise UnexpectedMessage("protected record before keys were established")
            content_type, payload = self._recv.open(header, body)
            if not self.endpoint.confirmed:
                self._confirmed()  # the peer's first record under the new keys: it holds them
        elif kind == ContentType.ALERT and not self.endpoint.confirmed:
            # The peer may refuse us before it has our keys (a client refusing the server's
            # identity): its alert is in plaintext, and it says why it closed.
            content_type, payload = ContentType.ALERT, body
        elif self._recv is not None:
            raise UnexpectedMessage("plaintext record after keys were established")
        else:
            content_type, payload = ContentType(kind), body
        if content_type == ContentType.APPLICATION_DATA:
            if payload:
                self._events.append(DataReceived(bytes(payload)))
        elif content_type == ContentType.HANDSHAKE and self.write_closed:
            self._after_our_eof(bytes(payload))
        elif content_type == ContentType.HANDSHAKE:
            for frame in self._frames.feed_frames(bytes(payload)):
                self._frame(frame)
        elif content_type == ContentType.ALERT:
            self._peer_alert(bytes(payload), authenticated=kind == ContentType.APPLICATION_DATA)
        else:
            raise UnexpectedMessage(f"unexpected record content type {content_type}")

    def _after_our_eof(self, payload: bytes) -> None:
        """Profile messages after our close_notify: only those that need no answer are processed."""
        for frame in self._frames.feed_frames(payload):
            if frame[0] in _NEEDS_AN_ANSWER:
                log.info("ignoring a %s after our close_notify: we cannot answer it",
                         ProfileMessageType(frame[0]).name.lower())
                continue
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        if frame == KEY_CONFIRM_FRAME:
            if self.is_client or self.endpoint.resumed:
                raise UnexpectedMessage("key confirmation from the server, or on a resumed connection")
            return  # its record already confirmed the client
        if frame == KEY_SWITCH_FRAME:
            if self._pending_recv is None:
                raise UnexpectedMessage("key switch without a confirmed new epoch")
            self._recv, self._pending_recv = self._pending_recv, None
            return
        actions = self.endpoint.receive(frame, self._now)
        if self.endpoint.confirmed:
            self._check_trust_again()  # (a client, or a resuming server, is confirmed by a profile message)
        self._act(actions)

    def _check_trust_again(self) -> None:
        """The trust configuration changed while the handshake ran: the peer must pass the one in force now
        (MLSError, which closes the connection, if not)."""
        if self._recheck_trust:
            self._recheck_trust = False
            self.endpoint.check_peer()

    # -- acting on the session -----------------------------------------------------------

    def _run(self, step: Callable[[], list[SessionAction]]) -> None:
        try:
            self._act(step())
        except Exception as exc:
            self._fail(as_project_error(exc))

    def _act(self, actions: list[SessionAction]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                self._send_handshake(action.data)
            elif isinstance(action, KeysChanged):
                self._install(action.epoch, action.reason)

    def _send_handshake(self, data: bytes) -> None:
        if self.write_closed:
            raise InternalError("a profile message after our close_notify")
        if self._send is None:
            self._queue_plaintext(ContentType.HANDSHAKE, data)
            return
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._out.append(self._send.seal(ContentType.HANDSHAKE, data[start : start + MAX_PLAINTEXT]))

    def _install(self, epoch: int, reason: str) -> None:
        session = self.endpoint.session
        assert session is not None and session.group is not None
        spec = aead_spec(session.group.suite.id)
        client = RecordProtection(spec, self.traffic_secret(CLIENT_LABEL), epoch=epoch)
        server = RecordProtection(spec, self.traffic_secret(SERVER_LABEL), epoch=epoch)
        mine, theirs = (client, server) if self.is_client else (server, client)
        self.last_rekey = self._now
        if self._send is None:
            self._send, self._recv = mine, theirs
            log.info("MLS-TLS keys established at epoch %d (%s)", epoch, reason)
            if self.is_client and not self.endpoint.resumed:
                self._send_handshake(KEY_CONFIRM_FRAME)
            if self.endpoint.confirmed:
                self._events.append(HandshakeCompleted(epoch, self.endpoint.resumed))
            return
        if self.write_closed:
            # Our close_notify is out (a rekey of ours was in flight when we half-closed): nothing more may
            # follow it, not even the key switch.  Only the peer's records move to the new epoch, at its
            # key switch; ours stay as they were (we send nothing more).
            self._pending_recv = theirs
            log.info("MLS-TLS epoch %d confirmed after our close_notify: only the peer's records switch (%s)",
                     epoch, reason)
            return
        self._send_handshake(KEY_SWITCH_FRAME)
        self._send, self._pending_recv = mine, theirs
        self._events.append(EpochChanged(epoch, reason))
        log.info("MLS-TLS switched to epoch %d (%s)", epoch, reason)

    def traffic_secret(self, label: str) -> bytes:
        """The current epoch's record secret for one direction (``CLIENT_LABEL`` or ``SERVER_LABEL``).

        In place of TLS: ``MLS-Exporter(label, "", Nh)`` (draft-kohbrok-mls-tls-01).  Alongside TLS:
        ``HKDF-Extract(salt=tls_binding, IKM=MLS-Exporter(label, tls_binding, Nh))``, secret while
        either the TLS connection or the MLS epoch is (docs/alongside.md).
        """
        session = self.endpoint.session
        assert session is not None and session.group is not None
        suite = session.group.suite
        if self.tls_binding is None:
            return session.export_secret(label, b"", suite.hash_len)
        return suite.kdf_extract(self.tls_binding, session.export_secret(label, self.tls_binding, suite.hash_len))

    def _confirmed(self) -> None:
        """A phase-1 server's client has proven it holds the keys: store, tell the application, rekey."""
        self._check_trust_again()
        actions = self.endpoint.peer_confirmed()
        assert self._send is not None
        self._events.append(HandshakeCompleted(self._send.epoch, self.endpoint.resumed))
        log.info("MLS-TLS client confirmed the keys of epoch %d", self._send.epoch)
        self._act(actions)

    def _maybe_rekey(self) -> None:
        if self._send is None or self.closed or self.write_closed or self.read_closed:
            return  # a half-closed connection cannot complete a rekey: one side no longer speaks
        if self.endpoint.rekey_due(self._now) or self._send.remaining < REKEY_MARGIN:
            self._run(lambda: self.endpoint.want_new_keys(self._now))

    # -- alerts and failure --------------------------------------------------------------

    def _alert(self, description: AlertDescription, *, warning: bool = False) -> None:
        payload = bytes([1 if warning else 2, description])
        if self._send is not None:
            self._out.append(self._send.seal(ContentType.ALERT, payload))
        else:
            self._queue_plaintext(ContentType.ALERT, payload)

    def _peer_alert(self, payload: bytes, *, authenticated: bool) -> None:
        if len(payload) != 2:
            raise RecordError("malformed alert")
        try:
            description = AlertDescription(payload[1])
        except ValueError:
            description = AlertDescription.INTERNAL_ERROR
        if (description == AlertDescription.CLOSE_NOTIFY and authenticated and self._send is not None
                and not self.write_closed):
            self.read_closed = True  # a half-close: the peer may still read what we send
            self._recv = self._pending_recv = None
            self._events.append(StreamEnded())
            return
        reason = "peer closed" if description == AlertDescription.CLOSE_NOTIFY else f"peer sent {description.name}"
        if not authenticated:
            reason += " (unauthenticated: in plaintext)"
        self._terminate(description, reason, by_peer=True, authenticated=authenticated)

    def _fail(self, error: MLSError) -> None:
        description = alert_for(error)
        # Info, not warning: whoever runs the connection reports it once (the asyncio server, rate-limited;
        # a client, by raising HandshakeError or closing its stream with the reason).
        log.info("MLS-TLS connection failed: %s: %s", type(error).__name__, error,
                 exc_info=log.isEnabledFor(logging.DEBUG) and isinstance(error, InternalError))
        if not self.write_closed:  # nothing may follow our close_notify, not even an alert
            with contextlib.suppress(MLSError):
                self._alert(description)
        self._terminate(description, f"{type(error).__name__}: {error}", by_peer=False)

    def _terminate(self, description: AlertDescription, reason: str, *, by_peer: bool,
                   authenticated: bool = True) -> None:
        self.closed = True
        self._send = self._recv = self._pending_recv = None
        self._events.append(ConnectionTerminated(description, reason, by_peer, authenticated))
