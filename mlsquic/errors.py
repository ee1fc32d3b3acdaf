"""Errors of mlsquic; they extend :mod:`mlscore.errors` and :mod:`mls2p.errors`.

A failed QUIC connection is closed with CRYPTO_ERROR (0x100) plus the alert
:func:`~mls2p.errors.alert_for` picks, the same alert mlstls would send, in a
transport CONNECTION_CLOSE (0x1c: CRYPTO_ERROR is a transport error code, RFC
9000 section 20.1).  Before the peer is authenticated the reason phrase says no
more than the code (the alert's name): a prober must not learn whether a name is
pinned, or to which key; the details go to the local log.  Afterwards it names
the error.
"""

from __future__ import annotations

from aioquic import tls
from aioquic.quic.packet import QuicFrameType

from mls2p.errors import AlertDescription, ConfigurationError, MLSError, PeerSkippedTurn, alert_for

CRYPTO_ERROR = 0x100
"""RFC 9001 section 4.8: a TLS alert ``a`` closes a QUIC connection with error code 0x100 + a."""
TRANSPORT_CLOSE = QuicFrameType.PADDING
"""The ``frame_type`` that makes aioquic's ``close()`` send a transport CONNECTION_CLOSE (0x1c; 0: no
particular frame) instead of an application one, which in Initial and Handshake packets becomes a bare
APPLICATION_ERROR (0xc) without the code or the reason."""


class KeyPhaseStalled(PeerSkippedTurn):
    """Our Key Phase lags too many confirmed MLS epochs behind, because the peer does not acknowledge our
    packets (RFC 9001 section 6.1 holds every flip until it does): closed with insufficient_security,
    like a skipped turn, since the keys in use no longer heal anything."""


class MlsQuicAlert(tls.Alert):
    """An aioquic ``tls.Alert`` carrying the alert our error maps to (aioquic turns it into CONNECTION_CLOSE)."""

    def __init__(self, description: AlertDescription, reason: str) -> None:
        super().__init__(reason)
        self.description = tls.AlertDescription(int(description))


MAX_REASON = 200
"""Longest CONNECTION_CLOSE reason phrase we send (it must fit one packet on every aioquic)."""


def reason_for(error: MLSError, prefix: str = "", *, detailed: bool = True) -> str:
    """``Type: message``, cut to :data:`MAX_REASON` characters; only the alert's name unless ``detailed``."""
    if not detailed:
        return f"{prefix}{alert_for(error).name.lower()}"
    text = f"{prefix}{type(error).__name__}: {error}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def alert_from(error: MLSError, *, detailed: bool = False) -> MlsQuicAlert:
    """The aioquic alert for one of our errors; the reason phrase as :func:`reason_for` makes it."""
    return MlsQuicAlert(alert_for(error), reason_for(error, detailed=detailed))


def error_code_for(error: MLSError) -> int:
    """The QUIC transport error code for one of our errors."""
    return CRYPTO_ERROR + int(alert_for(error))


__all__ = ["CRYPTO_ERROR", "TRANSPORT_CLOSE", "ConfigurationError", "KeyPhaseStalled", "MlsQuicAlert", "alert_from",
           "error_code_for", "reason_for"]
