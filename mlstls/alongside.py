"""MLS alongside TLS 1.3: a real TLS handshake (pyOpenSSL), then the two-party profile, then one record layer.

The TLS 1.3 handshake runs first (certificates, hostname check, TLS 1.3 only,
ALPN ``mls-transport/2``).  Inside TLS the profile's handshake runs as the
MLS-TLS byte stream of :mod:`mlstls.connection`; as soon as a side has keys it
sends :data:`END_OF_TLS` inside TLS and from then on writes MLS-TLS records
straight on TCP, keyed per direction and epoch by::

    binding = TLS-Exporter("EXPORTER-mls-transport alongside", "", 32)      (RFC 8446 7.5)
    secret  = HKDF-Extract(salt = binding,
                           IKM  = MLS-Exporter("MLS-TLS c|s ap traffic", binding, Hash.length))

So application data is encrypted once, under keys that stay secret while
either the TLS connection or the current MLS epoch is, and that change with
every MLS epoch (PCS); an MLS session spliced onto another TLS connection
derives different keys and fails at its first record.  docs/alongside.md has
the construction and its security argument.

pyOpenSSL runs over memory BIOs, so this class is as sans-I/O as the rest:
bytes in, bytes out, events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable

from cryptography import x509
from OpenSSL import SSL

from mls2p.bootstrap import ProfileEndpoint
from mls2p.session import TwoPartySession
from mlscore.errors import CredentialError, MLSError

from .config import MlsTlsConfiguration, TlsSettings
from .connection import ConnectionTerminated, Event, MlsTlsConnection
from .errors import AlertDescription, ConfigurationError, StateError, TlsError

log = logging.getLogger(__name__)

BINDING_LABEL = b"EXPORTER-mls-transport alongside"
ALPN = b"mls-transport/2"
"""Version 2: after the profile's handshake each side leaves TLS for MLS-TLS records on TCP (version 1
encrypted every record twice)."""
END_OF_TLS = bytes([24]) + b"\x03\x03\x00\x00"
"""Sent inside TLS, last: "my next bytes on TCP are MLS-TLS records" (an empty record of type 24, a type
the inner stream never uses)."""
MAX_TLS_RECORD = (1 << 14) + 256
"""Longest TLSCiphertext fragment (RFC 8446 section 5.2)."""


def make_context(settings: TlsSettings, *, is_client: bool) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_alpn_protos([ALPN]) if is_client else context.set_alpn_select_callback(_select_alpn)
    if settings.keylog is not None:
        keylog = settings.keylog
        context.set_keylog_callback(lambda _connection, line: keylog(line))
    try:
        if settings.certfile:
            context.use_certificate_chain_file(settings.certfile)
            context.use_privatekey_file(settings.keyfile or settings.certfile)
        if is_client and settings.verify:
            if not settings.cafile:
                raise ConfigurationError("a verifying client needs a cafile")
            context.load_verify_locations(settings.cafile)
            context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    except SSL.Error as exc:
        raise ConfigurationError(f"cannot load the TLS certificate, key or CA file: {exc}") from None
    return context


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    if ALPN in offered:
        return ALPN
    return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


def check_hostname(certificate: x509.Certificate, hostname: str) -> None:
    """RFC 6125 subset: exact or single left-most wildcard DNS SAN, or an IP SAN."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise TlsError("server certificate has no subjectAltName") from None
    try:
        address = ipaddress.ip_address(hostname)
        if address in names.get_values_for_type(x509.IPAddress):
            return
        raise TlsError(f"server certificate is not valid for {hostname}")
    except ValueError:
        pass
    wanted = hostname.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == wanted or (name.startswith("*.") and wanted.partition(".")[2] == name[2:] and "." in name[2:]):
            return
    raise TlsError(f"server certificate is not valid for {hostname}")


