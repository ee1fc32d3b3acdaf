"""Errors of mlsquic; they extend :mod:`mlscore.errors` and :mod:`mls2p.errors`.

A failed QUIC connection is closed with CRYPTO_ERROR (0x100) plus the alert
:func:`~mls2p.errors.alert_for` picks, the same alert mlstls would send, and
the reason phrase names the error.
"""

from __future__ import annotations

from aioquic import tls

from mls2p.errors import AlertDescription, ConfigurationError, MLSError, alert_for

CRYPTO_ERROR = 0x100
"""RFC 9001 section 4.8: a TLS alert ``a`` closes a QUIC connection with error code 0x100 + a."""


class MlsQuicAlert(tls.Alert):
    """An aioquic ``tls.Alert`` carrying the alert our error maps to (aioquic turns it into CONNECTION_CLOSE)."""

    def __init__(self, description: AlertDescription, reason: str) -> None:
        super().__init__(reason)
        self.description = tls.AlertDescription(int(description))


MAX_REASON = 200
"""Longest CONNECTION_CLOSE reason phrase we send (it must fit one packet on every aioquic)."""


def reason_for(error: MLSError, prefix: str = "") -> str:
    """``Type: message``, cut to :data:`MAX_REASON` characters."""
    text = f"{prefix}{type(error).__name__}: {error}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def alert_from(error: MLSError) -> MlsQuicAlert:
    """The aioquic alert for one of our errors, with a bounded ``Type: message`` as the reason phrase."""
    return MlsQuicAlert(alert_for(error), reason_for(error))


def error_code_for(error: MLSError) -> int:
    """The QUIC transport error code for one of our errors."""
    return CRYPTO_ERROR + int(alert_for(error))


__all__ = ["CRYPTO_ERROR", "ConfigurationError", "MlsQuicAlert", "alert_from", "error_code_for", "reason_for"]
