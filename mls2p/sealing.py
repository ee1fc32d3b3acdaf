"""Session state at rest, sealed: a copy of a shared store alone yields no session keys.

A stored session holds the group's epoch secrets, so a store shared by a
fleet (Redis) keeps it only sealed: AES-256-GCM under a key from the servers'
configuration, bound to the session (group id) it belongs to, so a sealed
state moved to another session's slot does not open.

    sealed = "M2PS" | format (u8) = 1 | key id length (u8) | key id | nonce (12) | ciphertext+tag
    AAD    = everything before the nonce | group id

Keys live in a *keyring file*, one key per line, ``<key id> <64 hex digits>``
(``#`` starts a comment).  The first key seals; every key opens.  To rotate:
put a new key first (``mls-tunnel store-key`` prints one), keep the old one
below it until :meth:`~mls2p.redis_store.RedisSessionStore.reseal` has run (or
every session has been written once since), then delete the old line.  The
file must be private (mode 0600), like a signature key.

Rotate long before a key has sealed 2^32 states.  Nonces are random (96
bits), and NIST SP 800-38D (section 8.3) caps one key at 2^32 encryptions
with random nonces, counted over every node of a fleet and every restart.
A sealer counts its own seals per key id (:meth:`StateSealer.writes`) and logs
one warning when a key passes :data:`DEFAULT_WARN_AFTER_WRITES` (2^28, 1/16
of the cap): the count is per process and starts at 0 on each start, so the
fleet's real total is higher, and the warning is a backstop for a rotation
schedule (docs/fleet.md), not a substitute for one.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigurationError, StoredStateError

MAGIC = b"M2PS"
FORMAT = 1
KEY_LENGTH = 32
NONCE_LENGTH = 12
MAX_KEY_ID = 64
RANDOM_NONCE_LIMIT = 1 << 32
"""NIST SP 800-38D: at most 2^32 encryptions under one key with random 96-bit nonces (whole fleet)."""
DEFAULT_WARN_AFTER_WRITES = 1 << 28
"""Warn when one process has sealed this many states with one key: 1/16 of the cap, as the count is per process."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SealingKey:
    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if (not 0 < len(self.key_id.encode()) <= MAX_KEY_ID or not self.key_id.isprintable()
                or any(c.isspace() or c == "#" for c in self.key_id)):
            raise ConfigurationError(f"a sealing key id is 1 to {MAX_KEY_ID} printable characters without spaces "
                                     f"or '#', not {self.key_id!r}")
        if len(self.key) != KEY_LENGTH:
            raise ConfigurationError(f"sealing key {self.key_id!r} has {len(self.key)} bytes; it needs {KEY_LENGTH}")


