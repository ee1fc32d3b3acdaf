"""MLS alongside TLS 1.3: a real TLS connection (pyOpenSSL), the two-party profile inside it.

The TLS 1.3 handshake runs first (certificates, hostname check, TLS 1.3 only).
Inside the TLS stream we then run exactly the MLS-TLS byte stream of
:mod:`mlstls.connection`, with one change: the MLS-derived record keys are
bound to this TLS connection by using its exporter value as the MLS-Exporter
context::

    binding = TLS-Exporter("EXPORTER-mls-transport alongside", "", 32)      (RFC 8446 7.5)
    c/s secret = MLS-Exporter("MLS-TLS c|s ap traffic", binding, Hash.length)

So application data is encrypted twice: by TLS, and by keys that change with
every MLS epoch.  A thief of the TLS traffic secrets reads MLS-TLS records it
cannot open once the next MLS epoch starts, and an MLS session spliced onto
another TLS connection derives different keys and fails at its first record.

pyOpenSSL runs over memory BIOs, so this class is as sans-I/O as the rest:
bytes in, bytes out, events.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from cryptography import x509
from OpenSSL import SSL

from mls2p.session import TwoPartySession
from mlscore.errors import CredentialError, MLSError

from .config import MlsTlsConfiguration, TlsSettings
from .connection import ConnectionTerminated, Event, MlsTlsConnection
from .errors import AlertDescription, ConfigurationError, StateError, TlsError

log = logging.getLogger(__name__)

BINDING_LABEL = b"EXPORTER-mls-transport alongside"
ALPN = b"mls-transport/1"


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
    """An MLS-TLS connection carried inside a TLS 1.3 connection (same interface as MlsTlsConnection)."""

    def __init__(self, configuration: MlsTlsConfiguration) -> None:
        if configuration.tls is None:
            raise ConfigurationError("alongside mode needs configuration.tls")
        self.configuration = configuration
        settings = self.settings = configuration.tls
        self.is_client = configuration.is_client
        self._tls = SSL.Connection(make_context(settings, is_client=self.is_client), None)
        if self.is_client:
            self._tls.set_connect_state()
            if settings.server_hostname:
                self._tls.set_tlsext_host_name(settings.server_hostname.encode())
        else:
            self._tls.set_accept_state()
        self.inner: MlsTlsConnection | None = None
        self._events: list[Event] = []
        self._closed = False
        self._now = 0.0

    # -- the MlsTlsConnection interface ------------------------------------------------

    @property
    def session(self) -> TwoPartySession | None:
        return self.inner.session if self.inner else None

    @property
    def established(self) -> bool:
        return self.inner is not None and self.inner.established

    @property
    def epoch(self) -> int | None:
        return self.inner.epoch if self.inner else None

    @property
    def closed(self) -> bool:
        return self._closed or (self.inner is not None and self.inner.closed)

    @property
    def last_rekey(self) -> float | None:
        return self.inner.last_rekey if self.inner else None

    def connect(self, now: float = 0.0) -> None:
        self._now = now
        self._handshake()

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        if self.closed:
            return
        self._now = now
        try:
            self._tls.bio_write(data)
            if self.inner is None:
                self._handshake()
            if self.inner is not None:
                self._pull()
        except (SSL.Error, MLSError) as exc:
            self._fail(exc)

    def send_data(self, data: bytes) -> None:
        if self.inner is None:
            raise StateError("the handshake has not completed")
        self.inner.send_data(data)

    def rekey(self) -> None:
        if self.inner is not None:
            self.inner.rekey()

    def poll(self, now: float) -> None:
        if self.inner is not None:
            self.inner.poll(now)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
            with contextlib.suppress(SSL.Error):
                self._tls.sendall(self.inner.data_to_send())  # the inner close_notify
        self._closed = True
        with contextlib.suppress(SSL.Error):
            self._tls.shutdown()

    def connection_lost(self) -> None:
        if self.inner is not None:
            self.inner.connection_lost()
        self._closed = True

    def data_to_send(self) -> bytes:
        if self.inner is not None:
            plain = self.inner.data_to_send()
            if plain and not self._closed:
                try:
                    self._tls.sendall(plain)
                except SSL.Error as exc:
                    self._fail(exc)
        out = bytearray()
        while True:
            try:
                chunk = self._tls.bio_read(1 << 20)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.pop(0)
        return self.inner.next_event() if self.inner is not None else None

    # -- internals ----------------------------------------------------------------------

    def _handshake(self) -> None:
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
            raise TlsError("the peer does not speak mls-transport/1 (ALPN)")
        binding = self._tls.export_keying_material(BINDING_LABEL, 32, None)
        self.inner = MlsTlsConnection(self.configuration, binding=binding)
        log.info("TLS 1.3 established (%s); starting MLS inside", self._tls.get_cipher_name())
        if self.is_client:
            self.inner.connect(self._now)

    def _pull(self) -> None:
        assert self.inner is not None
        plain = bytearray()
        while True:
            try:
                chunk = self._tls.recv(1 << 18)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                break
            if not chunk:
                break
            plain += chunk
        if plain:
            self.inner.receive_data(bytes(plain), self._now)

    def _fail(self, error: Exception) -> None:
        log.warning("alongside connection failed: %s", error)
        reason = f"{type(error).__name__}: {error}"
        self._events.append(ConnectionTerminated(
            AlertDescription.BAD_CERTIFICATE if isinstance(error, (TlsError, CredentialError))
            else AlertDescription.HANDSHAKE_FAILURE, reason, False))
        self._closed = True

