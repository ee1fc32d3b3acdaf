"""QUIC-MLS mode: the two-party profile in place of the TLS 1.3 handshake (docs/quic.md).

:class:`MlsHandshakeContext` stands where aioquic keeps its ``tls.Context``
(the attributes aioquic reads are listed in :mod:`mlsquic._aioquic_compat`)
and runs the profile over CRYPTO frames:

* Initial space: the client's ``HELLO_EXTRAS`` frame (transport parameters
  and offered ALPNs), then ClientHello/ServerHello, or
  ResumptionRequest/ResumptionResponse;
* Handshake space: the server's ``HELLO_EXTRAS`` (its transport parameters
  are confidential, RFC 9000 section 7.3, like TLS's EncryptedExtensions), the
  resuming client's EpochKeyUpdate, and the client's key confirmation
  (``CLIENT_CONFIRM``, like TLS Finished);
* 1-RTT space: ConnectionUpdate/EpochKeyUpdate of the PCS rekeys.

Handshake secrets are exported from the first MLS epoch with the client's
HELLO_EXTRAS frame hashed into the context, 1-RTT secrets and the key
confirmation with both frames, so tampering with either side's transport
parameters or ALPN changes the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aioquic import tls
from aioquic.buffer import Buffer

from mls2p.errors import StateError, UnexpectedMessage, as_project_error
from mls2p.session import KeysChanged, SendMessage, SessionAction
from mls2p.traffic import traffic_aead
from mls2p.wire import MessageBuffer, ProfileMessageType
from mlscore.codec import Reader, Writer
from mlscore.errors import ValidationError
from mlscore.group import Group

from .errors import alert_from

if TYPE_CHECKING:
    from .connection import MlsQuicConnection

log = logging.getLogger(__name__)

HELLO_EXTRAS = 0x40
"""Our frame beside the profile messages: transport parameters and ALPN (hashed into the keys).
The client's travels in Initial, the server's in Handshake."""
CLIENT_CONFIRM = 0x41
"""The client's key confirmation in the Handshake space (like TLS Finished)."""
CONFIRM_LABEL = "quic-mls client finished"

LABELS = {
    (tls.Epoch.HANDSHAKE, True): "quic-mls client hs",
    (tls.Epoch.HANDSHAKE, False): "quic-mls server hs",
    (tls.Epoch.ONE_RTT, True): "quic-mls client 1rtt",
    (tls.Epoch.ONE_RTT, False): "quic-mls server 1rtt",
}

_INITIAL_MESSAGES = frozenset({ProfileMessageType.CLIENT_HELLO, ProfileMessageType.SERVER_HELLO,
                               ProfileMessageType.RESUMPTION_REQUEST, ProfileMessageType.RESUMPTION_RESPONSE})


def _frame(kind: int, body: bytes) -> bytes:
    return Writer().u8(kind).opaque(body).getvalue()


def quic_cipher_suite(mls_suite: int) -> tls.CipherSuite:
    """The TLS 1.3 cipher suite QUIC packet protection uses for an MLS suite (same AEAD)."""
    return tls.CipherSuite(traffic_aead(mls_suite).tls_cipher_suite)


