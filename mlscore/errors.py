"""The error hierarchy of mlscore; the other packages' hierarchies extend it.

Every failure the core can detect raises a subclass of :class:`MLSError` with
a message that says what was wrong.  Two branches tell a caller whose fault it
was, like h11's ``LocalProtocolError``/``RemoteProtocolError``:

* :class:`RemoteError`: the input (a peer's message, a certificate, a stored
  blob read back) is not valid.  A transport answers with an alert and closes.
* :class:`LocalError`: this side asked for something it cannot do now
  (:class:`StateError`), built something that cannot be encoded
  (:class:`EncodeError`) or was configured wrongly (:class:`ConfigurationError`).

Callers that only want "did this fail" catch :class:`MLSError`; callers that
react differently to a bad signature and a stale epoch catch the subclass.
"""

from __future__ import annotations


class MLSError(Exception):
    """Base class of every error raised by mlscore, mls2p, mlstls and mlsquic."""


# -- the input was bad ---------------------------------------------------------------

class RemoteError(MLSError):
    """Input from outside (usually the peer) is invalid."""


class DecodeError(RemoteError):
    """Bytes that are not a valid encoding (truncated, trailing data, bad varint, over a limit...)."""


class UnsupportedError(RemoteError):
    """A well-formed value that this implementation does not support (suite, version...)."""


class CryptoError(RemoteError):
    """A cryptographic operation failed on input (bad key, failed AEAD/HPKE open...)."""


class InvalidSignatureError(CryptoError):
    """A signature did not verify."""


class ValidationError(RemoteError):
    """A decoded object violates a rule of RFC 9420 or of the two-party profile."""


class CredentialError(ValidationError):
    """A credential was rejected by the authentication service."""


class TreeError(ValidationError):
    """The ratchet tree is malformed or does not validate."""


class EpochError(ValidationError):
    """A message belongs to another group or epoch than the one expected."""


class ReplayError(ValidationError):
    """A message (generation, reuse guard) was already consumed."""


# -- this side got it wrong -------------------------------------------------------------

class LocalError(MLSError):
    """This side's own request or configuration is at fault, not the peer."""


class StateError(LocalError):
    """An operation that is not allowed in the current state (a destroyed epoch, a closed session...)."""


class EncodeError(LocalError):
    """A value this side built cannot be encoded (a bug in the caller, never peer input)."""


class ConfigurationError(LocalError, ValueError):
    """A user mistake in a configuration or an argument; the message says what to change."""
