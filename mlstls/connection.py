"""MLS in place of the TLS 1.3 handshake (draft-kohbrok-mls-tls-01) over a byte stream, sans-I/O.

One :class:`MlsTlsConnection` per TCP connection, driven like aioquic's
``QuicConnection``: feed it received bytes and the time, collect bytes to send
with :meth:`data_to_send` and events with :meth:`next_event`.  The MLS side is
a :class:`~mlscore.profile.TwoPartySession`, which outlives connections (a new
connection resumes it).

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
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from mlscore.errors import (
    CredentialError,
    CryptoError,
    DecodeError,
    InvalidSignatureError,
    MLSError,
    StateError,
    ValidationError,
)
from mlscore.framing import MLSMessage, PrivateMessage, PublicMessage
from mlscore.profile import (
    KeysChanged,
    ProfileConfig,
    SendMessage,
    State,
    TwoPartySession,
    persist_to,
)
from mlscore.profile_wire import MessageBuffer, ProfileMessage, ProfileMessageType
from mlscore.store import SessionStore

if TYPE_CHECKING:
    from .alongside import TlsSettings

from .record import (
    MAX_PLAINTEXT,
    SUITE_AEADS,
    ContentType,
    RecordProtection,
    RecordSplitter,
    plaintext_records,
)

log = logging.getLogger(__name__)

CLIENT_LABEL = "MLS-TLS c ap traffic"
SERVER_LABEL = "MLS-TLS s ap traffic"
KEY_SWITCH_FRAME = b"\x18\x00"
"""Our transport frame (type 24, as TLS KeyUpdate): 'my next records use the new epoch'."""
REKEY_MARGIN = 1 << 20
"""Start a rekey this many records before the key-usage limit (RFC 8446 section 5.5)."""


class AlertDescription(IntEnum):
    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    ILLEGAL_PARAMETER = 47
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    INTERNAL_ERROR = 80


def alert_for(error: Exception) -> AlertDescription:
    """The TLS alert that names a failure best."""
    for kind, alert in ((CredentialError, AlertDescription.BAD_CERTIFICATE),
                        (InvalidSignatureError, AlertDescription.DECRYPT_ERROR),
                        (CryptoError, AlertDescription.BAD_RECORD_MAC),
                        (DecodeError, AlertDescription.DECODE_ERROR),
                        (StateError, AlertDescription.UNEXPECTED_MESSAGE),
                        (ValidationError, AlertDescription.ILLEGAL_PARAMETER)):
        if isinstance(error, kind):
            return alert
    return AlertDescription.INTERNAL_ERROR


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
class ConnectionTerminated:
    alert: AlertDescription
    reason: str
    by_peer: bool


Event = HandshakeCompleted | DataReceived | EpochChanged | ConnectionTerminated


@dataclass(frozen=True)
class MlsTlsConfiguration:
    """Settings of one endpoint, in the style of aioquic's QuicConfiguration.

    ``store`` keeps the group between connections; a client with
    ``resume_group_id`` set resumes that group instead of running phase 1.
    """

    profile: ProfileConfig
    is_client: bool = True
    store: SessionStore | None = None
    resume_group_id: bytes | None = None
    padding: int = 0
    tls: TlsSettings | None = None
    """Set for MLS *alongside* TLS 1.3 (mlstls.alongside); None for MLS in place of TLS."""


class MlsTlsConnection:
    """One MLS-TLS connection (either side)."""

    def __init__(self, configuration: MlsTlsConfiguration, *, session: TwoPartySession | None = None,
                 binding: bytes = b"") -> None:
        self.configuration = configuration
        self.binding = binding  # MLS-Exporter context: empty per the draft, the TLS exporter alongside TLS
        self.is_client = configuration.is_client
        self.session = session
        self._splitter = RecordSplitter()
        self._frames = MessageBuffer()
        self._send: RecordProtection | None = None
        self._recv: RecordProtection | None = None
        self._pending_recv: RecordProtection | None = None
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._resumed = False
        self._handshake_done = False
        self.closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.last_rekey: float | None = None
        self._now: float = 0.0

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"MlsTlsConnection({side}, epoch={self.epoch}, established={self.established})"

    # -- public API ------------------------------------------------------------------

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
        config = self.configuration
        state = None
        if config.resume_group_id is not None and config.store is not None:
            state = config.store.load(config.resume_group_id)
        if state is not None:
            self.session = TwoPartySession.from_state(state, config.profile, on_state_change=self._persist())
            self._resumed = True
            self._run(self.session.resume)
        else:
            self.session, actions = TwoPartySession.initiator(config.profile, on_state_change=self._persist())
            self._act(actions)

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
        except MLSError as exc:
            self._fail(exc)

    def send_data(self, data: bytes) -> None:
        """Application bytes; rekeys by policy and before the key-usage limit."""
        if self.closed:
            raise StateError("the connection is closed")
        if self._send is None:
            raise StateError("the handshake has not completed")
        view = memoryview(data)
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._out.append(self._send.seal(ContentType.APPLICATION_DATA, bytes(view[start : start + MAX_PLAINTEXT]),
                                             self.configuration.padding))
        self.bytes_sent += len(data)
        self._maybe_rekey(len(data))

    def rekey(self) -> None:
        """Start a PCS rekey now (a ConnectionUpdate), if the session is synced."""
        if self.session is not None and self.session.state is State.SYNCED and self._send is not None:
            self._run(self.session.update)

    def close(self) -> None:
        """Send close_notify; the group state stays stored for a later resumption."""
        if self.closed:
            return
        self._alert(AlertDescription.CLOSE_NOTIFY, warning=True)
        self._terminate(AlertDescription.CLOSE_NOTIFY, "closed locally", by_peer=False)

    def connection_lost(self) -> None:
        """The transport went away; the session keeps its state for resumption."""
        if self.session is not None:
            self.session.connection_lost()
        if not self.closed:
            self._terminate(AlertDescription.CLOSE_NOTIFY, "transport lost", by_peer=True)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def poll(self, now: float) -> None:
        """Let the time-based rekey policy act (call it from a timer)."""
        self._now = now
        self._maybe_rekey(0)

    # -- records ---------------------------------------------------------------------

    def _record(self, header: bytes, body: bytes) -> None:
        kind = header[0]
        if kind == ContentType.APPLICATION_DATA:
            if self._recv is None:
                raise StateError("protected record before keys were established")
            content_type, payload = self._recv.open(header, body)
        elif self._recv is not None:
            raise StateError("plaintext record after keys were established")
        else:
            content_type, payload = ContentType(kind), body
        if content_type == ContentType.APPLICATION_DATA:
            if payload:
                self._events.append(DataReceived(bytes(payload)))
        elif content_type == ContentType.HANDSHAKE:
            for frame in self._frames.feed_frames(bytes(payload)):
                self._frame(frame)
        elif content_type == ContentType.ALERT:
            self._peer_alert(bytes(payload))
        else:
            raise StateError(f"unexpected record content type {content_type}")

    def _frame(self, frame: bytes) -> None:
        if frame == KEY_SWITCH_FRAME:
            if self._pending_recv is None:
                raise StateError("key switch without a confirmed new epoch")
            self._recv, self._pending_recv = self._pending_recv, None
            return
        message = ProfileMessage.from_bytes(frame)
        if self.session is None:
            self._start_server_session(message)
        assert self.session is not None
        self._act(self.session.receive(message))

    def _start_server_session(self, message: ProfileMessage) -> None:
        config = self.configuration
        if message.msg_type == ProfileMessageType.CLIENT_HELLO:
            self.session = TwoPartySession.responder(config.profile, on_state_change=self._persist())
            return
        if message.msg_type != ProfileMessageType.RESUMPTION_REQUEST:
            raise StateError(f"a connection must start with ClientHello or ResumptionRequest, "
                             f"not {message.msg_type.name}")
        group_id = _group_id_of(message.body)
        state = config.store.load(group_id) if config.store is not None else None
        if state is None:
            raise ValidationError(f"no stored session for group {group_id.hex()}")
        self.session = TwoPartySession.from_state(state, config.profile, on_state_change=self._persist())
        self.session.connection_lost()
        self._resumed = True

    # -- acting on the session -----------------------------------------------------------

    def _run(self, step) -> None:
        try:
            self._act(step())
        except MLSError as exc:
            self._fail(exc)

    def _act(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                self._send_handshake(action.data)
            elif isinstance(action, KeysChanged):
                self._install(action.epoch, action.reason)

    def _send_handshake(self, data: bytes) -> None:
        if self._send is None:
            self._out.append(plaintext_records(ContentType.HANDSHAKE, data))
            return
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._out.append(self._send.seal(ContentType.HANDSHAKE, data[start : start + MAX_PLAINTEXT]))

    def _install(self, epoch: int, reason: str) -> None:
        assert self.session is not None and self.session.group is not None
        suite_id = self.session.group.suite.id
        length = self.session.group.suite.hash_len
        spec = SUITE_AEADS[suite_id]
        client = RecordProtection(spec, self.session.export_secret(CLIENT_LABEL, self.binding, length), epoch=epoch)
        server = RecordProtection(spec, self.session.export_secret(SERVER_LABEL, self.binding, length), epoch=epoch)
        mine, theirs = (client, server) if self.is_client else (server, client)
        self.last_rekey = self._now
        if self._send is None:
            self._send, self._recv = mine, theirs
            self._handshake_done = True
            self._events.append(HandshakeCompleted(epoch, self._resumed))
            log.info("MLS-TLS keys established at epoch %d (%s)", epoch, reason)
            return
        self._send_handshake(KEY_SWITCH_FRAME)
        self._send, self._pending_recv = mine, theirs
        self._events.append(EpochChanged(epoch, reason))
        log.info("MLS-TLS switched to epoch %d (%s)", epoch, reason)

    def _maybe_rekey(self, sent: int) -> None:
        session = self.session
        if session is None or self._send is None or session.state is not State.SYNCED:
            return
        if session.rekey_due(self._now, sent) or self._send.remaining < REKEY_MARGIN:
            self._run(session.update)

    def _persist(self):
        store = self.configuration.store
        return persist_to(store) if store is not None else None

    # -- alerts and failure --------------------------------------------------------------

    def _alert(self, description: AlertDescription, *, warning: bool = False) -> None:
        payload = bytes([1 if warning else 2, description])
        if self._send is not None:
            self._out.append(self._send.seal(ContentType.ALERT, payload))
        else:
            self._out.append(plaintext_records(ContentType.ALERT, payload))

    def _peer_alert(self, payload: bytes) -> None:
        if len(payload) != 2:
            raise DecodeError("malformed alert")
        try:
            description = AlertDescription(payload[1])
        except ValueError:
            description = AlertDescription.INTERNAL_ERROR
        reason = "peer closed" if description == AlertDescription.CLOSE_NOTIFY else f"peer sent {description.name}"
        self._terminate(description, reason, by_peer=True)

    def _fail(self, error: Exception) -> None:
        description = alert_for(error)
        log.warning("MLS-TLS connection failed: %s: %s", type(error).__name__, error)
        with contextlib.suppress(MLSError):
            self._alert(description)
        self._terminate(description, f"{type(error).__name__}: {error}", by_peer=False)

    def _terminate(self, description: AlertDescription, reason: str, *, by_peer: bool) -> None:
        self.closed = True
        self._send = self._recv = self._pending_recv = None
        self._events.append(ConnectionTerminated(description, reason, by_peer))


def _group_id_of(body: bytes) -> bytes:
    message = MLSMessage.from_bytes(body)
    if isinstance(message.body, PrivateMessage):
        return message.body.group_id
    if isinstance(message.body, PublicMessage):
        return message.body.content.group_id
    raise ValidationError("a ResumptionRequest must carry a commit")
