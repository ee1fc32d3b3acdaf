"""Every touch point into aioquic internals lives here (aioquic 1.x; tested on 1.7).

1. ``QuicConnection._initialize``: after aioquic builds its TLS context and crypto
   pairs, we replace ``self.tls`` with :class:`MlsHandshakeContext` (the same
   duck-typed interface: ``handle_message``, ``state``, ``alpn_negotiated``,
   ``received_extensions``, ``alpn_cb``, ``update_traffic_key_cb`` ...) and the
   1-RTT :class:`~aioquic.quic.crypto.CryptoPair` with :class:`MlsCryptoPair`.
2. ``QuicConnection._handle_crypto_frame``: we note the packet number space of
   the CRYPTO data before aioquic hands it on (``tls.Context`` infers it from its
   state; the MLS context needs it).
3. ``CryptoPair._update_key`` / ``CryptoContext.decrypt_packet``: a Key Phase
   flip installs the next MLS epoch's secrets instead of deriving "quic ku";
   the header-protection key stays, as in RFC 9001.
4. ``AlongsideQuicConnection`` (alongside mode) wraps ``tls.update_traffic_key_cb`` to
   learn the first 1-RTT secrets, replaces the 1-RTT CryptoPair like QUIC-MLS mode, and
   filters ``next_event`` so stream 0 carries the profile.
5. ``aioquic.asyncio.server.QuicConnection`` / ``aioquic.asyncio.client.QuicConnection``:
   the name aioquic's ``serve``/``connect`` instantiate is wrapped by a factory
   that builds :class:`MlsQuicConnection` when (and only when) the configuration
   is an ``MlsQuicConfiguration``; every other use of aioquic is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from typing import Any

from aioquic import tls
from aioquic._crypto import CryptoError as AeadError
from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection, QuicConnectionError, QuicErrorCode
from aioquic.quic.crypto import CryptoContext, CryptoPair, KeyUnavailableError, apply_key_phase
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived
from aioquic.quic.packet import decode_packet_number

from mlscore.codec import Reader, Writer
from mlscore.errors import CredentialError, DecodeError, MLSError, StateError, ValidationError
from mlscore.framing import MLSMessage, PrivateMessage, PublicMessage
from mlscore.profile import KeysChanged, SendMessage, State, TwoPartySession, persist_to
from mlscore.profile_wire import MessageBuffer, ProfileMessage, ProfileMessageType

log = logging.getLogger(__name__)

HELLO_EXTRAS = 0x40
"""Our frame beside the profile messages: transport parameters and ALPN (hashed into every key)."""
CLIENT_CONFIRM = 0x41
"""The client's key confirmation in the Handshake space (like TLS Finished)."""

LABELS = {
    (tls.Epoch.HANDSHAKE, True): "quic-mls client hs",
    (tls.Epoch.HANDSHAKE, False): "quic-mls server hs",
    (tls.Epoch.ONE_RTT, True): "quic-mls client 1rtt",
    (tls.Epoch.ONE_RTT, False): "quic-mls server 1rtt",
}

QUIC_SUITES = {
    1: tls.CipherSuite.AES_128_GCM_SHA256,
    2: tls.CipherSuite.AES_128_GCM_SHA256,
    3: tls.CipherSuite.CHACHA20_POLY1305_SHA256,
    4: tls.CipherSuite.AES_256_GCM_SHA384,
    5: tls.CipherSuite.AES_256_GCM_SHA384,
    6: tls.CipherSuite.CHACHA20_POLY1305_SHA256,
    7: tls.CipherSuite.AES_256_GCM_SHA384,
}
"""MLS suite -> QUIC packet protection (docs/quic.md)."""


class EpochChanged(QuicEvent):
    """The 1-RTT keys now come from MLS epoch ``epoch`` (a PCS rekey took effect)."""

    def __init__(self, epoch: int, reason: str) -> None:
        self.epoch = epoch
        self.reason = reason

    def __repr__(self) -> str:
        return f"EpochChanged(epoch={self.epoch}, reason={self.reason!r})"


def _alert_for(error: MLSError) -> type[tls.Alert]:
    for kind, alert in ((CredentialError, tls.AlertBadCertificate), (DecodeError, tls.AlertDecodeError),
                        (StateError, tls.AlertUnexpectedMessage), (ValidationError, tls.AlertIllegalParameter)):
        if isinstance(error, kind):
            return alert
    return tls.AlertHandshakeFailure


