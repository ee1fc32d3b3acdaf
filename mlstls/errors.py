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


class TlsError(RemoteError):
    """The outer TLS 1.3 connection (alongside mode) failed: handshake, certificate, hostname, ALPN."""


class HandshakeError(MLSError):
    """A connection ended before its handshake completed; the message says why (the alert sent or received)."""

    def __init__(self, reason: str, *, alert: AlertDescription = AlertDescription.HANDSHAKE_FAILURE,
                 by_peer: bool = False) -> None:
        super().__init__(reason)
        self.alert = alert
        self.by_peer = by_peer


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
    "TunnelError",
    "UnexpectedMessage",
    "alert_for",
]
