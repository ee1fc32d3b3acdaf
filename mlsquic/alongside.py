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

No application byte crosses before MLS is confirmed: the application's writes
are held (their streams exist, so stream ids advance as usual) and the peer's
stream data is held too, until the client has the first MLS epoch or the
server has seen the client's first packet under it; a refused peer's held data
is dropped with the connection.  A legitimate peer sends no application data
before that point (its own writes wait for its first MLS epoch), so what a peer
may park here is bounded by :data:`MAX_HELD_BEFORE_MLS`, far below the
connection's initial flow-control credit, which therefore never grows while
data is held (aioquic raises credit when half of it is used, read or not).

The profile's messages are processed when their datagram arrives, not when the
application next polls events: a driver that sends before it polls still moves
to the first MLS epoch in time.  A peer that has not completed MLS within
``mls_handshake_timeout`` seconds of the TLS handshake is closed.  Stream 0 is
the profile's: the application gets 4, 8, ... and may not write to 0.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import deque

from aioquic import tls
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived, StreamReset

from mls2p.errors import AlertDescription, StateError, UnexpectedMessage
from mls2p.session import KeysChanged, SendMessage, SessionAction
from mls2p.wire import MessageBuffer

from .config import MLS_ALPN_SUFFIX
from .epochs import EpochKeyedConnection
from .errors import CRYPTO_ERROR, TRANSPORT_CLOSE

log = logging.getLogger(__name__)

MLS_STREAM = 0
"""The client's first bidirectional stream carries the profile; applications get 4, 8, ..."""
_APPLICATION_STREAM_EVENTS = (StreamDataReceived, StreamReset)
MAX_HELD_BEFORE_MLS = 64 * 1024
"""Application bytes held for a peer that has not completed MLS; more closes the connection."""


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
        self._gate_open = False  # application bytes may flow
        self._held_writes: list[tuple[int, bytes, bool]] = []
        self._held_events: list[QuicEvent] = []
        self._held_bytes = 0
        self._released: deque[QuicEvent] = deque()
        if self.is_client:
            super().send_stream_data(MLS_STREAM, b"", False)  # reserve stream 0: applications start at 4
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
            self.close(error_code=CRYPTO_ERROR + AlertDescription.NO_APPLICATION_PROTOCOL, frame_type=TRANSPORT_CLOSE,
                       reason_phrase=f"peer does not run MLS alongside TLS (ALPN {alpn!r})")
        elif not self._mls_on:
            log.warning("peer negotiated plain %r: no MLS rekeying on this connection", alpn)
            self.one_rtt.plain = True  # its key updates are RFC 9001's own, and are answered
            self._open_gate()
        return self._mls_on

    # -- nothing of the application's before MLS is confirmed ------------------------------------

    def _mls_ready(self) -> bool:
        """The client has the first MLS epoch; the server has the client's first packet under it."""
        session = self.endpoint.session
        if session is None or session.group is None:
            return False
        return self.is_client or (self.one_rtt.epoch or 0) >= 1

    def mls_complete(self) -> bool:
        return self._gate_open

    def _open_gate(self) -> None:
        self._gate_open = True
        session = self.endpoint.session
        if self._mls_on and session is not None and session.group is not None and not self.endpoint.confirmed:
            self.act(self.endpoint.peer_confirmed())  # the client flipped to the MLS keys: it holds them
        for stream_id, data, end_stream in self._held_writes:
            super().send_stream_data(stream_id, data, end_stream)
        self._held_writes.clear()
        self._released.extend(self._held_events)
        self._held_events.clear()
        self._held_bytes = 0

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """The application's writes: never on stream 0 (MLS), held until MLS is confirmed."""
        if stream_id == MLS_STREAM and (self.is_client or self._mls_on):
            raise StateError("stream 0 carries the MLS profile; use get_next_available_stream_id()")
        if self._gate_open:
            super().send_stream_data(stream_id, data, end_stream)
            return
        super().send_stream_data(stream_id, b"", False)  # the stream exists now, so ids advance
        self._held_writes.append((stream_id, bytes(data), end_stream))

    def _send_mls(self, data: bytes) -> None:
        super().send_stream_data(MLS_STREAM, data, False)

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
                self._send_mls(action.data)
            elif isinstance(action, KeysChanged):
                # After phase 1 the server waits for the client's flip: the client cannot open
                # epoch-1 packets before it has processed the ServerHello.  Afterwards the replier
                # flips first, since the committer already knows the next epoch.
                self.flip_to(action.epoch, action.reason, now=self.is_client or self.one_rtt.epoch != 0)

    def _mls_receive(self, data: bytes) -> None:
        def receive() -> None:
            for frame in self._mls_buffer.feed_frames(data):
                self.act(self.endpoint.receive(frame, self._now))

        self.run_endpoint(receive)

    # -- aioquic's events ----------------------------------------------------------------------

    def after_receive(self) -> None:
        if hasattr(self, "endpoint"):  # after_initialize ran (a datagram aioquic dropped may come first)
            self._drain()

    def next_event(self) -> QuicEvent | None:
        if not hasattr(self, "endpoint"):
            return super().next_event()
        self._drain()
        self._maybe_open_gate()
        return self._released.popleft() if self._released else None

    def _maybe_open_gate(self) -> None:
        if not self._gate_open and self._mls_on and self._mls_ready():
            self._open_gate()

    def _drain(self) -> None:
        """Take aioquic's events as they happen: the profile's now, the application's into the queue."""
        while (event := super().next_event()) is not None:
            self._sort(event)

    def _sort(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted) and not self._mls_started:
            if self._mls_negotiated(event.alpn_protocol):
                self._start_mls()
            self._released.append(event)
            return
        if isinstance(event, StreamDataReceived) and event.stream_id == MLS_STREAM and self._mls_on:
            if not self._mls_started:
                self._start_mls()  # the server may see the first profile bytes before HandshakeCompleted
            self._mls_receive(event.data)
            return
        if isinstance(event, StreamReset) and event.stream_id == MLS_STREAM and self._mls_on:
            # The profile's own stream: never the application's business, and MLS cannot go on without it.
            self._close_for(UnexpectedMessage("the peer reset stream 0, which carries the MLS profile"))
            return
        self._maybe_open_gate()
        if isinstance(event, _APPLICATION_STREAM_EVENTS) and not self._gate_open:
            self._hold(event)
            return
        self._released.append(event)

    def _hold(self, event: QuicEvent) -> None:
        self._held_bytes += len(event.data) if isinstance(event, StreamDataReceived) else 0
        if self._held_bytes > MAX_HELD_BEFORE_MLS:
            self._held_events.clear()
            self._close_for(UnexpectedMessage(f"the peer sent more than {MAX_HELD_BEFORE_MLS} bytes of "
                                              "application data before completing MLS"))
            return
        self._held_events.append(event)  # dropped if MLS fails
