"""MLS inside the TLS 1.3 handshake (draft-housley-tls-using-mls-handshake-00), sans-I/O (docs/housley.md).

The TLS 1.3 handshake stays; the client's KeyPackage rides in the
``tls_using_mls_handshake`` extension of its ClientHello, the server's Welcome
in the same extension of its ServerHello, and the MLS exporter of the joined
epoch takes the place of the (EC)DHE secret in the key schedule
(:mod:`mlstls.housley_schedule`).  No Certificate, no CertificateVerify: the MLS
credentials are the one trust decision (mls2p.trust), and each Finished proves
its sender holds the epoch.  Later epochs travel as ``mls_handshake``
post-handshake messages (ConnectionUpdate, EpochKeyUpdate, CommitRequest and
our key switch) and give both directions new application traffic secrets.

A resumption is a full handshake too: the extension carries the profile's
ResumptionRequest (ClientHello) and ResumptionResponse (ServerHello), the
handshake's secret comes from the epoch the request makes, and application
data waits for the epoch the response makes (confirmed by the client's
EpochKeyUpdate right after its Finished).

Like :class:`mlstls.connection.MlsTlsConnection` (same events, same
:class:`~mls2p.bootstrap.ProfileEndpoint`): feed :meth:`receive_data`, send
:meth:`data_to_send`, read :meth:`next_event`.  TLS messages and record
protection are tlslite-ng's (:mod:`mlstls._tlslite_compat`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections import deque
from collections.abc import Callable
from enum import Enum

from mls2p.bootstrap import ProfileEndpoint
from mls2p.errors import AlertDescription, InternalError, StateError, alert_for, as_project_error
from mls2p.session import KeysChanged, SendMessage, SessionAction, TwoPartySession
from mls2p.trust import watch_trust
from mls2p.wire import MAX_MESSAGE_SIZE, ProfileMessage, ProfileMessageType
from mlscore.apq import is_message_pair
from mlscore.codec import Reader, Writer
from mlscore.errors import DecodeError, ValidationError
from mlscore.framing import WireFormat

from ._tlslite_compat import (
    ClientHello,
    ClientKeyShareExtension,
    ContentType,
    EncryptedExtensions,
    ExtensionType,
    Finished,
    GroupName,
    HandshakeType,
    KeyShareEntry,
    NewSessionTicket,
    Records,
    ServerHello,
    SrvSupportedVersionsExtension,
    SupportedGroupsExtension,
    SupportedVersionsExtension,
    TLSExtension,
    as_mls_error,
    parse,
)
from .config import HousleyConfig, MlsTlsConfiguration
from .connection import ConnectionTerminated, DataReceived, EpochChanged, Event, HandshakeCompleted, StreamEnded
from .errors import TlsAlert, UnexpectedMessage
from .housley_schedule import (
    EXPORTER_LABEL,
    TLS_SUITES,
    TlsSuite,
    application_secrets,
    epoch_application_secrets,
    finished_mac,
    handshake_secret,
    next_traffic_secret,
    traffic_secrets,
)
from .record import MAX_PLAINTEXT

log = logging.getLogger(__name__)

TLS13 = (3, 4)
LEGACY_VERSION = (3, 3)
MLS10 = 1
HELLO_RETRY_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
"""RFC 8446 section 4.1.3: the ServerHello.random of a HelloRetryRequest."""
GROUP_ID_PREFIX = b"tls13"
HANDSHAKE_LIMIT = (1 << 16) + 4096
"""Largest handshake message accepted before the handshake completes (decode_error above it)."""


class _State(Enum):
    START = "start"
    WAIT_CLIENT_HELLO = "waiting for ClientHello"
    WAIT_SERVER_HELLO = "waiting for ServerHello"
    WAIT_ENCRYPTED_EXTENSIONS = "waiting for EncryptedExtensions"
    WAIT_SERVER_FINISHED = "waiting for the server's Finished"
    WAIT_CLIENT_FINISHED = "waiting for the client's Finished"
    CONNECTED = "connected"


_EXPECTED = {
    _State.WAIT_CLIENT_HELLO: HandshakeType.client_hello,
    _State.WAIT_SERVER_HELLO: HandshakeType.server_hello,
    _State.WAIT_ENCRYPTED_EXTENSIONS: HandshakeType.encrypted_extensions,
    _State.WAIT_SERVER_FINISHED: HandshakeType.finished,
    _State.WAIT_CLIENT_FINISHED: HandshakeType.finished,
}
"""The one handshake message each state accepts (anything else: unexpected_message)."""


def extension_message(data: bytes, *, from_client: bool) -> ProfileMessage:
    """The profile message an extension carries, told apart by its MLSMessage wire format: KeyPackages (a
    ClientHello) or a Welcome (a ServerHello) in a fresh handshake, a commit in a resumption; an APQ pair by
    the wire format of its halves."""
    if len(data) < 4:
        raise DecodeError("the tls_using_mls_handshake extension is too short for an MLSMessage")
    pair = is_message_pair(data)  # then its halves' wire format says what it carries
    wire_format = int.from_bytes(data[4:6] if pair else data[2:4], "big")
    if wire_format in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
        kind = ProfileMessageType.RESUMPTION_REQUEST if from_client else ProfileMessageType.RESUMPTION_RESPONSE
    elif wire_format == (WireFormat.KEY_PACKAGE if from_client else WireFormat.WELCOME):
        kind = ProfileMessageType.CLIENT_HELLO if from_client else ProfileMessageType.SERVER_HELLO
    elif wire_format not in WireFormat.__members__.values():
        raise DecodeError(f"the tls_using_mls_handshake extension holds no MLSMessage (wire format {wire_format})")
    else:
        raise ValidationError(f"the tls_using_mls_handshake extension carries wire format {wire_format}, which "
                              f"the {'ClientHello' if from_client else 'ServerHello'} does not")
    return ProfileMessage(kind, data)


class HousleyConnection:
    """One connection in the Housley mode (either side)."""

    def __init__(self, configuration: MlsTlsConfiguration) -> None:
        self.configuration = configuration
        self.housley = configuration.housley or HousleyConfig()
        self.is_client = configuration.is_client
        # draft section 4: the group_id MUST contain "tls13"; ours start with it (and a client refuses others)
        profile = dataclasses.replace(configuration.profile, group_id_prefix=GROUP_ID_PREFIX)
        self.endpoint = ProfileEndpoint(profile, is_client=configuration.is_client,
                                        store=configuration.store, resume_group_id=configuration.resume_group_id)
        self._records = Records(is_client=self.is_client)
        self._state = _State.START if self.is_client else _State.WAIT_CLIENT_HELLO
        self._handshake_buffer = bytearray()
        self._transcript = bytearray()
        self._tls_suite: TlsSuite | None = None
        self._secrets: dict[str, bytes] = {}  # handshake secrets, until the handshake completes
        self._frozen_transcript = b""  # TH_SF
        self._epoch: int | None = None  # the epoch our writes use
        self._pending_read: tuple[int, bytes] | None = None  # the peer's next epoch and secret, until its switch
        self._write_secret = b""  # the traffic secrets in force per direction (RFC 8446 KeyUpdate ratchets them)
        self._read_secret = b""
        self._read_epoch: int | None = None
        self._resumption_epoch: int | None = None  # resumed: the epoch application data may start at
        self._session_id = b""
        self._read_keys_changed = False  # our read keys changed while a record's handshake bytes were read
        self._profile_actions: list[SessionAction] = []  # the ServerHello's actions for after Finished
        self._events: deque[Event] = deque()
        self._now = 0.0
        self.closed = False
        self.write_closed = False
        """We sent close_notify (:meth:`send_eof`): nothing more goes out; the peer's records still come in."""
        self.read_closed = False
        """The peer's close_notify arrived (StreamEnded): nothing more comes in; we may still send."""
        self._recheck_trust = False  # the trust configuration changed during the handshake
        self.bytes_sent = 0
        self.bytes_received = 0
        self.wakeup: Callable[[], None] | None = None
        watch_trust(configuration.profile.authentication_service, self)

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        return f"HousleyConnection({side}, state={self._state.value}, epoch={self._epoch})"

    # -- public API ------------------------------------------------------------------

    @property
    def session(self) -> TwoPartySession | None:
        return self.endpoint.session

    @property
    def established(self) -> bool:
        return self._state is _State.CONNECTED and not self.closed and self._data_allowed()

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def tls_suite(self) -> int | None:
        return self._tls_suite.code if self._tls_suite else None

    def connect(self, now: float = 0.0) -> None:
        """Client: the ClientHello, with our KeyPackage(s), or a ResumptionRequest for a stored group."""
        if not self.is_client or self._state is not _State.START:
            raise StateError("only a client connects, once")
        self._now = now
        self._guard(self._send_client_hello)

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Bytes from the socket; errors close the connection with an alert, never raise."""
        if self.closed:
            return
        self._now = now
        self.bytes_received += len(data)
        self._records.feed(data)
        self._guard(self._read_records)

    def send_data(self, data: bytes, now: float | None = None) -> None:
        if now is not None:
            self._now = now
        if self.closed:
            raise StateError("the connection is closed")
        if not self.established:
            raise StateError("the handshake has not completed")
        if self.write_closed:
            raise StateError("cannot send after send_eof(): close_notify was sent")
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._records.send(ContentType.application_data, data[start : start + MAX_PLAINTEXT])
        self.bytes_sent += len(data)
        self.endpoint.record_sent(len(data))
        if self.endpoint.rekey_due(self._now):
            self._guard(lambda: self._act(self.endpoint.want_new_keys(self._now)))

    def rekey(self, *, full: bool = False) -> None:
        """Start a PCS rekey now (our own ConnectionUpdate, if the session is synced; ``full``: FULL with APQ)."""
        if self.established and not self.write_closed and not self.read_closed:
            self._guard(lambda: self._act(self.endpoint.rekey(full=full, now=self._now)))

    def poll(self, now: float) -> None:
        """Timers: the rekey policy, an unanswered CommitRequest, a held peer commit."""
        self._now = now
        if self.established and not self.write_closed and not self.read_closed:
            self._guard(lambda: self._act(self.endpoint.poll(now)))

    def get_timer(self) -> float | None:
        return None if self.closed else self.endpoint.next_timer(self._now)

    def close(self) -> None:
        """close_notify and end; the group stays stored for a later resumption."""
        if not self.closed:
            self._alert(AlertDescription.CLOSE_NOTIFY, warning=True)
            self._terminate(AlertDescription.CLOSE_NOTIFY, "closed locally", by_peer=False)

    def send_eof(self) -> None:
        """Half-close (RFC 8446 section 6.1): close_notify, then keep reading the peer's records."""
        if self.closed or self.write_closed:
            return
        if not self.established:
            raise StateError("the handshake has not completed")
        self._alert(AlertDescription.CLOSE_NOTIFY, warning=True)
        self.write_closed = True
        if self.read_closed:
            self._terminate(AlertDescription.CLOSE_NOTIFY, "closed both ways", by_peer=False)

    def trust_changed(self) -> None:
        """The trust configuration was replaced: close now if the peer is out, or check again at the end of a
        handshake under way (mls2p.trust.TrustPolicy.replace)."""
        if self.closed:
            return
        if self._state is not _State.CONNECTED:
            self._recheck_trust = True
            return
        self._guard(self.endpoint.check_peer)
        if self.closed and self.wakeup is not None:
            self.wakeup()

    def connection_lost(self) -> None:
        self.endpoint.connection_lost()
        if not self.closed:
            self._terminate(AlertDescription.CLOSE_NOTIFY, "transport lost", by_peer=True)

    def data_to_send(self) -> bytes:
        return self._records.socket.take()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- the handshake ---------------------------------------------------------------------

    def _send_client_hello(self) -> None:
        (hello,) = [a for a in self.endpoint.start() if isinstance(a, SendMessage)]
        share = KeyShareEntry().create(GroupName.x25519, bytearray(_x25519_public()))
        extensions = [SupportedVersionsExtension().create([TLS13]),
                      SupportedGroupsExtension().create([GroupName.x25519]),
                      ClientKeyShareExtension().create([share]),
                      TLSExtension(extType=self.housley.extension_type).create(
                          bytearray(ProfileMessage.from_bytes(hello.data).body))]
        self._session_id = os.urandom(32)  # legacy_session_id: echoed by the server (RFC 8446 section 4.1.3)
        message = ClientHello().create(LEGACY_VERSION, bytearray(os.urandom(32)), bytearray(self._session_id),
                                       list(self.housley.tls_suites), extensions=extensions)
        self._send_handshake(message.write())
        self._state = _State.WAIT_SERVER_HELLO

    def _client_hello(self, body: bytes, encoded: bytes) -> None:
        hello = parse(ClientHello(), body)
        versions = hello.getExtension(ExtensionType.supported_versions)
        if versions is None or not versions.versions or TLS13 not in versions.versions:
            raise TlsAlert(AlertDescription.PROTOCOL_VERSION, "the client does not offer TLS 1.3")
        if hello.getExtension(ExtensionType.early_data) is not None:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "early_data together with tls_using_mls_handshake")
        if hello.getExtension(ExtensionType.pre_shared_key) is not None:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "a pre_shared_key offer (this mode resumes by MLS)")
        offered = self._mls_extension(hello, "ClientHello")
        suite = next((TLS_SUITES[code] for code in self.housley.tls_suites if code in hello.cipher_suites), None)
        if suite is None:
            raise TlsAlert(AlertDescription.HANDSHAKE_FAILURE, "no TLS 1.3 cipher suite in common")
        self._tls_suite = suite
        actions = self.endpoint.receive(extension_message(offered, from_client=True), self._now)
        (answer,) = [a for a in actions if isinstance(a, SendMessage)]
        session = self.endpoint.session
        assert session is not None and session.group is not None
        handshake_epoch = session.group.epoch  # fresh: the joined epoch; resumed: the one the request made
        shared = session.group.export_secret(EXPORTER_LABEL, b"", suite.hash_len)
        self._resumption_epoch = handshake_epoch + 1 if self.endpoint.resumed else None
        server_hello = ServerHello().create(LEGACY_VERSION, bytearray(os.urandom(32)), hello.session_id, suite.code,
                                            extensions=[SrvSupportedVersionsExtension().create(TLS13),
                                                        TLSExtension(extType=self.housley.extension_type).create(
                                                            bytearray(ProfileMessage.from_bytes(answer.data).body))])
        self._transcript += encoded
        self._send_handshake(server_hello.write())
        self._start_handshake_keys(shared, handshake_epoch)
        self._send_handshake(EncryptedExtensions().create([]).write())
        verify = finished_mac(self._secrets["server"], self._hash(), suite)
        self._send_handshake(Finished(TLS13, suite.hash_len).create(bytearray(verify)).write())
        self._frozen_transcript = self._hash()
        client_ap, server_ap = application_secrets(self._secrets["hs"], self._frozen_transcript, suite)
        self._install(write=server_ap, read=self._secrets["client"])
        self._epoch = handshake_epoch
        self._secrets["client_ap"] = client_ap  # our read keys once the client's Finished verifies
        self._profile_actions = [a for a in actions if not isinstance(a, SendMessage | KeysChanged)]
        self._state = _State.WAIT_CLIENT_FINISHED

    def _server_hello(self, body: bytes, encoded: bytes) -> None:
        hello = parse(ServerHello(), body)
        if bytes(hello.random) == HELLO_RETRY_RANDOM:
            raise TlsAlert(AlertDescription.UNEXPECTED_MESSAGE, "a HelloRetryRequest: our ClientHello needs none "
                         "(the server takes no key share in this mode)")
        version = hello.getExtension(ExtensionType.supported_versions)
        if version is None or version.version != TLS13:
            raise TlsAlert(AlertDescription.PROTOCOL_VERSION, "the server did not choose TLS 1.3")
        if hello.cipher_suite not in self.housley.tls_suites:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "the server chose a TLS suite we did not offer")
        if hello.getExtension(ExtensionType.key_share) is not None:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "a key_share in the ServerHello of this mode")
        if bytes(hello.session_id) != self._session_id:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "the ServerHello does not echo our legacy_session_id")
        unsolicited = [e.extType for e in hello.extensions or ()
                       if e.extType not in (ExtensionType.supported_versions, self.housley.extension_type)]
        if unsolicited:
            raise TlsAlert(AlertDescription.UNSUPPORTED_EXTENSION, f"the ServerHello carries extensions we did not "
                           f"offer: {unsolicited}")
        answer = extension_message(self._mls_extension(hello, "ServerHello"), from_client=False)
        suite = self._tls_suite = TLS_SUITES[hello.cipher_suite]
        session = self.endpoint.session
        assert session is not None
        if answer.msg_type == ProfileMessageType.RESUMPTION_RESPONSE:
            if session.pending is None:
                raise UnexpectedMessage("a ResumptionResponse to a fresh ClientHello")
            handshake_group = session.pending.group  # the epoch our request makes (gone once the response is read)
            shared = handshake_group.export_secret(EXPORTER_LABEL, b"", suite.hash_len)
            handshake_epoch = handshake_group.epoch
            self._resumption_epoch = handshake_epoch + 1
            actions = self.endpoint.receive(answer, self._now)
        else:
            if answer.msg_type != ProfileMessageType.SERVER_HELLO or self.endpoint.resumed:
                raise UnexpectedMessage("a Welcome in answer to a ResumptionRequest")
            actions = self.endpoint.receive(answer, self._now)
            assert session.group is not None
            handshake_epoch = session.group.epoch
            shared = session.group.export_secret(EXPORTER_LABEL, b"", suite.hash_len)
        self._transcript += encoded
        self._start_handshake_keys(shared, handshake_epoch)
        self._profile_actions = [a for a in actions if not (isinstance(a, KeysChanged) and a.epoch == handshake_epoch)]
        self._state = _State.WAIT_ENCRYPTED_EXTENSIONS

    def _encrypted_extensions(self, body: bytes, encoded: bytes) -> None:
        extensions = parse(EncryptedExtensions(), body)
        if extensions.getExtension(self.housley.extension_type) is not None:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "tls_using_mls_handshake in EncryptedExtensions")
        self._transcript += encoded
        self._state = _State.WAIT_SERVER_FINISHED

    def _server_finished(self, body: bytes, encoded: bytes) -> None:
        suite = self._tls_suite
        assert suite is not None
        self._check_finished(body, self._secrets["server"])
        self._transcript += encoded
        self._frozen_transcript = self._hash()
        client_ap, server_ap = application_secrets(self._secrets["hs"], self._frozen_transcript, suite)
        verify = finished_mac(self._secrets["client"], self._frozen_transcript, suite)
        self._send_handshake(Finished(TLS13, suite.hash_len).create(bytearray(verify)).write())
        self._install(write=client_ap, read=server_ap)
        self._epoch = self._read_epoch
        self._connected()
        self._act(self._profile_actions)  # a resumption's EpochKeyUpdate and switch; a rekey asked for meanwhile

    def _client_finished(self, body: bytes, encoded: bytes) -> None:
        suite = self._tls_suite
        assert suite is not None
        self._check_finished(body, self._secrets["client"])
        self._install(read=self._secrets["client_ap"])
        self._connected()
        if not self.endpoint.resumed:
            self._act(self.endpoint.peer_confirmed())  # the client proved it holds the epoch: store it now
        self._act(self._profile_actions)

    def _start_handshake_keys(self, shared: bytes, epoch: int) -> None:
        suite = self._tls_suite
        assert suite is not None
        hs = handshake_secret(shared, suite)
        client, server = traffic_secrets(hs, self._hash(), suite, handshake=True)
        self._secrets = {"hs": hs, "client": client, "server": server}
        mine, theirs = (client, server) if self.is_client else (server, client)
        self._install(write=mine, read=theirs)
        self._read_epoch = epoch

    def _check_finished(self, body: bytes, base_key: bytes) -> None:
        suite = self._tls_suite
        assert suite is not None
        finished = parse(Finished(TLS13, suite.hash_len), body)
        if bytes(finished.verify_data) != finished_mac(base_key, self._hash(), suite):
            raise TlsAlert(AlertDescription.DECRYPT_ERROR, "the peer's Finished does not verify")

    def _connected(self) -> None:
        if self._recheck_trust:
            self._recheck_trust = False
            self.endpoint.check_peer()  # the peer must pass the configuration in force now
        self._secrets = {}  # the handshake secrets are not needed again
        self._transcript = bytearray()
        self._state = _State.CONNECTED
        log.info("Housley handshake complete at MLS epoch %s (%s)", self._epoch,
                 "resumed" if self.endpoint.resumed else "fresh")
        if self._data_allowed():
            self._events.append(HandshakeCompleted(self._epoch or 0, self.endpoint.resumed))

    def _data_allowed(self) -> bool:
        """A resumed connection carries application data from the epoch of the ResumptionResponse on."""
        return self._resumption_epoch is None or (self._epoch or 0) >= self._resumption_epoch

    def _mls_extension(self, hello: ClientHello | ServerHello, where: str) -> bytes:
        extension = hello.getExtension(self.housley.extension_type)
        if extension is None:
            raise TlsAlert(AlertDescription.MISSING_EXTENSION, f"the {where} lacks tls_using_mls_handshake: this "
                         "endpoint runs MLS in the TLS handshake only")
        data = bytes(extension.extData)
        if not data or len(data) > MAX_MESSAGE_SIZE:
            raise TlsAlert(AlertDescription.DECODE_ERROR, f"tls_using_mls_handshake of {len(data)} bytes")
        return data

    def _hash(self) -> bytes:
        assert self._tls_suite is not None
        return self._tls_suite.transcript_hash(bytes(self._transcript))

    # -- records and messages ------------------------------------------------------------

    def _read_records(self) -> None:
        while not self.closed and (record := self._records.next_record()) is not None:
            wire_type, content_type, payload = record
            protected = wire_type == ContentType.application_data
            if content_type == ContentType.change_cipher_spec:
                # RFC 8446 section 5: a plaintext 0x01, only before the peer's Finished (middlebox compatibility)
                if protected or payload != b"\x01" or self._state is _State.CONNECTED:
                    raise UnexpectedMessage("a change_cipher_spec outside the handshake, protected, or not 0x01")
                continue
            if self._read_secret and not protected:
                if content_type == ContentType.alert and self._state is not _State.CONNECTED:
                    self._peer_alert(payload, authenticated=False)  # the peer may refuse us before it has keys
                    continue
                raise UnexpectedMessage("a plaintext record once keys are in use (injected on the way?)")
            if content_type == ContentType.handshake:
                self._handshake_buffer += payload
                self._read_handshake_messages()
            elif content_type == ContentType.application_data:
                if self.read_closed:
                    raise UnexpectedMessage("application data after the peer's close_notify")
                if not self._reading_allowed():
                    raise UnexpectedMessage("application data before the epoch it may use")
                if payload:
                    self._events.append(DataReceived(payload))
            elif content_type == ContentType.alert:
                self._peer_alert(payload, authenticated=protected)
            else:
                raise UnexpectedMessage(f"record content type {content_type}")

    def _reading_allowed(self) -> bool:
        """The peer's application data is taken once the handshake is done and, on a resumed connection, from
        the ResumptionResponse's epoch on (the epoch of the request is the peer's alone)."""
        return self._state is _State.CONNECTED and (
            self._resumption_epoch is None or (self._read_epoch or 0) >= self._resumption_epoch)

    def _read_handshake_messages(self) -> None:
        limit = HANDSHAKE_LIMIT if self._state is not _State.CONNECTED else MAX_MESSAGE_SIZE + 8
        while len(self._handshake_buffer) >= 4 and not self.closed:
            length = int.from_bytes(self._handshake_buffer[1:4], "big")
            if length > limit:
                raise TlsAlert(AlertDescription.DECODE_ERROR, f"a handshake message of {length} bytes")
            if len(self._handshake_buffer) < 4 + length:
                return
            encoded = bytes(self._handshake_buffer[: 4 + length])
            del self._handshake_buffer[: 4 + length]
            self._read_keys_changed = False
            self._handshake_message(encoded[0], encoded[4:], encoded)
            if self._read_keys_changed and self._handshake_buffer:
                # RFC 8446 section 5.1: a key change ends a record; bytes after it were protected (or not)
                # under the old keys
                raise UnexpectedMessage("handshake data after a key change in the same record")

    def _handshake_message(self, kind: int, body: bytes, encoded: bytes) -> None:
        if self._state is _State.CONNECTED:
            if kind == self.housley.handshake_type:
                self._mls_handshake(body)
                return
            if kind == HandshakeType.new_session_ticket:
                self._new_session_ticket(body)
                return
            if kind == HandshakeType.key_update:
                self._key_update(body)
                return
            raise UnexpectedMessage(f"handshake message {kind} after the handshake")
        if kind != _EXPECTED.get(self._state):
            raise UnexpectedMessage(f"handshake message {kind} while {self._state.value}")
        handler = {_State.WAIT_CLIENT_HELLO: self._client_hello, _State.WAIT_SERVER_HELLO: self._server_hello,
                   _State.WAIT_ENCRYPTED_EXTENSIONS: self._encrypted_extensions,
                   _State.WAIT_SERVER_FINISHED: self._server_finished,
                   _State.WAIT_CLIENT_FINISHED: self._client_finished}[self._state]
        handler(self._message_body(body), encoded)

    @staticmethod
    def _message_body(body: bytes) -> bytes:
        """tlslite-ng's ``parse`` reads the 3-byte length itself: hand it the message without its type byte."""
        return len(body).to_bytes(3, "big") + body

    def _send_handshake(self, encoded: bytes | bytearray) -> None:
        data = bytes(encoded)
        if self._state is not _State.CONNECTED:
            self._transcript += data
        for start in range(0, len(data), MAX_PLAINTEXT):
            self._records.send(ContentType.handshake, data[start : start + MAX_PLAINTEXT])

    def _mls_handshake(self, body: bytes) -> None:
        reader = Reader(body)
        if reader.u16() != MLS10:
            raise DecodeError("an mls_handshake message of another MLS version")
        kind = reader.u16()
        payload = body[4:]
        if kind == self.housley.key_switch:
            if payload:
                raise DecodeError("a key switch carries nothing")
            self._switch_read()
            return
        msg_type = kind - self.housley.tpmlsmt_base
        if msg_type not in ProfileMessageType.__members__.values():
            raise DecodeError(f"unknown mls_handshake type {kind:#06x}")
        if self.write_closed and msg_type in (ProfileMessageType.CONNECTION_UPDATE, ProfileMessageType.COMMIT_REQUEST):
            log.info("ignoring an mls_handshake that needs an answer after our close_notify")
            return
        self._act(self.endpoint.receive(ProfileMessage(ProfileMessageType(msg_type), payload), self._now))

    def _send_mls_handshake(self, kind: int, payload: bytes) -> None:
        body = Writer().u16(MLS10).u16(kind).getvalue() + payload
        self._send_handshake(bytes([self.housley.handshake_type]) + len(body).to_bytes(3, "big") + body)

    # -- acting on the session ---------------------------------------------------------------

    def _act(self, actions: list[SessionAction]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                message = ProfileMessage.from_bytes(action.data)
                self._send_mls_handshake(self.housley.tpmlsmt_base + message.msg_type, message.body)
            elif isinstance(action, KeysChanged):
                self._switch_write(action.epoch, action.reason)

    def _epoch_secrets(self, epoch: int) -> tuple[bytes, bytes]:
        session = self.endpoint.session
        suite = self._tls_suite
        assert session is not None and suite is not None
        group = session.next_epoch_group(epoch)
        if group is None:
            raise InternalError(f"no group for epoch {epoch}")
        shared = group.export_secret(EXPORTER_LABEL, b"", suite.hash_len)
        return epoch_application_secrets(shared, self._frozen_transcript, suite)

    def traffic_secret(self, client: bool) -> bytes:
        """The TLS application traffic secret of one direction in the epoch our writes use (what a key log
        would hold; for the PCS experiment's thief)."""
        if self._epoch is None:
            raise StateError("no keys yet")
        return self._epoch_secrets(self._epoch)[0 if client else 1]

    def _switch_write(self, epoch: int, reason: str) -> None:
        """Our key switch under the old keys, then our records use ``epoch``; the peer's do after its switch."""
        suite = self._tls_suite
        assert suite is not None
        client, server = self._epoch_secrets(epoch)
        self._send_mls_handshake(self.housley.key_switch, b"")
        mine, theirs = (client, server) if self.is_client else (server, client)
        self._install(write=mine)
        self._pending_read = (epoch, theirs)
        self._epoch = epoch
        self._events.append(EpochChanged(epoch, reason))
        log.info("Housley mode switched to epoch %d (%s)", epoch, reason)
        if self._resumption_epoch == epoch:
            self._events.append(HandshakeCompleted(epoch, resumed=True))  # application data may flow now

    def _switch_read(self) -> None:
        if self._pending_read is None:
            raise UnexpectedMessage("a key switch without a confirmed new epoch")
        suite = self._tls_suite
        assert suite is not None
        epoch, theirs = self._pending_read
        self._install(read=theirs)
        self._read_epoch, self._pending_read = epoch, None

    def _install(self, *, write: bytes | None = None, read: bytes | None = None) -> None:
        """New traffic secrets for our writes and/or reads (RFC 8446 section 7.3; sequence numbers restart)."""
        suite = self._tls_suite
        assert suite is not None
        self._write_secret = write if write is not None else self._write_secret
        self._read_secret = read if read is not None else self._read_secret
        self._read_keys_changed = self._read_keys_changed or read is not None
        mine, theirs = self._write_secret, self._read_secret
        client, server = (mine, theirs) if self.is_client else (theirs, mine)
        self._records.install(suite.code, client, server, read=read is not None, write=write is not None)

    def _new_session_ticket(self, body: bytes) -> None:
        """Never sent by our server (this mode resumes from the MLS group); dropped by a client unless it breaks
        the draft (our extension in it), refused from a client (RFC 8446 section 4.6.1: a server's message)."""
        if not self.is_client:
            raise UnexpectedMessage("a NewSessionTicket from the client")
        ticket = parse(NewSessionTicket(), self._message_body(body))
        if ticket.getExtension(self.housley.extension_type) is not None:
            raise TlsAlert(AlertDescription.ILLEGAL_PARAMETER, "tls_using_mls_handshake in a NewSessionTicket")

    def _key_update(self, body: bytes) -> None:
        """RFC 8446 section 4.6.3: the peer's KeyUpdate ratchets its direction ("traffic upd"); if it asks, ours
        follows.  A hash ratchet only (no new entropy): the next MLS commit is what heals."""
        if len(body) != 1 or body[0] not in (0, 1):
            raise DecodeError("a malformed KeyUpdate")
        suite = self._tls_suite
        assert suite is not None
        self._install(read=next_traffic_secret(self._read_secret, suite))
        if body[0] == 1 and not self.write_closed:
            self._send_handshake(bytes([HandshakeType.key_update]) + (1).to_bytes(3, "big") + b"\x00")
            self._install(write=next_traffic_secret(self._write_secret, suite))

    # -- alerts and failure ------------------------------------------------------------------

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # never raises: anything, ours or tlslite-ng's, closes with an alert
            error = as_project_error(as_mls_error(exc))
            self._fail_with(alert_for(error), f"{type(error).__name__}: {error}")

    def _alert(self, description: AlertDescription, *, warning: bool = False) -> None:
        if self.write_closed:
            return  # nothing may follow our close_notify
        with contextlib.suppress(Exception):
            self._records.send(ContentType.alert, bytes([1 if warning else 2, description]))

    def _peer_alert(self, payload: bytes, *, authenticated: bool) -> None:
        """The peer's alert; ``authenticated``: it came protected (a plaintext one, before the handshake
        completes, may be anyone's: it ends this attempt and nothing more)."""
        if len(payload) != 2:
            raise DecodeError("malformed alert")
        try:
            description = AlertDescription(payload[1])
            name = description.name
        except ValueError:
            description, name = AlertDescription.INTERNAL_ERROR, f"alert {payload[1]}"
        connected = self._state is _State.CONNECTED
        if description == AlertDescription.CLOSE_NOTIFY and connected and authenticated and not self.write_closed:
            self.read_closed = True  # a half-close: the peer may still read what we send
            self._events.append(StreamEnded())
            return
        reason = "peer closed" if description == AlertDescription.CLOSE_NOTIFY else f"peer sent {name}"
        if not authenticated:
            reason += " (unauthenticated: in plaintext)"
        self._terminate(description, reason, by_peer=True, authenticated=authenticated)

    def _fail_with(self, description: AlertDescription, reason: str) -> None:
        log.info("Housley connection failed: %s", reason)
        self._alert(description)
        self._terminate(description, reason, by_peer=False)

    def _terminate(self, description: AlertDescription, reason: str, *, by_peer: bool,
                   authenticated: bool = True) -> None:
        self.closed = True
        self._secrets = {}
        self._pending_read = None
        self._events.append(ConnectionTerminated(description, reason, by_peer, authenticated))


def _x25519_public() -> bytes:
    """A well-formed x25519 key share (RFC 8446 9.2 wants one without a PSK); its private key is dropped unused."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