def _frame(kind: int, body: bytes) -> bytes:
    return Writer().u8(kind).opaque(body).getvalue()


# -- key phase: next secrets come from MLS, not "quic ku" -------------------------------

class MlsCryptoContext(CryptoContext):
    """A 1-RTT receive context whose next Key Phase uses the pair's next MLS secret."""

    pair: MlsCryptoPair

    def decrypt_packet(self, packet: bytes, encrypted_offset: int,
                       expected_packet_number: int) -> tuple[bytes, bytes, int, bool]:
        if self.aead is None:
            raise KeyUnavailableError("Decryption key is not available")
        plain_header, packet_number = self.hp.remove(packet, encrypted_offset)
        first_byte = plain_header[0]
        packet_number = decode_packet_number(
            packet_number, ((first_byte & 0x03) + 1) * 8, expected_packet_number)
        body = packet[len(plain_header):]
        if first_byte & 0x80 or ((first_byte & 4) >> 2) == self.key_phase:
            payload = self.aead.decrypt(body, plain_header, packet_number)
            self.pair.previous_aead = None  # the peer uses the current phase: old keys can go
            return plain_header, payload, packet_number, False
        previous = self.pair.previous_aead
        if previous is not None:
            # We flipped first; the peer's packets still use the old phase until it sees ours.
            with contextlib.suppress(AeadError):
                return plain_header, previous.decrypt(body, plain_header, packet_number), packet_number, False
        crypto = self.pair.next_context(receive=True)
        payload = crypto.aead.decrypt(body, plain_header, packet_number)
        return plain_header, payload, packet_number, True


class MlsCryptoPair(CryptoPair):
    """1-RTT keys that move to the next MLS epoch at each Key Phase flip.

    Flips are sequential (epoch N to N+1).  The next epoch's secrets come from
    ``next_source(epoch)``, which reads the session: the current group for the
    replier, the pending group for a committer (so a committer can open the
    peer's flipped packets before the EpochKeyUpdate arrives).
    """

    def __init__(self, original: CryptoPair) -> None:
        super().__init__()
        recv = MlsCryptoContext(setup_cb=original.recv._setup_cb, teardown_cb=original.recv._teardown_cb)
        recv.pair = self
        self.recv = recv
        self.send = CryptoContext(setup_cb=original.send._setup_cb, teardown_cb=original.send._teardown_cb)
        self.epoch: int | None = None
        self.next_source: Any = None  # Callable[[int], tuple[bytes, bytes] | None]
        self.previous_aead: Any = None  # old receive keys, kept after a local flip until the peer flips

    def _next_secrets(self) -> tuple[bytes, bytes]:
        found = self.next_source(self.epoch + 1) if self.next_source and self.epoch is not None else None
        if found is None:
            raise KeyUnavailableError("key phase flipped but the next MLS epoch is not known")
        return found

    def next_context(self, *, receive: bool) -> CryptoContext:
        recv_secret, send_secret = self._next_secrets()
        current = self.recv if receive else self.send
        crypto = CryptoContext(key_phase=int(not current.key_phase))
        crypto.setup(cipher_suite=current.cipher_suite, secret=recv_secret if receive else send_secret,
                     version=current.version)
        return crypto

    def _update_key(self, trigger: str) -> None:
        self.previous_aead = self.recv.aead if trigger == "local_update" else None
        apply_key_phase(self.recv, self.next_context(receive=True), trigger=trigger)
        apply_key_phase(self.send, self.next_context(receive=False), trigger=trigger)
        assert self.epoch is not None
        self.epoch += 1
        self._update_key_requested = False


def next_epoch_group(session: TwoPartySession | None, epoch: int) -> Any:
    """The group whose keys a Key Phase flip to ``epoch`` uses: current (replier) or pending (committer)."""
    if session is None or session.group is None:
        return None
    if session.group.epoch == epoch:
        return session.group
    if session.pending is not None and session.pending.group.epoch == epoch:
        return session.pending.group
    return None


# -- the MLS handshake in place of tls.Context ------------------------------------------------

