"""Every touch of tlslite-ng that the Housley mode makes (docs/housley.md), in one place.

The mode runs its own TLS 1.3 handshake state machine (mlstls.housley) and uses
tlslite-ng as building blocks: its message classes (ClientHello, ServerHello,
EncryptedExtensions, Finished), its record layer (TLS 1.3 record protection)
and its key-derivation functions.  Only public names are used: the record layer
is driven over an in-memory socket, as tlslite-ng's own non-blocking mode
expects (a socket that raises EWOULDBLOCK makes its generators yield).  No
tlslite-ng code is copied, nothing of it is patched: a stock tlslite-ng
connection in the same process is unaffected (tests/test_housley.py).

Tested with tlslite-ng 0.8.2; another version is refused at import, because the
handshake messages' ``parse``/``write`` and the record layer's states are what
the mode's wire format rests on.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import TypeVar

from mls2p.errors import AlertDescription, UnexpectedMessage
from mlscore.errors import CryptoError, DecodeError, ValidationError

from .errors import MissingExtra, TlsAlert

try:  # an optional dependency: without it, importing this (or mlstls.housley) says which extra to install
    from tlslite import __version__ as TLSLITE_VERSION
    from tlslite.constants import CipherSuite, ContentType, ExtensionType, GroupName, HandshakeType
    from tlslite.errors import (
        TLSBadRecordMAC,
        TLSDecodeError,
        TLSDecryptionFailed,
        TLSIllegalParameterException,
        TLSInternalError,
        TLSRecordOverflow,
        TLSUnexpectedMessage,
    )
    from tlslite.extensions import (
        ClientKeyShareExtension,
        KeyShareEntry,
        SrvSupportedVersionsExtension,
        SupportedGroupsExtension,
        SupportedVersionsExtension,
        TLSExtension,
    )
    from tlslite.messages import (
        ClientHello,
        EncryptedExtensions,
        Finished,
        Message,
        NewSessionTicket,
        ServerHello,
    )
    from tlslite.recordlayer import RecordLayer
    from tlslite.utils.codec import DecodeError as TlsliteDecodeError
    from tlslite.utils.codec import Parser
    from tlslite.utils.cryptomath import HKDF_expand_label, secureHMAC
except ImportError as exc:
    raise MissingExtra(f"MLS inside the TLS 1.3 handshake needs tlslite-ng: pip install mls-transport[housley] "
                       f"({exc})") from exc


M = TypeVar("M")

TESTED = ("0.8.2",)
"""The tlslite-ng versions the Housley mode is tested with (pyproject's ``housley`` extra pins them)."""

if TLSLITE_VERSION not in TESTED:
    raise MissingExtra(f"the Housley mode is tested with tlslite-ng {', '.join(TESTED)}, not "
                             f"{TLSLITE_VERSION}: install mls-transport[housley]")


class MemorySocket:
    """What tlslite-ng's record layer reads from and writes to: bytes in, bytes out, never blocking."""

    def __init__(self) -> None:
        self.incoming = bytearray()
        self.outgoing = bytearray()

    def send(self, data: bytes | bytearray) -> int:
        self.outgoing += data
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.incoming:
            raise OSError(errno.EWOULDBLOCK, "no data yet")  # tlslite-ng's generators then yield and wait
        chunk = bytes(self.incoming[:size])
        del self.incoming[:size]
        return chunk

    def take(self) -> bytes:
        data, self.outgoing = bytes(self.outgoing), bytearray()
        return data


class Records:
    """A TLS 1.3 record layer (tlslite-ng's) over a :class:`MemorySocket`, sans-I/O."""

    def __init__(self, *, is_client: bool) -> None:
        self.socket = MemorySocket()
        self._layer = RecordLayer(self.socket)
        self._layer.client = is_client
        self._layer.version = (3, 4)
        self._layer.tls13record = True
        self._reading: Iterator[object] | None = None
        self._outer_type = 0

    def send(self, content_type: int, data: bytes) -> None:
        """Protect ``data`` (one record; the caller splits at 2^14) under the write keys in force."""
        for _ in self._layer.sendRecord(Message(content_type, bytearray(data))):
            pass  # MemorySocket.send never blocks

    def feed(self, data: bytes) -> None:
        self.socket.incoming += data

    def next_record(self) -> tuple[int, int, bytes] | None:
        """The next whole record's (type on the wire, content type, plaintext), or None until more bytes
        arrive: a protected record is application_data on the wire whatever it carries, so the first value
        tells a plaintext record (an alert an attacker injected, say) from a protected one.  A record that
        fails to open raises tlslite-ng's error (:func:`as_mls_error` names its alert)."""
        if self._reading is None:
            if len(self.socket.incoming) < 5:
                return None  # not even a header: nothing started
            self._outer_type = self.socket.incoming[0]
            self._reading = iter(self._layer.recvRecord())
        result = next(self._reading)
        if result in (0, 1):
            return None  # the generator waits in the middle of a record: keep it for the next call
        self._reading = None
        header, parser = result  # type: ignore[misc]
        assert isinstance(parser, Parser)
        return self._outer_type, header.type, bytes(parser.bytes)

    def install(self, suite: int, client_secret: bytes, server_secret: bytes, *, read: bool, write: bool) -> None:
        """New traffic keys (RFC 8446 section 7.3) for our read and/or write direction; sequence numbers
        restart at 0."""
        self._layer.calcTLS1_3PendingState(suite, bytearray(client_secret), bytearray(server_secret), ["python"])
        if write:
            self._layer.changeWriteState()
        if read:
            self._layer.changeReadState()


def parse(message: M, body: bytes) -> M:
    """``message.parse`` of a peer's handshake message (its 3-byte length first); what tlslite-ng raises on
    bad input is decode_error, and a repeated extension illegal_parameter (RFC 8446 section 4.2), never an
    internal error."""
    try:
        parsed = message.parse(Parser(bytearray(body)))  # type: ignore[attr-defined]
        types = [extension.extType for extension in getattr(parsed, "extensions", None) or ()]
    except TLSInternalError as exc:
        if "Multiple extensions" in str(exc):
            raise ValidationError(f"a handshake message repeats an extension: {exc}") from None
        raise DecodeError(f"a malformed handshake message: {exc}") from None
    except (SyntaxError, ValueError, IndexError, AssertionError, TLSDecodeError) as exc:
        raise DecodeError(f"a malformed handshake message: {exc or type(exc).__name__}") from None
    if len(set(types)) != len(types):
        raise ValidationError(f"a handshake message repeats an extension: {types}")
    return parsed


def as_mls_error(error: Exception) -> Exception:
    """tlslite-ng's refusal as the project's error, so that it closes with its own alert (not internal_error):
    a record that fails to open is bad_record_mac, one too long record_overflow, a malformed one
    decode_error."""
    if isinstance(error, TLSBadRecordMAC | TLSDecryptionFailed):
        return CryptoError(f"a record does not open: {error}")
    if isinstance(error, TLSRecordOverflow):
        return TlsAlert(AlertDescription.RECORD_OVERFLOW, f"a record over the size limit: {error}")
    if isinstance(error, TLSDecodeError | TlsliteDecodeError):
        return DecodeError(f"malformed TLS input: {error or type(error).__name__}")
    if isinstance(error, TLSUnexpectedMessage):
        return UnexpectedMessage(str(error))
    if isinstance(error, TLSIllegalParameterException):
        return ValidationError(str(error))
    return error


__all__ = [  # tlslite-ng's names the Housley mode uses, from here only
    "TESTED",
    "CipherSuite",
    "ClientHello",
    "ClientKeyShareExtension",
    "ContentType",
    "EncryptedExtensions",
    "ExtensionType",
    "Finished",
    "GroupName",
    "HKDF_expand_label",
    "HandshakeType",
    "KeyShareEntry",
    "MemorySocket",
    "NewSessionTicket",
    "Records",
    "ServerHello",
    "SrvSupportedVersionsExtension",
    "SupportedGroupsExtension",
    "SupportedVersionsExtension",
    "TLSExtension",
    "as_mls_error",
    "parse",
    "secureHMAC",
]
