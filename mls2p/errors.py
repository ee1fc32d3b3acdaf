"""Errors of the two-party profile, and the one alert each failure maps to.

The hierarchy extends :mod:`mlscore.errors`: a :class:`~mlscore.errors.RemoteError`
is the peer's fault, a :class:`~mlscore.errors.LocalError` ours.  Both
transports close a failed connection with the alert :func:`alert_for` picks,
so a TLS alert and a QUIC CRYPTO_ERROR (0x100 + alert) always say the same.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from mlscore.errors import (
    ConfigurationError,
    CredentialError,
    CryptoError,
    DecodeError,
    InvalidSignatureError,
    LocalError,
    MLSError,
    RemoteError,
    StateError,
    UnsupportedError,
    ValidationError,
)


class UnexpectedMessage(RemoteError):
    """The peer sent a profile message that the current state does not allow (no row in the table)."""


class ReplayedMessage(RemoteError):
    """The peer (or someone on the path) sent a message this connection already processed."""


class RevokedPeer(CredentialError):
    """The trust configuration in force no longer accepts a peer it accepted before (certificate_revoked)."""


class PeerRateExceeded(RemoteError):
    """The peer forces commits faster than the configured minimum interval (a CPU and disk amplifier)."""


class PeerSkippedTurn(RemoteError):
    """The peer did not commit within ``RekeyPolicy.turn_timeout`` of our CommitRequest, and the policy
    says to close (``on_unanswered="close"``): its state would otherwise stay unhealed."""


class StoreError(LocalError):
    """The session store could not read or write."""


class StoreUnavailable(StoreError):
    """The store did not answer within its deadline, or is known to be down (its circuit is open): this
    connection's session is unchanged, and the operation can be tried again later.

    ``late``: for a call that timed out, the call itself (a ``concurrent.futures.Future``), which may still
    complete: a write that lands late must be known to the next one, whose fence names what is stored."""

    late: Any = None


NOT_DURABLE = "landed, not durable"
"""The result of a ``StoreUnavailable.late`` call whose write reached the store but not enough of its replicas:
it is what is stored now (the next fenced write replaces it), but it must be written again to count as stored."""


class StaleStateError(StoreError):
    """A fenced write found newer state than this connection read: the session continued elsewhere."""


class StoredStateError(LocalError):
    """Stored session state is corrupt or in a format this release cannot read."""


class InternalError(LocalError):
    """Something that is not one of our errors escaped while handling input (a bug, or a library's own
    exception on hostile input): the connection is closed with internal_error, nothing else breaks."""


def as_project_error(error: Exception) -> MLSError:
    """``error`` if it is ours, else an InternalError naming it (for the one place a transport closes)."""
    if isinstance(error, MLSError):
        return error
    return InternalError(f"unexpected {type(error).__name__}: {error}")


class AlertDescription(IntEnum):
    """The TLS 1.3 alerts (RFC 8446 section 6) the transports send; QUIC adds 0x100."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    RECORD_OVERFLOW = 22
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    CERTIFICATE_REVOKED = 44
    ILLEGAL_PARAMETER = 47
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    PROTOCOL_VERSION = 70
    INSUFFICIENT_SECURITY = 71
    INTERNAL_ERROR = 80
    MISSING_EXTENSION = 109
    UNSUPPORTED_EXTENSION = 110
    NO_APPLICATION_PROTOCOL = 120


_ALERTS: tuple[tuple[type[MLSError], AlertDescription], ...] = (
    (RevokedPeer, AlertDescription.CERTIFICATE_REVOKED),
    (PeerSkippedTurn, AlertDescription.INSUFFICIENT_SECURITY),
    (CredentialError, AlertDescription.BAD_CERTIFICATE),
    (InvalidSignatureError, AlertDescription.DECRYPT_ERROR),
    (CryptoError, AlertDescription.BAD_RECORD_MAC),
    (DecodeError, AlertDescription.DECODE_ERROR),
    (UnexpectedMessage, AlertDescription.UNEXPECTED_MESSAGE),
    (ReplayedMessage, AlertDescription.UNEXPECTED_MESSAGE),
    (StateError, AlertDescription.UNEXPECTED_MESSAGE),
    (UnsupportedError, AlertDescription.HANDSHAKE_FAILURE),
    (ValidationError, AlertDescription.ILLEGAL_PARAMETER),
    # Stored state that cannot be read will never be: the peer should start afresh.  (A store that
    # cannot be reached, or a fenced write that lost, stays internal_error: worth retrying.)
    (StoredStateError, AlertDescription.HANDSHAKE_FAILURE),
)


def alert_for(error: BaseException) -> AlertDescription:
    """The alert that names ``error`` best (its own, if it carries one); anything unforeseen is an internal error."""
    own = getattr(error, "alert", None)
    if isinstance(error, MLSError) and isinstance(own, AlertDescription):
        return own
    for kind, alert in _ALERTS:
        if isinstance(error, kind):
            return alert
    return AlertDescription.INTERNAL_ERROR


__all__ = [
    "AlertDescription",
    "ConfigurationError",
    "InternalError",
    "LocalError",
    "MLSError",
    "PeerRateExceeded",
    "PeerSkippedTurn",
    "RemoteError",
    "ReplayedMessage",
    "RevokedPeer",
    "StaleStateError",
    "StateError",
    "StoreError",
    "StoreUnavailable",
    "StoredStateError",
    "UnexpectedMessage",
    "alert_for",
    "as_project_error",
]
