"""Whom a session trusts: pinned keys from a file, trust on first use, or (loudly) anyone.

A peer is authenticated by key, never by name: :class:`~mlscore.credentials.PinnedKeys`
accepts a basic credential only with the signature key pinned for its
identity, :class:`~mlscore.credentials.X509AuthenticationService` only a
chain to a trusted root whose leaf key is the signature key.  This module adds
what needs a file or a policy decision:

* :func:`load_trust_store`: ``<identity> <fingerprint>`` lines (``#`` comments);
* :class:`TrustOnFirstUse`: an explicit opt-in that pins the first key seen for
  each identity in a file and refuses a changed key, naming both fingerprints;
* :class:`AcceptAnyPeer`: no authentication at all, only when a configuration
  says ``insecure_accept_any_peer=True``; it logs a warning on every peer.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from mlscore.credentials import (
    FINGERPRINT_PREFIX,
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


def load_trust_store(path: str | os.PathLike[str]) -> PinnedKeys:
    """Pins from a file of ``<identity> <fingerprint>`` lines; an identity may have several keys."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the trust store {path}: {exc}") from None
    return PinnedKeys(_parse_pins(lines, str(path)))


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
            pins.setdefault(name.strip().encode(), set()).add(check_fingerprint(fingerprint))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}:{number}: {exc}") from None
        if len(pins) > MAX_TRUST_STORE_ENTRIES:
            raise ConfigurationError(f"{where}: more than {MAX_TRUST_STORE_ENTRIES} identities")
    return pins


class TrustOnFirstUse:
    """Pin the first key each identity presents (kept in ``path``); refuse any other key for it later.

    Only an explicit opt-in: the first contact is not authenticated, so an
    attacker present then is trusted from then on.  ``allowed`` optionally
    limits the identities that may be pinned at all.
    """

    def __init__(self, path: str | os.PathLike[str], *, allowed: set[bytes] | None = None) -> None:
        self.path = Path(path)
        self.allowed = allowed
        self._pins: dict[bytes, set[str]] = {}
        if self.path.exists():
            self._pins = _parse_pins(self.path.read_text(encoding="utf-8").splitlines(), str(self.path))

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        if credential.credential_type != CredentialType.BASIC:
            raise CredentialError("trust on first use takes basic credentials")
        identity = credential.identity
        if identity in self._pins:
            PinnedKeys(self._pins).validate(credential, signature_key, suite_id, now)
            return
        if self.allowed is not None and identity not in self.allowed:
            raise CredentialError(f"identity {identity!r} may not be pinned on first use")
        if not identity or any(byte < 0x21 or byte > 0x7E for byte in identity):
            raise CredentialError("trust on first use pins printable identities without spaces only")
        fingerprint = key_fingerprint(signature_key)
        log.warning("trust on first use: pinning %s to key %s (%s)", identity.decode(), fingerprint, self.path)
        self._pins[identity] = {fingerprint}
        self._save()

    def _save(self) -> None:
        lines = [f"{name.decode()} {fingerprint}\n" for name, prints in sorted(self._pins.items())
                 for fingerprint in sorted(prints)]
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("# pinned on first use by mls-transport\n" + "".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StoreError(f"cannot write the trust store {self.path}: {exc}") from None


class AcceptAnyPeer:
    """No authentication: every credential is accepted.  Logs a warning for every peer it lets in."""

    def validate(self, credential: Credential, signature_key: bytes, suite_id: int,
                 now: int | None = None) -> None:
        who = credential.identity.decode("ascii", "replace") if credential.identity else "an X.509 peer"
        log.warning("insecure_accept_any_peer: accepting %s with key %s WITHOUT authenticating it",
                    who, key_fingerprint(signature_key))
