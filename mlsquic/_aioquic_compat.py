"""Every reliance on aioquic's private names, in one place.

Tested with the aioquic versions pinned in pyproject.toml (see
:data:`TESTED_AIOQUIC`); ``tests/test_mlsquic_compat.py`` checks each touch
point against the installed aioquic, so an aioquic change fails there first,
with the touch point's name, instead of somewhere deep in a handshake.

Nothing here changes aioquic for anyone else: there is no patching.  mlsquic's
connection classes subclass :class:`HookedQuicConnection` and are passed to
aioquic explicitly (``mlsquic.serve``/``mlsquic.connect``).

Touch points:

1. ``QuicConnection._initialize(peer_cid)``: aioquic's one-time set-up once the
   peer's connection id is known; it creates ``self.tls`` and ``self._cryptos``.
   :class:`HookedQuicConnection` calls :meth:`~HookedQuicConnection.after_initialize`
   after it, where mlsquic replaces the TLS context (QUIC-MLS mode) and the 1-RTT
   crypto pair.
2. ``QuicConnection._handle_crypto_frame(context, frame_type, buf)``: the CRYPTO
   frame handler; ``context.epoch`` is the packet number space.  aioquic's TLS
   infers the space from its own state; the MLS handshake needs it, so
   :meth:`~HookedQuicConnection.before_crypto_frame` is told first.  The frame's
   offset and length are read ahead (and the buffer rewound) to refuse more
   pending CRYPTO data than :data:`MAX_PENDING_CRYPTO`, using
   ``_crypto_streams[epoch].receiver.starting_offset()``.
3. ``QuicConnection._cryptos``, ``_crypto_streams[epoch].sender.write()``,
   ``_events``, ``_is_client``, ``_configuration``: read through the accessors
   of :class:`HookedQuicConnection`.  CRYPTO data is written to the crypto
   streams directly: aioquic's per-space output buffers hold only 16 KiB, and a
   profile message (X.509 chains, post-quantum keys) may be larger.
4. ``QuicConnection.tls``: read as a ``tls.Context`` with these attributes, which
   :class:`mlsquic.handshake.MlsHandshakeContext` provides in QUIC-MLS mode:
   ``handle_message(data, buffers)``, ``state``, ``alpn_negotiated``,
   ``received_extensions``, ``session_resumed``, ``early_data_accepted``,
   ``handshake_extensions``, ``alpn_cb``, ``update_traffic_key_cb``,
   ``get_session_ticket_cb``, ``new_session_ticket_cb``, ``session_ticket``,
   ``certificate``/``certificate_chain``/``certificate_private_key``,
   ``legacy_session_id``, ``client_random``.
5. ``CryptoPair._update_key(trigger)``, ``_update_key_requested``, and the
   contexts' ``_setup_cb``/``_teardown_cb``: :class:`MlsCryptoPair` moves the
   1-RTT keys to the next MLS epoch at a Key Phase flip instead of deriving
   "quic ku" secrets; the header-protection key stays, as in RFC 9001.
6. ``CryptoContext.decrypt_packet``'s behaviour (header-protection removal,
   packet number decoding, the key-phase bit) is reproduced by
   :class:`MlsCryptoContext`, which opens a flipped packet with the next
   epoch's keys; ``aioquic._crypto.CryptoError`` is the AEAD's failure.
7. ``QuicConnectionProtocol._connection_id_issued_handler``,
   ``_connection_id_retired_handler``, ``_connection_terminated_handler``: the
   callbacks a server uses to route datagrams by connection id
   (:func:`watch_connection_ids`).
8. ``QuicConnectionProtocol._quic``: the connection a protocol drives
   (:func:`quic_of`), as aioquic's own examples use it.
9. ``QuicConnection._peer_cid.cid`` and ``._packet_number``: what an on-path
   observer learns of the next 1-RTT packet; only the PCS experiment's thief
   reads them (:func:`wire_position`).
10. ``QuicConnection._loss.get_probe_timeout()``: the PTO, for how long the
    previous Key Phase's keys are kept (RFC 9001 section 6.5, :func:`probe_timeout`).
    ``CryptoPair._update_key`` and ``CryptoContext.decrypt_packet`` of aioquic
    itself serve an alongside peer that does not run MLS (``MlsCryptoPair.plain``).
11. ``QuicConnection._handshake_confirmed`` and
    ``_spaces[epoch].largest_acked_packet`` (one packet number counter serves every
    space in aioquic): whether a Key Phase flip may start (RFC 9001 section 6.1,
    :func:`may_initiate_key_update`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic._crypto import CryptoError as AeadError  # touch point 6
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from aioquic.quic.crypto import CryptoContext, CryptoPair, KeyUnavailableError, apply_key_phase
from aioquic.quic.events import QuicEvent
from aioquic.quic.packet import QuicErrorCode, decode_packet_number

from mls2p.wire import MAX_MESSAGE_SIZE

MAX_PENDING_CRYPTO = MAX_MESSAGE_SIZE + 16 * 1024
"""CRYPTO bytes a connection buffers per packet number space: the largest profile message and our
hello frame, not aioquic's 512 KiB, since none of it is authenticated yet."""

