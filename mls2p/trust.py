"""Whom a session trusts: one decision, made by one object, at every epoch.

A peer is authenticated by key, never by name.  :class:`TrustPolicy` is the
one object that decides, from the trust configuration in force *now*; the
session asks it at every handshake, every resumption (a repeated answer
included) and every new epoch, and a transport asks it again for each
established connection whenever the configuration is replaced
(:meth:`TrustPolicy.replace`), closing the connections of peers it no longer
accepts.  How the sources combine (docs/security.md, "How trust options
combine"):

* **Pins** (``--allow NAME=FINGERPRINT``, trust-store files): an identity
  pinned anywhere is decided by its pins alone, the union of every source.
* **X.509** (:class:`~mlscore.credentials.X509AuthenticationService`): decides
  X.509 credentials, and only those.
* **Trust on first use** (:class:`TrustOnFirstUse`, an explicit opt-in):
  decides only identities that no pin names.  A new identity is accepted
  *tentatively*; its key is recorded when the connection is confirmed (the
  peer proved it holds the epoch's keys), never at the ClientHello, so
  unconfirmed hellos leave no trace.

Trust files hold ``<identity> <fingerprint>`` lines (``#`` comments); an
identity is written with :func:`encode_identity`, so any byte string
round-trips.  :class:`AcceptAnyPeer` is no authentication at all, only when a
configuration says ``insecure_accept_any_peer=True``; it logs every peer.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from mlscore.credentials import (
    FINGERPRINT_PREFIX,
    AuthenticationService,
    Credential,
    CredentialType,
    PinnedKeys,
    key_fingerprint,
)
from mlscore.errors import CredentialError

from .errors import ConfigurationError, StoreError

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(re.escape(FINGERPRINT_PREFIX) + r"[0-9a-f]{64}")
MAX_TRUST_STORE_ENTRIES = 100_000
MAX_IDENTITY_LENGTH = 255
"""Longest identity trust on first use records (bytes): a bound on what a stranger can make us write."""
MAX_FIRST_USE_ENTRIES = 10_000
"""Default bound on identities trust on first use records; past it new identities are refused."""

_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("%"), ord("#")}


# -- identities and pins in files -------------------------------------------------------------------

def encode_identity(identity: bytes) -> str:
    """``identity`` as one trust-file word: printable ASCII as is, ``%``, ``#``, space and the rest as ``%XX``."""
    return "".join(chr(byte) if byte in _PLAIN else f"%{byte:02X}" for byte in identity)