class MlsHandshakeContext:
    """Drives the two-party profile over QUIC CRYPTO frames in place of aioquic's ``tls.Context``."""

    def __init__(self, connection: MlsQuicConnection, original: tls.Context) -> None:
        self._connection = connection
        self.is_client = connection.is_client
        self.endpoint = connection.endpoint
        self.alpn_protocols = list(connection.mls_configuration.alpn_protocols or [])
        self.handshake_extensions = original.handshake_extensions
        self.alpn_cb = original.alpn_cb
        self.update_traffic_key_cb = original.update_traffic_key_cb
        self.get_session_ticket_cb = None
        self.new_session_ticket_cb = None
        self.state = tls.State.CLIENT_HANDSHAKE_START if self.is_client else tls.State.SERVER_EXPECT_CLIENT_HELLO
        self.alpn_negotiated: str | None = None
        self.early_data_accepted = False
        self.received_extensions: list[tuple[int, bytes]] = []
        self.legacy_session_id = b""
        self.client_random = b""
        self.session_ticket = None
        self.certificate = self.certificate_chain = self.certificate_private_key = None
        self.current_epoch = tls.Epoch.INITIAL
        self._buffers = {epoch: MessageBuffer() for epoch in tls.Epoch}
        self._hello_frames: dict[bool, bytes] = {}  # is_client -> our/their HELLO_EXTRAS frame
        self._handshake_installed = False
        self._expected_confirm: bytes | None = None
        self._keys_waiting: int | None = None  # the client's first epoch, until the server's HELLO_EXTRAS arrives

    @property
    def session_resumed(self) -> bool:
        return self.endpoint.resumed

    # aioquic calls this with the CRYPTO data of the space noted in current_epoch; we write our CRYPTO
    # data straight to the crypto streams (write_crypto) instead of aioquic's 16 KiB output buffers,
    # so profile messages of any size up to the profile's limit fit.
    def handle_message(self, input_data: bytes, output_buf: dict[tls.Epoch, Buffer]) -> None:
        try:
            if self.state == tls.State.CLIENT_HANDSHAKE_START:
                self._start_client()
                return
            for frame in self._buffers[self.current_epoch].feed_frames(input_data):
                self._handle_frame(self.current_epoch, frame)
        except Exception as exc:  # ours or a library's: aioquic closes with the alert, never crashes
            error = as_project_error(exc)
            self._connection.mls_failure = self._connection.mls_failure or error
            authenticated = self.endpoint.confirmed
            (log.warning if authenticated else log.info)("MLS failed: %s: %s", type(error).__name__, error)
            raise alert_from(error, detailed=authenticated) from exc

    # -- frames ----------------------------------------------------------------------------

    def _start_client(self) -> None:
        self._connection.write_crypto(tls.Epoch.INITIAL, self._our_hello())
        self.act(self.endpoint.start())
        self.state = tls.State.CLIENT_EXPECT_SERVER_HELLO

    def _handle_frame(self, epoch: tls.Epoch, frame: bytes) -> None:
        kind = frame[0]
        if kind == HELLO_EXTRAS:
            self._receive_hello(epoch, frame)
            return
        if kind == CLIENT_CONFIRM:
            self._receive_confirm(epoch, frame)
            return
        # the peer's transport parameters come first: the client's in Initial, the server's in Handshake
        if (not self.is_client) not in self._hello_frames and (not self.is_client or epoch != tls.Epoch.INITIAL):
            raise UnexpectedMessage("the transport-parameters frame must come before the first profile message")
        self.act(self.endpoint.receive(frame, self._connection.now))
        session = self.endpoint.session
        if (not self.is_client and self.endpoint.resumed and session is not None and session.pending is not None
                and not self._handshake_installed):
            # Our ResumptionResponse waits for the client's EpochKeyUpdate, which the client
            # sends in the Handshake space: key that space from our pending epoch.
            self._install_handshake(session.pending.group)

    def _our_hello(self) -> bytes:
        alpns = [self.alpn_negotiated] if (not self.is_client and self.alpn_negotiated) else self.alpn_protocols
        body = Writer().opaque(self.handshake_extensions[0][1])
        body.vector([a.encode() for a in alpns], Writer.opaque)
        frame = _frame(HELLO_EXTRAS, body.getvalue())
        self._hello_frames[self.is_client] = frame
        return frame

    def _receive_hello(self, epoch: tls.Epoch, frame: bytes) -> None:
        expected = tls.Epoch.HANDSHAKE if self.is_client else tls.Epoch.INITIAL
        if epoch != expected or (not self.is_client) in self._hello_frames:
            raise UnexpectedMessage("unexpected transport-parameters frame")
        reader = Reader(frame[1:])
        body = Reader(reader.opaque())
        reader.finish()
        transport_parameters = body.opaque()
        alpns = [a.decode("ascii", "replace") for a in body.vector(Reader.opaque)]
        body.finish()
        self._hello_frames[not self.is_client] = frame
        self.received_extensions = [(tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, transport_parameters)]
        ours = self.alpn_protocols
        if self.is_client:
            if len(alpns) != 1 or alpns[0] not in ours:
                raise ValidationError(f"server chose ALPN {alpns}, we offered {ours}")
            self.alpn_negotiated = alpns[0]
        else:
            common = [a for a in ours if a in alpns]
            if ours and not common:
                raise ValidationError(f"no common ALPN: client offered {alpns}, we support {ours}")
            self.alpn_negotiated = common[0] if common else None
        if self.alpn_cb is None:  # aioquic's QuicConnection always installs its ALPN handler
            raise StateError("aioquic installed no ALPN callback")
        # aioquic's own TLS passes alpn_negotiated here too, None included, though AlpnHandler says str
        alpn_cb = cast("Callable[[str | None], None]", self.alpn_cb)
        alpn_cb(self.alpn_negotiated)  # aioquic parses the transport parameters here
        if self._keys_waiting is not None:
            self._complete_keys(self._keys_waiting)

    def _confirm_value(self) -> bytes:
        session = self.endpoint.session
        assert session is not None
        return session.export_secret(CONFIRM_LABEL, self._binding(), 32)

    def _receive_confirm(self, epoch: tls.Epoch, frame: bytes) -> None:
        if self.is_client or epoch != tls.Epoch.HANDSHAKE or self._expected_confirm is None:
            raise UnexpectedMessage("unexpected confirmation frame")
        reader = Reader(frame[1:])
        value = reader.opaque()
        reader.finish()
        # Checked against the value of the epoch the keys were installed in: a rekey the server
        # starts meanwhile (it waits for this confirmation anyway) cannot make it fail.
        if not hmac.compare_digest(value, self._expected_confirm):
            raise ValidationError("client key confirmation does not match")
        if self.state != tls.State.SERVER_POST_HANDSHAKE:
            # Confirmed (and stored) first, complete after: aioquic processes 1-RTT data once the state
            # is POST_HANDSHAKE, so a session whose store write failed must never get there (found by
            # the fleet test: a client got its echo from a session the server had failed to store).
            actions = self.endpoint.peer_confirmed()
            self.state = tls.State.SERVER_POST_HANDSHAKE
            self.act(actions)

    # -- acting on the session ---------------------------------------------------------------

    def _space_for(self, msg_type: ProfileMessageType) -> tls.Epoch:
        """Hellos and resumption go in Initial; the resumer's ack in Handshake; rekeys in 1-RTT."""
        if msg_type in _INITIAL_MESSAGES:
            return tls.Epoch.INITIAL
        if self._connection.one_rtt.epoch is None:
            return tls.Epoch.HANDSHAKE
        return tls.Epoch.ONE_RTT

    def act(self, actions: list[SessionAction]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                self._connection.write_crypto(self._space_for(action.msg_type), action.data)
            elif isinstance(action, KeysChanged):
                self._keys_changed(action.epoch, action.reason)

    def _keys_changed(self, epoch: int, reason: str) -> None:
        session = self.endpoint.session
        assert session is not None and session.group is not None
        if self._connection.one_rtt.epoch is not None:
            self._connection.flip_to(epoch, reason)
            return
        # the handshake: Handshake keys now; 1-RTT keys bind both HELLO_EXTRAS frames, so a client
        # installs them once the server's has arrived (in the Handshake space these keys open)
        if not self._handshake_installed:
            self._install_handshake(session.group)
        if self.is_client and False not in self._hello_frames:
            self._keys_waiting = epoch
        else:
            self._complete_keys(epoch)

    def _install_handshake(self, group: Group) -> None:
        """Key the Handshake space from ``group``; a server sends its transport parameters there."""
        self._install(tls.Epoch.HANDSHAKE, group)
        if not self.is_client:
            self._connection.write_crypto(tls.Epoch.HANDSHAKE, self._our_hello())

    def _complete_keys(self, epoch: int) -> None:
        """Install the first 1-RTT keys (both HELLO_EXTRAS frames known); the client confirms them."""
        session = self.endpoint.session
        assert session is not None and session.group is not None
        self._keys_waiting = None
        self._install(tls.Epoch.ONE_RTT, session.group)
        self._connection.one_rtt.epoch = epoch
        self._expected_confirm = self._confirm_value()
        if self.is_client:
            self._connection.write_crypto(tls.Epoch.HANDSHAKE, _frame(CLIENT_CONFIRM, self._expected_confirm))
            self.state = tls.State.CLIENT_POST_HANDSHAKE
        else:
            self.state = tls.State.SERVER_EXPECT_FINISHED

    def next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        session = self.endpoint.session
        group = session.next_epoch_group(epoch) if session is not None else None
        return self._secrets(tls.Epoch.ONE_RTT, group) if group is not None else None

    def _install(self, epoch: tls.Epoch, group: Group) -> None:
        recv, send = self._secrets(epoch, group)
        suite = quic_cipher_suite(group.suite.id)
        self.update_traffic_key_cb(tls.Direction.DECRYPT, epoch, suite, recv)
        self.update_traffic_key_cb(tls.Direction.ENCRYPT, epoch, suite, send)
        if epoch == tls.Epoch.HANDSHAKE:
            self._handshake_installed = True

    def _binding(self, epoch: tls.Epoch = tls.Epoch.ONE_RTT) -> bytes:
        """The hello-extras frames, hashed: tampering with transport parameters or ALPN changes the keys.

        Handshake keys bind the client's frame only: the server's travels under them.
        """
        frames = self._hello_frames.get(True, b"")
        if epoch != tls.Epoch.HANDSHAKE:
            frames += self._hello_frames[False]
        return hashlib.sha256(frames).digest()

    def _secrets(self, epoch: tls.Epoch, group: Group) -> tuple[bytes, bytes]:
        length = hashlib.new(traffic_aead(group.suite.id).tls_hash).digest_size
        binding = self._binding(epoch)
        client = group.export_secret(LABELS[(epoch, True)], binding, length)
        server = group.export_secret(LABELS[(epoch, False)], binding, length)
        return (server, client) if self.is_client else (client, server)

    def rekey(self, *, full: bool = False) -> bool:
        """A ConnectionUpdate now (FULL in an APQ session if ``full``), once 1-RTT keys exist; False while one
        is in flight."""
        if self._connection.one_rtt.epoch is None:
            raise StateError("no 1-RTT keys yet")
        actions = self.endpoint.rekey(full=full, now=self._connection._now)
        self.act(actions)
        return bool(actions)