TESTED_AIOQUIC = (">=1.2", "<1.8")
"""The aioquic versions these touch points were checked against (pyproject.toml pins the same)."""

NextSecrets = Callable[[int], "tuple[bytes, bytes] | None"]


class HookedQuicConnection(QuicConnection):
    """A QuicConnection with public hooks in place of aioquic's private methods (touch points 1-3)."""

    def _initialize(self, peer_cid: bytes) -> None:  # touch point 1
        super()._initialize(peer_cid)
        self.after_initialize()

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:  # touch point 2
        start = buf.tell()
        offset, length = buf.pull_uint_var(), buf.pull_uint_var()
        buf.seek(start)
        pending = offset + length - self._crypto_streams[context.epoch].receiver.starting_offset()
        if pending > MAX_PENDING_CRYPTO:
            # aioquic would buffer 512 KiB per packet number space before anyone is authenticated.
            raise QuicConnectionError(error_code=QuicErrorCode.CRYPTO_BUFFER_EXCEEDED, frame_type=frame_type,
                                      reason_phrase=f"more than {MAX_PENDING_CRYPTO} bytes of CRYPTO data pending")
        self.before_crypto_frame(context.epoch)
        super()._handle_crypto_frame(context, frame_type, buf)

    def after_initialize(self) -> None:
        """Called once aioquic has built its TLS context and crypto pairs."""

    def before_crypto_frame(self, epoch: tls.Epoch) -> None:
        """Called with the packet number space of each CRYPTO frame before aioquic handles it."""

    # -- touch point 3 ---------------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return bool(self._is_client)

    @property
    def quic_configuration(self) -> QuicConfiguration:
        return self._configuration

    def crypto_pair(self, epoch: tls.Epoch) -> CryptoPair:
        return self._cryptos[epoch]

    def replace_crypto_pair(self, epoch: tls.Epoch, pair: CryptoPair) -> None:
        self._cryptos[epoch] = pair

    def write_crypto(self, epoch: tls.Epoch, data: bytes) -> None:
        """Queue CRYPTO data in ``epoch``'s packet number space, any length (aioquic's own buffers hold 16 KiB)."""
        self._crypto_streams[epoch].sender.write(data)

    def queue_event(self, event: QuicEvent) -> None:
        self._events.append(event)