class StateSealer:
    """Seals with the first key of a keyring, opens with any of them; counts its seals per key.

    After ``warn_after_writes`` seals with one key (in this process) it logs
    one warning asking for a rotation (module docstring: the 2^32 cap).
    """

    def __init__(self, keys: list[SealingKey], *, warn_after_writes: int = DEFAULT_WARN_AFTER_WRITES) -> None:
        if not keys:
            raise ConfigurationError("the sealing keyring is empty: it needs at least one key")
        if not isinstance(warn_after_writes, int) or not 0 < warn_after_writes <= RANDOM_NONCE_LIMIT:
            raise ConfigurationError(f"warn_after_writes must be an integer from 1 to 2^32, not {warn_after_writes!r}")
        ids = [key.key_id for key in keys]
        if len(set(ids)) != len(ids):
            raise ConfigurationError(f"the sealing keyring names a key id twice: {ids}")
        self.sealing_key_id = keys[0].key_id
        self._seal_with = AESGCM(keys[0].key)
        self._header = MAGIC + bytes([FORMAT, len(keys[0].key_id.encode())]) + keys[0].key_id.encode()
        self._open_with = {key.key_id.encode(): AESGCM(key.key) for key in keys}
        self.warn_after_writes = warn_after_writes
        self._writes: dict[str, int] = {}
        self._count_lock = threading.Lock()  # nodes' stores may share one sealer across threads

    def __repr__(self) -> str:
        return f"StateSealer(seals with {self.sealing_key_id!r}, opens {len(self._open_with)} key(s))"

    def writes(self, key_id: str) -> int:
        """How many states this sealer has sealed with ``key_id`` since it was made (this process only)."""
        with self._count_lock:
            return self._writes.get(key_id, 0)

    def seal(self, group_id: bytes, state: bytes) -> bytes:
        nonce = os.urandom(NONCE_LENGTH)
        sealed = self._header + nonce + self._seal_with.encrypt(nonce, state, self._header + group_id)
        self._count_write()
        return sealed

    def _count_write(self) -> None:
        with self._count_lock:
            count = self._writes.get(self.sealing_key_id, 0) + 1
            self._writes[self.sealing_key_id] = count
        if count == self.warn_after_writes:  # exactly once per key and sealer
            log.warning("sealing key %r has sealed %d states in this process; with random nonces one key may "
                        "seal at most 2^32 across the whole fleet (NIST SP 800-38D): rotate it now "
                        "(docs/fleet.md, 'Rotating the sealing key')", self.sealing_key_id, count)

    def key_id_of(self, sealed: bytes) -> str:
        """The id of the key that sealed ``sealed`` (to find states that still need a reseal)."""
        return self._split(sealed)[1].decode(errors="replace")

    def open(self, group_id: bytes, sealed: bytes) -> bytes:
        """The state sealed for ``group_id``; StoredStateError if it is not (wrong key, session or bytes)."""
        header, key_id, body = self._split(sealed)
        aead = self._open_with.get(key_id)
        if aead is None:
            raise StoredStateError(f"stored state of group {group_id.hex()} is sealed with key "
                                   f"{key_id.decode(errors='replace')!r}, which is not in the keyring")
        try:
            return aead.decrypt(body[:NONCE_LENGTH], body[NONCE_LENGTH:], header + group_id)
        except InvalidTag:
            raise StoredStateError(f"stored state of group {group_id.hex()} does not open: altered, or sealed "
                                   "for another session") from None

    @staticmethod
    def _split(sealed: bytes) -> tuple[bytes, bytes, bytes]:
        if len(sealed) < len(MAGIC) + 2 or not sealed.startswith(MAGIC):
            raise StoredStateError("stored state is not sealed (or not by mls2p)")
        if sealed[len(MAGIC)] != FORMAT:
            raise StoredStateError(f"sealed state has format {sealed[len(MAGIC)]}; this release reads {FORMAT}")
        end = len(MAGIC) + 2 + sealed[len(MAGIC) + 1]
        if len(sealed) < end + NONCE_LENGTH + 16:
            raise StoredStateError("sealed state is truncated")
        return sealed[:end], sealed[len(MAGIC) + 2 : end], sealed[end:]


def new_key_line(key_id: str) -> str:
    """A keyring line with a fresh random key."""
    SealingKey(key_id, bytes(KEY_LENGTH))  # checks the id
    return f"{key_id} {secrets.token_hex(KEY_LENGTH)}"


def load_keyring(path: str | os.PathLike[str], *, warn_after_writes: int = DEFAULT_WARN_AFTER_WRITES
                 ) -> StateSealer:
    """The sealer of a keyring file; ConfigurationError saying what is wrong with it."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the sealing keyring {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file} is not a sealing keyring (not text)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"the sealing keyring {file} is readable by others (mode {mode & 0o777:o}); "
                                 f"run: chmod 600 {file}")
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            key_id, hex_key = words
            keys.append(SealingKey(key_id, bytes.fromhex(hex_key)))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{file} line {number}: {exc}") from None
        except ValueError:
            raise ConfigurationError(f"{file} line {number}: expected '<key id> <64 hex digits>'") from None
    return StateSealer(keys, warn_after_writes=warn_after_writes)