def decode_identity(text: str) -> bytes:
    """The inverse of :func:`encode_identity`; raises ConfigurationError for a malformed escape."""
    out = bytearray()
    raw = text.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] == ord("%"):
            digits = raw[i + 1 : i + 3]
            if len(digits) != 2 or not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigurationError(f"bad escape in identity {text!r} (a '%' takes two hex digits)")
            out.append(int(digits, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def parse_pin(text: str) -> tuple[bytes, str]:
    """``NAME=FINGERPRINT`` (a command-line pin) as (identity, fingerprint)."""
    name, sep, fingerprint = text.rpartition("=")
    if not sep or not name:
        raise ConfigurationError(f"a pin is NAME=FINGERPRINT, not {text!r}")
    return name.encode(), check_fingerprint(fingerprint)


def check_fingerprint(text: str) -> str:
    fingerprint = text.strip().lower()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ConfigurationError(f"{text!r} is not a key fingerprint ({FINGERPRINT_PREFIX} and 64 hex digits; "
                                 "the peer prints its own with its fingerprint command)")
    return fingerprint


def read_pins(path: str | os.PathLike[str]) -> dict[bytes, set[str]]:
    """The pins of a trust-store file; an identity may have several keys."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the trust store {path}: {exc}") from None
    return _parse_pins(lines, str(path))


def load_trust_store(path: str | os.PathLike[str]) -> TrustPolicy:
    """A :class:`TrustPolicy` of the pins in a file of ``<identity> <fingerprint>`` lines."""
    return TrustPolicy(pins=read_pins(path))


def _parse_pins(lines: list[str], where: str) -> dict[bytes, set[str]]:
    pins: dict[bytes, set[str]] = {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, _, fingerprint = text.rpartition(" ")
        if not name.strip():
            raise ConfigurationError(f"{where}:{number}: expected '<identity> <fingerprint>'")
        try:
            pins.setdefault(decode_identity(name.strip()), set()).add(check_fingerprint(fingerprint))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}:{number}: {exc}") from None
        if len(pins) > MAX_TRUST_STORE_ENTRIES:
            raise ConfigurationError(f"{where}: more than {MAX_TRUST_STORE_ENTRIES} identities")
    return pins


def merge_pins(*sources: Mapping[bytes, Iterable[str]]) -> dict[bytes, set[str]]:
    """The union of several pin sources, per identity."""
    merged: dict[bytes, set[str]] = {}
    for source in sources:
        for identity, prints in source.items():
            merged.setdefault(bytes(identity), set()).update(prints)
    return merged


# -- trust on first use -------------------------------------------------------------------------------

class TrustOnFirstUse:
    """Pin the first key each identity confirms with (appended to ``path``); refuse any other key later.

    Only an explicit opt-in: the first contact is not authenticated, so an
    attacker present then is trusted from then on.  :meth:`validate` records
    nothing: an unknown identity is accepted tentatively, and
    :meth:`confirmed` (called when the connection is confirmed) appends its
    pin.  ``allowed`` optionally limits the identities that may be pinned at
    all; ``max_entries`` bounds the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, allowed: set[bytes] | None = None,
                 max_entries: int = MAX_FIRST_USE_ENTRIES) -> None:
        self.path = Path(path)
        self.allowed = allowed
        self.max_entries = max_entries
        self._pins: dict[bytes, set[str]] = {}
        if self.path.exists():
            self._pins = read_pins(self.path)

    def __repr__(self) -> str:
        return f"TrustOnFirstUse({str(self.path)!r}, {len(self._pins)} identities)"

    @property
    def pins(self) -> Mapping[bytes, set[str]]:
        return self._pins

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        if credential.credential_type != CredentialType.BASIC:
            raise CredentialError("trust on first use takes basic credentials")
        identity = credential.identity
        if identity in self._pins:
            PinnedKeys(self._pins).validate(credential, signature_key, suite_id, now)
            return
        self._check_new(identity)

    def _check_new(self, identity: bytes) -> None:
        if self.allowed is not None and identity not in self.allowed:
            raise CredentialError(f"identity {encode_identity(identity[:64])} may not be pinned on first use")
        if not identity or len(identity) > MAX_IDENTITY_LENGTH:
            raise CredentialError(f"trust on first use pins identities of 1 to {MAX_IDENTITY_LENGTH} bytes")
        if len(self._pins) >= self.max_entries:
            raise CredentialError(f"trust on first use holds {self.max_entries} identities already "
                                  f"({self.path}): pin new peers explicitly")

    def confirmed(self, credential: Credential, signature_key: bytes) -> None:
        """The peer confirmed a connection: record its key if this is its first use (append, fsync)."""
        identity = credential.identity
        fingerprint = key_fingerprint(signature_key)
        if identity in self._pins:
            if fingerprint not in self._pins[identity]:  # another connection pinned another key first
                raise CredentialError(f"identity {encode_identity(identity[:64])} was pinned to another key "
                                      "while this connection was being confirmed")
            return
        self._check_new(identity)
        log.warning("trust on first use: pinning %s to key %s (%s)", encode_identity(identity), fingerprint,
                    self.path)
        self._append(f"{encode_identity(identity)} {fingerprint}\n")
        self._pins[identity] = {fingerprint}

    def _append(self, line: str) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                if handle.tell() == 0:
                    handle.write("# pinned on first use by mls-transport: <identity> <fingerprint>\n")
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write the trust store {self.path}: {exc.strerror}") from None


@runtime_checkable
class RecordsConfirmedPeers(Protocol):
    """An authentication service that learns from confirmed connections (trust on first use)."""

    def confirmed(self, credential: Credential, signature_key: bytes) -> None: ...


# -- the one decision ---------------------------------------------------------------------------------

class TrustWatcher(Protocol):
    """A live connection that re-checks its peer when the trust configuration is replaced."""

    def trust_changed(self) -> None: ...


class TrustPolicy:
    """The trust configuration in force: pins, X.509 roots and trust on first use, combined by fixed rules.

    The one object every trust decision asks (see the module docstring for the
    rules).  :meth:`replace` swaps in a new configuration at run time (a
    revocation without a restart) and tells every watching connection, which
    re-checks its peer and closes if the peer is no longer accepted.
    """

    def __init__(self, *, pins: Mapping[bytes, Iterable[str]] | None = None,
                 x509: AuthenticationService | None = None, first_use: TrustOnFirstUse | None = None) -> None:
        self._set(pins or {}, x509, first_use)
        self._watchers: weakref.WeakSet[TrustWatcher] = weakref.WeakSet()
        self.generation = 0
        """Counts replacements: a connection checked under an older generation re-checks."""

    def _set(self, pins: Mapping[bytes, Iterable[str]], x509: AuthenticationService | None,
             first_use: TrustOnFirstUse | None) -> None:
        self.pins: Mapping[bytes, set[str]] = merge_pins(pins)
        self._pinned = PinnedKeys(self.pins)
        self.x509 = x509
        self.first_use = first_use

    def __repr__(self) -> str:
        parts = [f"{len(self.pins)} pinned identities"]
        if self.x509 is not None:
            parts.append("X.509")
        if self.first_use is not None:
            parts.append("trust on first use")
        return f"TrustPolicy({', '.join(parts)})"

    @property
    def empty(self) -> bool:
        return not self.pins and self.x509 is None and self.first_use is None

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        """Accept (return) or refuse (CredentialError naming why) a peer's credential and key."""
        if credential.credential_type == CredentialType.X509:
            if self.x509 is None:
                raise CredentialError("X.509 credentials are not trusted here (no trust roots configured)")
            self.x509.validate(credential, signature_key, suite_id, now)
            return
        if credential.credential_type != CredentialType.BASIC:
            raise CredentialError(f"credential type {credential.credential_type} is not accepted")
        if credential.identity in self.pins or self.first_use is None:
            self._pinned.validate(credential, signature_key, suite_id, now)  # a pin anywhere decides alone
            return
        self.first_use.validate(credential, signature_key, suite_id, now)

    def confirmed(self, credential: Credential, signature_key: bytes) -> None:
        """A connection with this peer is confirmed: trust on first use records it (if it decided it)."""
        if (self.first_use is not None and credential.credential_type == CredentialType.BASIC
                and credential.identity not in self.pins):
            self.first_use.confirmed(credential, signature_key)

    def watch(self, watcher: TrustWatcher) -> None:
        """Call ``watcher.trust_changed()`` at every :meth:`replace` (held weakly)."""
        self._watchers.add(watcher)

    def replace(self, other: TrustPolicy, *, notify: bool = True) -> int:
        """Put ``other``'s rules in force from now on; returns how many connections were told to re-check.

        ``notify=False`` tells no connection: each meets the new rules at its next epoch (tests use it to
        reach a commit under rules its connection has not re-checked yet).
        """
        self._set(other.pins, other.x509, other.first_use)
        self.generation += 1
        watchers = list(self._watchers) if notify else []
        log.info("trust configuration replaced (%r); re-checking %d connection(s)", self, len(watchers))
        for watcher in watchers:
            watcher.trust_changed()
        return len(watchers)


class AcceptAnyPeer:
    """No authentication: every credential is accepted.  Logs a warning for every peer it lets in."""

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        who = credential.identity.decode("ascii", "replace") if credential.identity else "an X.509 peer"
        log.warning("insecure_accept_any_peer: accepting %s with key %s WITHOUT authenticating it",
                    who, key_fingerprint(signature_key))


def watch_trust(service: object, watcher: TrustWatcher) -> None:
    """Register ``watcher`` with ``service`` if it can be replaced at run time (a :class:`TrustPolicy`)."""
    if isinstance(service, TrustPolicy):
        service.watch(watcher)