class MlsCryptoContext(CryptoContext):
    """A 1-RTT receive context whose next Key Phase uses the pair's next MLS secret (touch point 6)."""

    pair: MlsCryptoPair

    def decrypt_packet(self, packet: bytes, encrypted_offset: int,
                       expected_packet_number: int) -> tuple[bytes, bytes, int, bool]:
        if self.pair.plain:
            return super().decrypt_packet(packet, encrypted_offset, expected_packet_number)
        if self.aead is None:
            raise KeyUnavailableError("Decryption key is not available")
        if self.hp is None:  # setup() installs the AEAD and the header protection together
            raise KeyUnavailableError("1-RTT receive keys without header protection")
        plain_header, packet_number = self.hp.remove(packet, encrypted_offset)
        first_byte = plain_header[0]
        packet_number = decode_packet_number(packet_number, ((first_byte & 0x03) + 1) * 8, expected_packet_number)
        body = packet[len(plain_header):]
        if first_byte & 0x80 or ((first_byte & 4) >> 2) == self.key_phase:
            payload = self.aead.decrypt(body, plain_header, packet_number)
            self.pair.peer_in_current_phase()
            return plain_header, payload, packet_number, False
        previous = self.pair.previous_receive()
        if previous is not None:
            # We flipped first; the peer's packets still use the old phase until it sees ours.
            with contextlib.suppress(AeadError):
                return plain_header, previous.decrypt(body, plain_header, packet_number), packet_number, False
        crypto = self.pair.next_context(receive=True)
        if crypto.aead is None:  # next_context() has just set it up
            raise KeyUnavailableError("the next key phase has no AEAD")
        payload = crypto.aead.decrypt(body, plain_header, packet_number)
        return plain_header, payload, packet_number, True


class MlsCryptoPair(CryptoPair):
    """1-RTT keys that move to the next MLS epoch at each Key Phase flip (touch point 5).

    Flips are sequential (epoch N to N+1).  ``next_secrets(epoch)`` returns
    (receive, send) secrets for an epoch, or None while it is unknown.  The
    previous phase's receive keys open late packets for ``retention()`` seconds
    (``clock()``) after the peer's first packet in the new phase, as RFC 9001
    section 6.5 asks (three PTO), and are then dropped.  ``plain`` (an alongside
    connection whose peer does not run MLS) makes flips RFC 9001's own "quic ku".
    """

    def __init__(self, original: CryptoPair, next_secrets: NextSecrets, *, clock: Callable[[], float],
                 retention: Callable[[], float]) -> None:
        super().__init__()
        recv = MlsCryptoContext(setup_cb=original.recv._setup_cb, teardown_cb=original.recv._teardown_cb)
        recv.pair = self
        self.recv = recv
        self.send = CryptoContext(setup_cb=original.send._setup_cb, teardown_cb=original.send._teardown_cb)
        self.epoch: int | None = None
        self.next_secrets = next_secrets
        self.previous_aead: Any = None  # the previous phase's receive keys, for late packets
        self.previous_until: float | None = None  # when they go (None: not before the peer flips too)
        self.plain = False
        self.packets_sealed = 0  # under the current phase's keys (RFC 9001 section 6.6 usage limits)
        self.clock = clock
        self.retention = retention
        self.first_sealed: int | None = None  # packet number of our first packet in the current phase
        self.ahead: dict[int, tuple[bytes, bytes]] = {}  # confirmed epochs not yet flipped to: their secrets
        self._next_receive: tuple[int, CryptoContext] | None = None  # built once per epoch, not per packet

    @property
    def update_requested(self) -> bool:
        """A local Key Phase flip is queued for our next packet."""
        return bool(self._update_key_requested)

    def next_context(self, *, receive: bool) -> CryptoContext:
        # A forged packet with the other Key Phase bit costs one failed AEAD open, like any forged
        # packet: the next epoch's receive context is derived once and reused.
        if receive and self._next_receive is not None and self._next_receive[0] == self.epoch:
            return self._next_receive[1]
        found = None
        if self.epoch is not None:
            found = self.ahead.get(self.epoch + 1) or self.next_secrets(self.epoch + 1)
        if found is None:
            raise KeyUnavailableError("key phase flipped but the next MLS epoch is not known")
        recv_secret, send_secret = found
        current = self.recv if receive else self.send
        if current.cipher_suite is None or current.version is None:  # a flip needs the current keys set up
            raise KeyUnavailableError("key phase flip before the 1-RTT keys were set up")
        crypto = CryptoContext(key_phase=int(not current.key_phase))
        crypto.setup(cipher_suite=current.cipher_suite, secret=recv_secret if receive else send_secret,
                     version=current.version)
        if receive and self.epoch is not None:
            self._next_receive = (self.epoch, crypto)
        return crypto

    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        sealed = super().encrypt_packet(plain_header, plain_payload, packet_number)
        self.packets_sealed += 1  # after the flip a pending update makes, so it counts the new phase
        if self.first_sealed is None:
            self.first_sealed = packet_number
        return sealed

    def peer_in_current_phase(self) -> None:
        """A packet of the current phase arrived: the previous phase's keys have ``retention()`` left."""
        if self.previous_aead is not None and self.previous_until is None:
            self.previous_until = self.clock() + self.retention()

    def previous_receive(self) -> Any:
        """The previous phase's receive AEAD while it may still open late packets, else None (and dropped)."""
        self.expire(self.clock())
        return self.previous_aead

    def expire(self, now: float) -> None:
        """Drop the previous phase's keys once their time is up (the connection calls this on every tick)."""
        if self.previous_until is not None and now >= self.previous_until:
            self.previous_aead = self.previous_until = None

    def _update_key(self, trigger: str) -> None:
        self.packets_sealed = 0
        self.first_sealed = None
        if self.plain:
            super()._update_key(trigger)
            return
        self.previous_aead = self.recv.aead
        # A local flip keeps the old keys until the peer flips too (its packets still use them); a remote
        # flip means the peer is in the new phase already: late packets of the old one get three PTO.
        self.previous_until = None if trigger == "local_update" else self.clock() + self.retention()
        apply_key_phase(self.recv, self.next_context(receive=True), trigger=trigger)
        apply_key_phase(self.send, self.next_context(receive=False), trigger=trigger)
        assert self.epoch is not None
        self.epoch += 1
        self.ahead = {epoch: secrets for epoch, secrets in self.ahead.items() if epoch > self.epoch}
        self._next_receive = None
        self._update_key_requested = False


