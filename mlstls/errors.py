"""Errors of mlstls; they extend :mod:`mlscore.errors` and :mod:`mls2p.errors`.

A :class:`~mlscore.errors.RemoteError` is the peer's fault (a bad record, a
refused TLS handshake), a :class:`~mlscore.errors.LocalError` ours (a key
limit reached without a rekey, a configuration mistake).
"""

from __future__ import annotations

from mls2p.errors import (
    AlertDescription,
    ConfigurationError,
    LocalError,
    MLSError,
    RemoteError,
    StateError,
    UnexpectedMessage,
    alert_for,
)
from mlscore.errors import DecodeError


class RecordError(DecodeError):
    """A record that must not be accepted (bad length, bad framing, no content type): decode_error."""


class KeyLimitReached(LocalError):
    """The current keys protected as many records as RFC 8446 section 5.5 allows."""


class MissingExtra(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra (``pip install mls-transport[...]``)."""


class TlsAlert(RemoteError):
    """The peer broke a TLS 1.3 rule (the Housley mode's own handshake): closed with the alert RFC 8446 names."""

    def __init__(self, alert: AlertDescription, reason: str) -> None:
        super().__init__(reason)
        self.alert = alert


class TlsError(RemoteError):
    """The outer TLS 1.3 connection (alongside mode) failed: handshake, certificate, hostname, ALPN."""


class HandshakeError(MLSError):
    """A connection ended before its handshake completed; the message says why (the alert sent or received)."""

    def __init__(self, reason: str, *, alert: AlertDescription = AlertDescription.HANDSHAKE_FAILURE,
                 by_peer: bool = False, authenticated: bool = True) -> None:
        super().__init__(reason)
        self.alert = alert
        self.by_peer = by_peer
        self.authenticated = authenticated
        """False for a peer's plaintext alert: anyone on the path could have sent it."""


class TruncatedStream(RemoteError, ConnectionResetError):
    """The peer's byte stream ended (TCP FIN or reset) after keys existed but before its close_notify.

    TLS 1.3 (RFC 8446 section 6.1) makes a clean end explicit so that a FIN an
    attacker injects, or a peer that crashed mid-message, cannot pass for "all
    data sent": the reader raises this instead of returning ``b""``, once every
    byte that did arrive has been read.

    It is a :class:`~mlscore.errors.RemoteError` (the input from outside is
    incomplete; it is not this side's doing) and a :class:`ConnectionResetError`,
    hence a :class:`ConnectionError` and :class:`OSError`: asyncio code that
    already handles a connection ended by the peer (and a fatal alert, which
    the reader reports as :class:`ConnectionResetError`) handles this too,
    while code that must tell a truncation apart catches this class.  Both bases
    are plain exception classes, so the two hierarchies combine without
    conflict; ``errno`` is None.
    """


class TunnelError(MLSError):
    """The tunnel cannot run: the peer refused us (or we it), or the server cannot be reached."""


__all__ = [
    "AlertDescription",
    "ConfigurationError",
    "HandshakeError",
    "KeyLimitReached",
    "RecordError",
    "StateError",
    "TlsError",
    "TruncatedStream",
    "TunnelError",
    "UnexpectedMessage",
    "alert_for",
]
