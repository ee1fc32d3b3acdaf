"""Alongside mode: aioquic's TLS 1.3 handshake first, then MLS rekeys as Key Phase flips (docs/quic.md).

After the TLS handshake completes, the client runs the two-party profile on a
reserved bidirectional stream (:data:`MLS_STREAM`, never handed to the
application).  Each confirmed MLS epoch is a 1-RTT Key Phase flip, as in
QUIC-MLS mode, but the new packet-protection secrets mix MLS into TLS::

    binding   = SHA-256(first client 1-RTT secret || first server 1-RTT secret)
    secret_e  = HKDF-Extract(salt = first TLS 1-RTT secret of that direction,
                             ikm  = MLS-Exporter("quic-mls alongside c|s", binding, Hash.length))

so a thief of the TLS secrets alone cannot follow the keys after the first MLS
epoch, and an MLS session spliced onto another QUIC connection (other TLS
secrets, other binding) derives other keys.  aioquic has no TLS exporter
interface, so the binding is computed from the first 1-RTT secrets, which are
as connection-unique and as secret as an exporter value.

Peers agree to run MLS by ALPN: ``<alpn>+mls2p``.  A peer that negotiates the
plain ALPN is refused unless ``allow_plain_peers`` is set.  Resumption is a
QUIC-MLS mode feature; an alongside connection always runs phase 1.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from aioquic import tls
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived

from mls2p.errors import AlertDescription
from mls2p.session import KeysChanged, SendMessage, SessionAction
from mls2p.wire import MessageBuffer
from mlscore.errors import MLSError

from .config import MLS_ALPN_SUFFIX
from .epochs import EpochKeyedConnection
from .errors import CRYPTO_ERROR, error_code_for

log = logging.getLogger(__name__)

MLS_STREAM = 0
"""The client's first bidirectional stream carries the profile; applications get 4, 8, ..."""


class AlongsideQuicConnection(EpochKeyedConnection):
    """A standard TLS 1.3 QUIC connection whose 1-RTT keys then follow MLS epochs."""

    def after_initialize(self) -> None:
        super().after_initialize()
        self.endpoint.allow_resumption = False
        self._tls_secrets: dict[tls.Direction, bytes] = {}
        self._tls_suite: tls.CipherSuite | None = None
        self._mls_buffer = MessageBuffer()
        self._mls_on = False
        self._mls_started = False
        original = self.tls.update_traffic_key_cb

        def capture(direction: tls.Direction, epoch: tls.Epoch, suite: tls.CipherSuite, secret: bytes) -> None:
            if epoch == tls.Epoch.ONE_RTT and direction not in self._tls_secrets:
                self._tls_secrets[direction] = secret
                self._tls_suite = suite
            original(direction, epoch, suite, secret)

        self.tls.update_traffic_key_cb = capture  # touch point 4: the context's own public callback

    # -- MLS on stream 0 -----------------------------------------------------------------------

    def _start_mls(self) -> None:
        self._mls_started = True
        self.one_rtt.epoch = 0  # the TLS keys
        if self.is_client:
            self.act(self.endpoint.start())

    def _mls_negotiated(self, alpn: str | None) -> bool:
        self._mls_on = bool(alpn and alpn.endswith(MLS_ALPN_SUFFIX))
        if not self._mls_on and not self.mls_configuration.allow_plain_peers:
            self.close(error_code=CRYPTO_ERROR + AlertDescription.NO_APPLICATION_PROTOCOL,
                       reason_phrase=f"peer does not run MLS alongside TLS (ALPN {alpn!r})")
        elif not self._mls_on:
            log.warning("peer negotiated plain %r: no MLS rekeying on this connection", alpn)
        return self._mls_on

    def _binding(self) -> bytes:
        client = self._tls_secrets[tls.Direction.ENCRYPT if self.is_client else tls.Direction.DECRYPT]
        server = self._tls_secrets[tls.Direction.DECRYPT if self.is_client else tls.Direction.ENCRYPT]
        return hashlib.sha256(client + server).digest()

    def next_epoch_secrets(self, epoch: int) -> tuple[bytes, bytes] | None:
        session = self.endpoint.session
        group = session.next_epoch_group(epoch) if session is not None else None
        if group is None or self._tls_suite is None:
            return None
        algorithm = tls.cipher_suite_hash(self._tls_suite)
        binding = self._binding()

        def mixed(direction: tls.Direction, client_side: bool) -> bytes:
            label = "quic-mls alongside c" if client_side else "quic-mls alongside s"
            exported = group.export_secret(label, binding, algorithm.digest_size)
            return hmac.digest(self._tls_secrets[direction], exported, algorithm.name)

        return mixed(tls.Direction.DECRYPT, not self.is_client), mixed(tls.Direction.ENCRYPT, self.is_client)

    def act(self, actions: list[SessionAction]) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                self.send_stream_data(MLS_STREAM, action.data, False)
            elif isinstance(action, KeysChanged):
                # After phase 1 the server waits for the client's flip: the client cannot open
                # epoch-1 packets before it has processed the ServerHello.  Afterwards the replier
                # flips first, since the committer already knows the next epoch.
                self.flip_to(action.epoch, action.reason, now=self.is_client or self.one_rtt.epoch != 0)

    def _mls_receive(self, data: bytes) -> None:
        try:
            for frame in self._mls_buffer.feed_frames(data):
                self.act(self.endpoint.receive(frame, self._now))
        except MLSError as exc:
            log.warning("MLS alongside failed: %s: %s", type(exc).__name__, exc)
            self.close(error_code=error_code_for(exc), reason_phrase=f"MLS: {type(exc).__name__}: {exc}")

    # -- aioquic's events ----------------------------------------------------------------------

    def next_event(self) -> QuicEvent | None:
        while True:
            event = super().next_event()
            if event is None:
                return None
            if isinstance(event, HandshakeCompleted) and not self._mls_started:
                if self._mls_negotiated(event.alpn_protocol):
                    self._start_mls()
                return event
            if isinstance(event, StreamDataReceived) and event.stream_id == MLS_STREAM and self._mls_on:
                if not self._mls_started:
                    self._start_mls()  # the server may see the first profile bytes before HandshakeCompleted
                self._mls_receive(event.data)
                continue
            return event