def probe_timeout(connection: QuicConnection) -> float:
    """The connection's current PTO in seconds (touch point 10: ``QuicConnection._loss.get_probe_timeout()``)."""
    return float(connection._loss.get_probe_timeout())


def may_initiate_key_update(connection: QuicConnection, first_sealed: int | None) -> bool:
    """RFC 9001 section 6.1: the handshake is confirmed and a packet of the current phase (the first one we
    sealed in it, ``first_sealed``) has been acknowledged (touch point 11)."""
    if not connection._handshake_confirmed or first_sealed is None:
        return False
    space = connection._spaces.get(tls.Epoch.ONE_RTT)
    return space is not None and space.largest_acked_packet >= first_sealed


def watch_connection_ids(protocol: QuicConnectionProtocol, *, issued: Callable[[bytes], None],
                         retired: Callable[[bytes], None], terminated: Callable[[], None]) -> None:
    """Have ``protocol`` report connection ids and its end to a server (touch point 7)."""
    protocol._connection_id_issued_handler = issued
    protocol._connection_id_retired_handler = retired
    protocol._connection_terminated_handler = terminated


def quic_of(protocol: QuicConnectionProtocol) -> QuicConnection:
    """The connection ``protocol`` drives (touch point 8)."""
    return protocol._quic


def wire_position(connection: QuicConnection) -> tuple[bytes, int]:
    """(peer connection id, next packet number): what a captured packet reveals anyway (touch point 9)."""
    return connection._peer_cid.cid, connection._packet_number
