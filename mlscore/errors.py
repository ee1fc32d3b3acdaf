"""One error hierarchy for the whole project.

Every failure the core can detect raises a subclass of :class:`MLSError` with a
message that says what was wrong.  Callers that only want to know "did the peer
send something bad" catch :class:`MLSError`; callers that react differently to
a bad signature and a stale epoch catch the specific subclass.
"""

from __future__ import annotations


class MLSError(Exception):
    """Base class of every error raised by mlscore, mlsquic and mlstls."""


class DecodeError(MLSError):
    """Bytes that are not a valid encoding (truncated, trailing data, bad varint...)."""


class UnsupportedError(MLSError):
    """A well-formed value that this implementation does not support (suite, version...)."""


class CryptoError(MLSError):
    """A cryptographic operation failed (bad key, failed AEAD/HPKE open...)."""


class InvalidSignatureError(CryptoError):
    """A signature did not verify."""


class ValidationError(MLSError):
    """A decoded object violates a rule of RFC 9420 or of the two-party profile."""


class CredentialError(ValidationError):
    """A credential was rejected by the authentication service."""


class TreeError(ValidationError):
    """The ratchet tree is malformed or does not validate."""


class EpochError(ValidationError):
    """A message belongs to another group or epoch than the one expected."""


class ReplayError(ValidationError):
    """A message (generation, reuse guard) was already consumed."""


class StateError(MLSError):
    """An operation or message that is not allowed in the current state."""