class MlsHandshakeContext:
    """Drives the two-party profile over QUIC CRYPTO frames (duck-types aioquic's tls.Context)."""

    def __init__(self, connection: MlsQuicConnection, original: tls.Context) -> None:
        self._connection = connection
        self.is_client = connection._is_client
        config = connection._configuration
        self.configuration = config
        self.handshake_extensions = original.handshake_extensions
        self.alpn_cb = original.alpn_cb
        self.update_traffic_key_cb = original.update_traffic_key_cb
        self.get_session_ticket_cb = None
        self.new_session_ticket_cb = None
        self.state = tls.State.CLIENT_HANDSHAKE_START if self.is_client else tls.State.SERVER_EXPECT_CLIENT_HELLO
        self.alpn_negotiated: str | None = None
        self.early_data_accepted = False
        self.session_resumed = False
        self.received_extensions: list[tuple[int, bytes]] = []
        self.legacy_session_id = b""
        self.client_random = b""
        self.session_ticket = None
        self.certificate = self.certificate_chain = self.certificate_private_key = None
        self.current_epoch = tls.Epoch.INITIAL
        self.session: TwoPartySession | None = None
        self._buffers = {epoch: MessageBuffer() for epoch in tls.Epoch}
        self._hello_frames: dict[bool, bytes] = {}  # is_client -> our/their HELLO_EXTRAS frame
        self._quic_suite: tls.CipherSuite | None = None
        self._handshake_installed = False

    # aioquic calls this with CRYPTO data of the space noted in current_epoch
    def handle_message(self, input_data: bytes, output_buf: dict[tls.Epoch, Buffer]) -> None:
        try:
            if self.state == tls.State.CLIENT_HANDSHAKE_START:
                self._start_client(output_buf)
                return
            for frame in self._buffers[self.current_epoch].feed_frames(input_data):
                self._handle_frame(self.current_epoch, frame, output_buf)
        except MLSError as exc:
            raise _alert_for(exc)(f"{type(exc).__name__}: {exc}") from exc

    # -- frames ---------------------------------------------------------------------------

    def _start_client(self, out: dict[tls.Epoch, Buffer]) -> None:
        config = self.configuration
        hello = self._our_hello()
        state = None
        if config.resume_group_id is not None and config.store is not None:
            state = config.store.load(config.resume_group_id)
        if state is not None:
            self.session = TwoPartySession.from_state(state, config.profile, on_state_change=self._persist())
            self.session.connection_lost()
            actions = self.session.resume()
            self.session_resumed = True
        else:
            self.session, actions = TwoPartySession.initiator(config.profile, on_state_change=self._persist())
        out[tls.Epoch.INITIAL].push_bytes(hello)
        self._act(actions, out)
        self.state = tls.State.CLIENT_EXPECT_SERVER_HELLO

    def _handle_frame(self, epoch: tls.Epoch, frame: bytes, out: dict[tls.Epoch, Buffer]) -> None:
        kind = frame[0]
        if kind == HELLO_EXTRAS:
            self._receive_hello(epoch, frame, out)
            return
        if kind == CLIENT_CONFIRM:
            self._receive_confirm(epoch, frame)
            return
        if epoch == tls.Epoch.INITIAL and (not self.is_client) not in self._hello_frames:
            raise StateError("the transport-parameters frame must come before the first profile message")
        message = ProfileMessage.from_bytes(frame)
        if self.session is None:
            self._start_server_session(message)
        assert self.session is not None
        self._act(self.session.receive(message), out)
        if (not self.is_client and message.msg_type == ProfileMessageType.RESUMPTION_REQUEST
                and self.session.pending is not None and not self._handshake_installed):
            # Our ResumptionResponse waits for the client's EpochKeyUpdate, which the client
            # sends in the Handshake space: key that space from our pending epoch.
            self._install(tls.Epoch.HANDSHAKE, self.session.pending.group)

    def _our_hello(self) -> bytes:
        config = self.configuration
        alpns = [self.alpn_negotiated] if (not self.is_client and self.alpn_negotiated) else (
            config.alpn_protocols or [])
        body = Writer().opaque(self.handshake_extensions[0][1])
        body.vector([a.encode() for a in alpns], Writer.opaque)
        frame = _frame(HELLO_EXTRAS, body.getvalue())
        self._hello_frames[self.is_client] = frame
        return frame

    def _receive_hello(self, epoch: tls.Epoch, frame: bytes, out: dict[tls.Epoch, Buffer]) -> None:
        if epoch != tls.Epoch.INITIAL or (not self.is_client) in self._hello_frames:
            raise StateError("unexpected transport-parameters frame")
        reader = Reader(frame[1:])
        body = Reader(reader.opaque())
        reader.finish()
        transport_parameters = body.opaque()
        alpns = [a.decode("ascii", "replace") for a in body.vector(Reader.opaque)]
        body.finish()
        self._hello_frames[not self.is_client] = frame
        self.received_extensions = [(tls.ExtensionType.QUIC_TRANSPORT_PARAMETERS, transport_parameters)]
        ours = self.configuration.alpn_protocols or []
        if self.is_client:
            if len(alpns) != 1 or alpns[0] not in ours:
                raise ValidationError(f"server chose ALPN {alpns}, we offered {ours}")
            self.alpn_negotiated = alpns[0]
        else:
            common = [a for a in ours if a in alpns]
            if ours and not common:
                raise ValidationError(f"no common ALPN: client offered {alpns}, we support {ours}")
            self.alpn_negotiated = common[0] if common else None
        self.alpn_cb(self.alpn_negotiated)  # aioquic parses the transport parameters here
        if not self.is_client:
            out[tls.Epoch.INITIAL].push_bytes(self._our_hello())

    def _confirm_value(self) -> bytes:
        assert self.session is not None
        return self.session.export_secret("quic-mls client finished", self._binding(), 32)

    def _receive_confirm(self, epoch: tls.Epoch, frame: bytes) -> None:
        if self.is_client or epoch != tls.Epoch.HANDSHAKE or self.session is None:
            raise StateError("unexpected confirmation frame")
        reader = Reader(frame[1:])
        value = reader.opaque()
        reader.finish()
        if self.session.state is not State.SYNCED or not hmac.compare_digest(value, self._confirm_value()):
            raise ValidationError("client key confirmation does not match")
        self.state = tls.State.SERVER_POST_HANDSHAKE

    def _start_server_session(self, message: ProfileMessage) -> None:
        config = self.configuration
        if message.msg_type == ProfileMessageType.CLIENT_HELLO:
            self.session = TwoPartySession.responder(config.profile, on_state_change=self._persist())
            return
        if message.msg_type != ProfileMessageType.RESUMPTION_REQUEST:
            raise StateError(f"a connection starts with ClientHello or ResumptionRequest, not {message.msg_type.name}")
        inner = MLSMessage.from_bytes(message.body).body
        if isinstance(inner, PrivateMessage):
            group_id = inner.group_id
        elif isinstance(inner, PublicMessage):
            group_id = inner.content.group_id
        else:
            raise ValidationError("a ResumptionRequest must carry a commit")
        state = config.store.load(group_id) if config.store is not None else None
        if state is None:
            raise ValidationError(f"no stored session for group {group_id.hex()}")
        self.session = TwoPartySession.from_state(state, config.profile, on_state_change=self._persist())
        self.session.connection_lost()
        self.session_resumed = True

    # -- acting on the session ---------------------------------------------------------------

    def _space_for(self, msg_type: ProfileMessageType) -> tls.Epoch:
        """Hellos and resumption go in Initial; the resumer's ack in Handshake; rekeys in 1-RTT."""
        if msg_type in (ProfileMessageType.CLIENT_HELLO, ProfileMessageType.SERVER_HELLO,
                        ProfileMessageType.RESUMPTION_REQUEST, ProfileMessageType.RESUMPTION_RESPONSE):
            return tls.Epoch.INITIAL
        if self._one_rtt().epoch is None:
            return tls.Epoch.HANDSHAKE
        return tls.Epoch.ONE_RTT

    def _act(self, actions: list, out: dict[tls.Epoch, Buffer]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                out[self._space_for(action.msg_type)].push_bytes(action.data)
            elif isinstance(action, KeysChanged):
                self._keys_changed(action.epoch, action.reason, out)

    def _keys_changed(self, epoch: int, reason: str, out: dict[tls.Epoch, Buffer]) -> None:
        assert self.session is not None and self.session.group is not None
        pair = self._one_rtt()
        if pair.epoch is None:  # the handshake: install Handshake and 1-RTT keys
            if not self._handshake_installed:
                self._install(tls.Epoch.HANDSHAKE, self.session.group)
            recv, send = self._secrets(tls.Epoch.ONE_RTT, self.session.group)
            self.update_traffic_key_cb(tls.Direction.DECRYPT, tls.Epoch.ONE_RTT, self._suite(), recv)
            self.update_traffic_key_cb(tls.Direction.ENCRYPT, tls.Epoch.ONE_RTT, self._suite(), send)
            pair.epoch = epoch
            pair.next_source = self._next_epoch_secrets
            if self.is_client:
                confirm = _frame(CLIENT_CONFIRM, self._confirm_value())
                out[tls.Epoch.HANDSHAKE].push_bytes(confirm)
                self.state = tls.State.CLIENT_POST_HANDSHAKE
            else:
                self.state = tls.State.SERVER_EXPECT_FINISHED
            return
        if pair.epoch < epoch and not pair._update_key_requested:
            pair.update_key()  # flip the Key Phase on our next packet (unless the peer flipped first)
        self._connection._events.append(EpochChanged(epoch, reason))
        log.info("QUIC-MLS 1-RTT keys move to epoch %d (%s)", epoch, reason)

    def _next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        group = next_epoch_group(self.session, epoch)
        return self._secrets(tls.Epoch.ONE_RTT, group) if group is not None else None

    def _install(self, epoch: tls.Epoch, group: Any) -> None:
        recv, send = self._secrets(epoch, group)
        self.update_traffic_key_cb(tls.Direction.DECRYPT, epoch, self._suite(), recv)
        self.update_traffic_key_cb(tls.Direction.ENCRYPT, epoch, self._suite(), send)
        if epoch == tls.Epoch.HANDSHAKE:
            self._handshake_installed = True

    def _binding(self) -> bytes:
        """Both hello-extras frames, hashed: tampering with transport parameters or ALPN changes every key."""
        return hashlib.sha256(self._hello_frames.get(True, b"") + self._hello_frames.get(False, b"")).digest()

    def _secrets(self, epoch: tls.Epoch, group: Any) -> tuple[bytes, bytes]:
        length = 48 if self._suite() == tls.CipherSuite.AES_256_GCM_SHA384 else 32
        binding = self._binding()
        client = group.export_secret(LABELS[(epoch, True)], binding, length)
        server = group.export_secret(LABELS[(epoch, False)], binding, length)
        return (server, client) if self.is_client else (client, server)

    def _suite(self) -> tls.CipherSuite:
        if self._quic_suite is None:
            assert self.session is not None and self.session.group is not None
            self._quic_suite = QUIC_SUITES[self.session.group.suite.id]
        return self._quic_suite

    def _one_rtt(self) -> MlsCryptoPair:
        return self._connection._cryptos[tls.Epoch.ONE_RTT]  # type: ignore[return-value]

    def _persist(self):
        store = self.configuration.store
        return persist_to(store) if store is not None else None

    # -- used by the connection ------------------------------------------------------------

    def rekey(self, out: dict[tls.Epoch, Buffer]) -> bool:
        if self.session is None or self.session.state is not State.SYNCED or self._one_rtt().epoch is None:
            return False
        self._act(self.session.update(), out)
        return True


class MlsQuicConnection(QuicConnection):
    """A QuicConnection whose handshake and key updates are MLS (QUIC-MLS mode)."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls = MlsHandshakeContext(self, self.tls)  # type: ignore[assignment]
        self._cryptos[tls.Epoch.ONE_RTT] = MlsCryptoPair(self._cryptos[tls.Epoch.ONE_RTT])

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        if isinstance(self.tls, MlsHandshakeContext):
            self.tls.current_epoch = context.epoch
        super()._handle_crypto_frame(context, frame_type, buf)

    @property
    def mls_session(self) -> TwoPartySession | None:
        return self.tls.session if isinstance(self.tls, MlsHandshakeContext) else None

    @property
    def mls_epoch(self) -> int | None:
        pair = self._cryptos.get(tls.Epoch.ONE_RTT)
        return pair.epoch if isinstance(pair, MlsCryptoPair) else None

    def request_key_update(self) -> None:
        """RFC 9001 key update is replaced by an MLS rekey (a ConnectionUpdate)."""
        self.rekey()

    def rekey(self) -> bool:
        """Start a PCS rekey now; False if one is already in flight."""
        if not isinstance(self.tls, MlsHandshakeContext):
            return False
        started = self.tls.rekey(self._crypto_buffers)
        self._push_crypto_data()
        return started

    def datagrams_to_send(self, now: float) -> list:
        session = self.mls_session
        if session is not None and self.mls_epoch is not None and session.rekey_due(now, self._sent_since):
            self.rekey()
        datagrams = super().datagrams_to_send(now)
        self._sent_since = sum(len(data) for data, _ in datagrams)
        return datagrams

    _sent_since = 0


# -- alongside mode ---------------------------------------------------------------------------
#
# MLS alongside the QUIC TLS 1.3 handshake.
# MLS alongside the QUIC TLS 1.3 handshake: normal aioquic TLS first, then PCS rekeys by MLS.
#
# After aioquic's TLS handshake completes, the client runs the two-party profile
# on a reserved bidirectional stream (``MLS_STREAM``, never handed to the
# application).  Each confirmed MLS epoch is a 1-RTT Key Phase flip, like in
# QUIC-MLS mode, but the new packet-protection secrets mix MLS into TLS::
#
#     binding   = SHA-256(first client 1-RTT secret || first server 1-RTT secret)
#     secret_e  = HKDF-Extract(salt = first TLS 1-RTT secret of that direction,
#                              ikm  = MLS-Exporter("quic-mls alongside c|s", binding, Hash.length))
#
# so a thief of the TLS secrets alone cannot follow the keys after the first MLS
# epoch, and an MLS session spliced onto another QUIC connection (other TLS
# secrets, other binding) derives other keys.  aioquic has no TLS exporter
# interface, so the binding is computed from the first 1-RTT secrets, which are
# as connection-unique and as secret as an exporter value (docs/quic.md).

MLS_STREAM = 0
"""The client's first bidirectional stream carries the profile; applications get 4, 8, ..."""


class AlongsideQuicConnection(QuicConnection):
    """A standard TLS 1.3 QUIC connection whose 1-RTT keys then follow MLS epochs."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self._cryptos[tls.Epoch.ONE_RTT] = pair = MlsCryptoPair(self._cryptos[tls.Epoch.ONE_RTT])
        pair.next_source = self._next_epoch_secrets
        self._tls_secrets: dict[tls.Direction, bytes] = {}
        self._mls_session: TwoPartySession | None = None
        self._mls_buffer = MessageBuffer()
        original = self.tls.update_traffic_key_cb

        def capture(direction: tls.Direction, epoch: tls.Epoch, suite: tls.CipherSuite, secret: bytes) -> None:
            if epoch == tls.Epoch.ONE_RTT and direction not in self._tls_secrets:
                self._tls_secrets[direction] = secret
                self._tls_suite = suite
            original(direction, epoch, suite, secret)

        self.tls.update_traffic_key_cb = capture

    # -- the session -----------------------------------------------------------------

    @property
    def mls_session(self) -> TwoPartySession | None:
        return self._mls_session

    @property
    def mls_epoch(self) -> int | None:
        return self._cryptos[tls.Epoch.ONE_RTT].epoch  # type: ignore[union-attr]

    def _start_mls(self) -> None:
        config = self._configuration
        store = config.store  # type: ignore[attr-defined]
        hook = persist_to(store) if store is not None else None
        pair: MlsCryptoPair = self._cryptos[tls.Epoch.ONE_RTT]  # type: ignore[assignment]
        pair.epoch = 0  # the TLS keys
        if self._is_client:
            self._mls_session, actions = TwoPartySession.initiator(config.profile, on_state_change=hook)  # type: ignore[attr-defined]
            self._mls_act(actions)
        else:
            self._mls_session = TwoPartySession.responder(config.profile, on_state_change=hook)  # type: ignore[attr-defined]

    def _mls_negotiated(self, alpn: str | None) -> bool:
        from . import MLS_ALPN_SUFFIX

        self._mls_on = bool(alpn and alpn.endswith(MLS_ALPN_SUFFIX))
        if not self._mls_on and not self._configuration.allow_plain_peers:  # type: ignore[attr-defined]
            self.close(error_code=QuicErrorCode.CRYPTO_ERROR + 120,  # no_application_protocol
                       reason_phrase=f"peer does not run MLS alongside TLS (ALPN {alpn!r})")
        elif not self._mls_on:
            log.warning("peer negotiated plain %r: no MLS rekeying on this connection", alpn)
        return self._mls_on

    _mls_on = False

    def _binding(self) -> bytes:
        client = self._tls_secrets[tls.Direction.ENCRYPT if self._is_client else tls.Direction.DECRYPT]
        server = self._tls_secrets[tls.Direction.DECRYPT if self._is_client else tls.Direction.ENCRYPT]
        return hashlib.sha256(client + server).digest()

    def _next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        group = next_epoch_group(self._mls_session, epoch)
        if group is None:
            return None
        algorithm = tls.cipher_suite_hash(self._tls_suite)
        length = algorithm.digest_size
        binding = self._binding()

        def mixed(direction: tls.Direction, client_side: bool) -> bytes:
            label = "quic-mls alongside c" if client_side else "quic-mls alongside s"
            exported = group.export_secret(label, binding, length)
            return hmac.digest(self._tls_secrets[direction], exported, algorithm.name)

        recv = mixed(tls.Direction.DECRYPT, not self._is_client)
        send = mixed(tls.Direction.ENCRYPT, self._is_client)
        return recv, send

    def _mls_act(self, actions: list) -> None:
        pair: MlsCryptoPair = self._cryptos[tls.Epoch.ONE_RTT]  # type: ignore[assignment]
        for action in actions:
            if isinstance(action, SendMessage):
                self.send_stream_data(MLS_STREAM, action.data, False)
            elif isinstance(action, KeysChanged):
                # After phase 1 the server waits for the client's flip: the client cannot open
                # epoch-1 packets before it has processed the ServerHello.  Afterwards the replier
                # flips first, since the committer already knows the next epoch.
                first_epoch_on_server = pair.epoch == 0 and not self._is_client
                if (pair.epoch is not None and pair.epoch < action.epoch and not pair._update_key_requested
                        and not first_epoch_on_server):
                    pair.update_key()
                self._events.append(EpochChanged(action.epoch, action.reason))

    def _mls_receive(self, data: bytes) -> None:
        assert self._mls_session is not None
        try:
            for frame in self._mls_buffer.feed_frames(data):
                self._mls_act(self._mls_session.receive(frame))
        except MLSError as exc:
            raise QuicConnectionError(error_code=QuicErrorCode.CRYPTO_ERROR + 40, frame_type=0,
                                      reason_phrase=f"MLS: {type(exc).__name__}: {exc}") from exc

    # -- aioquic hooks -----------------------------------------------------------------

    def next_event(self) -> QuicEvent | None:
        while True:
            event = super().next_event()
            if event is None:
                return None
            if isinstance(event, HandshakeCompleted) and self._mls_session is None:
                if self._mls_negotiated(event.alpn_protocol):
                    self._start_mls()
                return event
            if isinstance(event, StreamDataReceived) and event.stream_id == MLS_STREAM and self._mls_on:
                if self._mls_session is None:
                    self._start_mls()  # the server learns of MLS from the first profile bytes
                try:
                    self._mls_receive(event.data)
                except QuicConnectionError as exc:
                    self.close(error_code=exc.error_code, reason_phrase=exc.reason_phrase)
                continue
            return event

    def request_key_update(self) -> None:
        self.rekey()

    def rekey(self) -> bool:
        """Start an MLS rekey now (the TLS key update is replaced by it)."""
        from mlscore.profile import State

        session = self._mls_session
        if session is None or session.state is not State.SYNCED:
            return False
        self._mls_act(session.update())
        return True

    def datagrams_to_send(self, now: float) -> list[Any]:
        session = self._mls_session
        if session is not None and self.mls_epoch and session.rekey_due(now, self._sent_since):
            self.rekey()
        datagrams = super().datagrams_to_send(now)
        self._sent_since = sum(len(data) for data, _ in datagrams)
        return datagrams

    _sent_since = 0


# -- touch point 5: the class aioquic's serve()/connect() instantiate ------------------------

_ORIGINAL = QuicConnection


def _connection_factory(*args: Any, **kwargs: Any) -> QuicConnection:
    from . import MlsQuicConfiguration

    configuration = kwargs.get("configuration")
    if isinstance(configuration, MlsQuicConfiguration) and configuration.mode == "mls":
        return MlsQuicConnection(*args, **kwargs)
    if isinstance(configuration, MlsQuicConfiguration) and configuration.mode == "alongside":
        return AlongsideQuicConnection(*args, **kwargs)
    return _ORIGINAL(*args, **kwargs)


def install() -> None:
    """Make aioquic's asyncio serve()/connect() build our connections for our configurations."""
    from aioquic.asyncio import client, server

    client.QuicConnection = _connection_factory  # type: ignore[assignment]
    server.QuicConnection = _connection_factory  # type: ignore[assignment]