class AlongsideConnection:
    """An MLS-TLS connection that starts inside a TLS 1.3 connection (same interface as MlsTlsConnection).

    Each direction runs in two stretches: TLS records carrying the inner
    connection's plaintext records (the profile's handshake, and alerts), then
    the inner connection's own protected records straight on the TCP stream.
    The sender marks the end of the first stretch with :data:`END_OF_TLS`
    inside TLS, sent exactly when its first protected record is due; the
    receiver feeds TLS one record at a time, so it knows that every byte after
    the TLS record carrying the marker is an MLS-TLS record.  Application data
    is therefore encrypted once, under keys that need both the TLS connection's
    exporter and the MLS epoch (docs/alongside.md).
    """

    def __init__(self, configuration: MlsTlsConfiguration) -> None:
        if configuration.tls is None:
            raise ConfigurationError("alongside mode needs configuration.tls")
        self.configuration = configuration
        settings = self.settings = configuration.tls
        self.is_client = configuration.is_client
        self._tls: SSL.Connection | None = SSL.Connection(make_context(settings, is_client=self.is_client), None)
        if self.is_client:
            self._tls.set_connect_state()
            if settings.server_hostname:
                self._tls.set_tlsext_host_name(settings.server_hostname.encode())
        else:
            self._tls.set_accept_state()
        self.inner: MlsTlsConnection | None = None
        self.wakeup: Callable[[], None] | None = None
        """Passed to the inner connection: sends what it queued outside receive_data (a trust reload)."""
        self.tls_cipher: str | None = None
        self._events: list[Event] = []
        self._closed = self._closing = False
        self._now = 0.0
        self._tcp = bytearray()  # received bytes not yet cut into TLS records
        self._tls_plaintext = bytearray()  # decrypted TLS payload not yet cut into inner records
        self.sending_raw = False  # we sent END_OF_TLS: our records go straight on TCP
        self.receiving_raw = False  # the peer's END_OF_TLS arrived: its records come straight on TCP

    # -- the MlsTlsConnection interface ------------------------------------------------

    @property
    def session(self) -> TwoPartySession | None:
        return self.inner.session if self.inner else None

    @property
    def endpoint(self) -> ProfileEndpoint | None:
        """The inner connection's profile endpoint (None until MLS starts inside TLS)."""
        return self.inner.endpoint if self.inner else None

    @property
    def established(self) -> bool:
        """Keys exist and neither layer has closed, as :attr:`MlsTlsConnection.established`.

        The stream layer reads "established when the peer's bytes stopped" as a
        truncation (:class:`~mlstls.errors.TruncatedStream`), so a connection
        this wrapper failed or closed must not count, even while its inner
        connection still holds keys.
        """
        return not self._closed and self.inner is not None and self.inner.established

    @property
    def epoch(self) -> int | None:
        return self.inner.epoch if self.inner else None

    @property
    def closed(self) -> bool:
        return self._closed or (self.inner is not None and self.inner.closed)

    @property
    def last_rekey(self) -> float | None:
        return self.inner.last_rekey if self.inner else None

    @property
    def write_closed(self) -> bool:
        return self.inner is not None and self.inner.write_closed

    @property
    def read_closed(self) -> bool:
        return self.inner is not None and self.inner.read_closed

    def connect(self, now: float = 0.0) -> None:
        self._now = now
        try:
            self._handshake()
        except (SSL.Error, MLSError) as exc:
            self._fail(exc)

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        if self.closed:
            return
        self._now = now
        if self.receiving_raw:
            assert self.inner is not None
            self.inner.receive_data(data, now)
            return
        self._tcp += data
        try:
            while not self.receiving_raw and not self.closed and (record := self._next_tls_record()):
                assert self._tls is not None
                self._tls.bio_write(record)
                if self.inner is None:
                    self._handshake()
                if self.inner is not None:
                    self._pull()
        except (SSL.Error, MLSError) as exc:
            self._fail(exc)
            return
        if self.receiving_raw and self._tcp and self.inner is not None:
            rest = bytes(self._tcp)
            self._tcp.clear()
            self.inner.receive_data(rest, now)

    def send_data(self, data: bytes, now: float | None = None) -> None:
        if self.inner is None:
            raise StateError("the handshake has not completed")
        self.inner.send_data(data, now)

    def rekey(self, *, full: bool = False) -> None:
        if self.inner is not None:
            self.inner.rekey(full=full)

    def poll(self, now: float) -> None:
        if self.inner is not None:
            self.inner.poll(now)

    def send_eof(self) -> None:
        """Half-close: the inner close_notify (:meth:`MlsTlsConnection.send_eof`); its records go on TCP."""
        if self.inner is None:
            raise StateError("the handshake has not completed")
        self.inner.send_eof()

    def close(self) -> None:
        """The inner close_notify, and TLS's own while this side still speaks TLS; sent by data_to_send()."""
        if self.inner is not None:
            self.inner.close()
        self._closed = self._closing = True

    def connection_lost(self) -> None:
        """TCP is gone.  EOF is reported as in place of TLS: the only clean end is the inner close_notify.

        A TLS close_notify (``SSL.ZeroReturnError`` while TLS still carries the
        peer's records) is not one: a peer closing cleanly sends the inner
        close_notify first, so a stream with keys that ends without it is cut
        (:class:`~mlstls.streams.MlsTlsProtocol` checks :attr:`established`
        before calling this, and raises :class:`~mlstls.errors.TruncatedStream`).
        """
        if self.inner is not None:
            self.inner.connection_lost()
        self._closed = True
        self._tls = None

    def data_to_send(self) -> bytes:
        protected = b""
        if self.inner is not None:
            plaintext, protected = self.inner.records_to_send()
            try:
                if plaintext:
                    if self.sending_raw:
                        raise StateError("plaintext records after END_OF_TLS")
                    self._tls_send(plaintext)
                if protected and not self.sending_raw:
                    self._tls_send(END_OF_TLS)
                    self.sending_raw = True
            except (SSL.Error, MLSError) as exc:
                self._fail(exc)
                protected = b""
        if self._closing and not self.sending_raw and self._tls is not None:
            with contextlib.suppress(SSL.Error):
                self._tls.shutdown()
        out = bytearray()
        while self._tls is not None:
            try:
                chunk = self._tls.bio_read(1 << 20)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        self._release_tls()
        if not out:
            return protected
        out += protected
        return bytes(out)

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.pop(0)
        return self.inner.next_event() if self.inner is not None else None

    # -- internals ----------------------------------------------------------------------

    def _next_tls_record(self) -> bytes | None:
        """The next whole TLS record of the received bytes (handed to OpenSSL one at a time)."""
        if len(self._tcp) < 5:
            return None
        length = int.from_bytes(self._tcp[3:5], "big")
        if length > MAX_TLS_RECORD:
            raise TlsError(f"TLS record of {length} bytes exceeds {MAX_TLS_RECORD}")
        end = 5 + length
        if len(self._tcp) < end:
            return None
        record = bytes(self._tcp[:end])
        del self._tcp[:end]
        return record

    def _tls_send(self, data: bytes) -> None:
        if data and self._tls is not None:
            self._tls.sendall(data)

    def _handshake(self) -> None:
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            raise TlsError(f"TLS handshake failed: {exc}") from None
        if self.is_client and self.settings.verify and self.settings.server_hostname:
            peer = self._tls.get_peer_certificate(as_cryptography=True)
            if peer is None:
                raise TlsError("the server sent no certificate")
            check_hostname(peer, self.settings.server_hostname)
        if self._tls.get_alpn_proto_negotiated() != ALPN:
            raise TlsError(f"the peer does not speak {ALPN.decode()} (ALPN)")
        binding = self._tls.export_keying_material(BINDING_LABEL, 32, None)
        self.tls_cipher = self._tls.get_cipher_name()
        self.inner = MlsTlsConnection(self.configuration, tls_binding=binding)
        self.inner.wakeup = self.wakeup
        log.info("TLS 1.3 established (%s); starting MLS inside", self.tls_cipher)
        if self.is_client:
            self.inner.connect(self._now)

    def _pull(self) -> None:
        """Decrypt what TLS has; pass whole inner records on, and notice the peer's END_OF_TLS."""
        assert self.inner is not None and self._tls is not None
        while True:
            try:
                chunk = self._tls.recv(1 << 18)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                break
            if not chunk:
                break
            self._tls_plaintext += chunk
        buffer, offset = self._tls_plaintext, 0
        while len(buffer) - offset >= 5:
            if buffer[offset : offset + 5] == END_OF_TLS:
                if len(buffer) != offset + 5:
                    raise TlsError("data after END_OF_TLS inside TLS")
                self.receiving_raw = True
                break
            end = offset + 5 + int.from_bytes(buffer[offset + 3 : offset + 5], "big")
            if end > len(buffer):
                break
            offset = end
        records = bytes(buffer[:offset])
        del buffer[: offset + (5 if self.receiving_raw else 0)]
        if records:
            self.inner.receive_data(records, self._now)
        self._release_tls()

    def _release_tls(self) -> None:
        """Once both directions left TLS, the TLS connection is done with: free it."""
        if self.sending_raw and self.receiving_raw and self._tls is not None:
            self._tls = None

    def _fail(self, error: Exception) -> None:
        log.warning("alongside connection failed: %s", error)
        reason = f"{type(error).__name__}: {error}"
        self._events.append(ConnectionTerminated(
            AlertDescription.BAD_CERTIFICATE if isinstance(error, (TlsError, CredentialError))
            else AlertDescription.HANDSHAKE_FAILURE, reason, False))
        self._closed = True
