"""MLS alongside the QUIC TLS 1.3 handshake: normal aioquic TLS first, then PCS rekeys by MLS.

After aioquic's TLS handshake completes, the client runs the two-party profile
on a reserved bidirectional stream (``MLS_STREAM``, never handed to the
application).  Each confirmed MLS epoch is a 1-RTT Key Phase flip, like in
QUIC-MLS mode, but the new packet-protection secrets mix MLS into TLS::

    binding   = SHA-256(first client 1-RTT secret || first server 1-RTT secret)
    secret_e  = HKDF-Extract(salt = first TLS 1-RTT secret of that direction,
                             ikm  = MLS-Exporter("quic-mls alongside c|s", binding, Hash.length))

so a thief of the TLS secrets alone cannot follow the keys after the first MLS
epoch, and an MLS session spliced onto another QUIC connection (other TLS
secrets, other binding) derives other keys.  aioquic has no TLS exporter
interface, so the binding is computed from the first 1-RTT secrets, which are
as connection-unique and as secret as an exporter value (docs/quic.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from aioquic import tls
from aioquic.quic.connection import QuicConnection, QuicConnectionError, QuicErrorCode
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived

from mlscore.errors import MLSError
from mlscore.profile import KeysChanged, SendMessage, TwoPartySession, persist_to
from mlscore.profile_wire import MessageBuffer

from ._aioquic_glue import EpochChanged, MlsCryptoPair, next_epoch_group

log = logging.getLogger(__name__)

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
