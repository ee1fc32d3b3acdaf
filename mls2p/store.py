"""Where two-party sessions keep their state between connections.

The profile requires both sides to persist the group state, the initial role,
the last applied commit (we keep its hash) and any pending commit with its
type.  A :class:`SessionStore` keeps that as opaque bytes per group id.  The
file store writes atomically (temporary file, fsync, rename, fsync of the
folder), so a crash leaves either the old state or the new one, never half
of one.

Sessions expire: a client that never comes back must not leave its epoch
secrets at rest forever.  A state not written for ``max_idle_seconds``
(:data:`DEFAULT_MAX_IDLE_SECONDS`, 30 days, unless configured) counts as
absent; the Redis store gives each key a TTL, the file store ignores expired
files and deletes them in :meth:`FileSessionStore.purge_expired`.

This module is the one place in ``mls2p`` that does I/O; the session never
calls it (the bootstrap does, on the transport's behalf).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from .errors import ConfigurationError, StaleStateError, StoreError

log = logging.getLogger(__name__)

DEFAULT_MAX_IDLE_SECONDS: float = 30 * 24 * 3600.0
"""A stored session not written for 30 days expires.

Every resumption and every rekey writes the state, so only sessions whose
client stopped coming back reach it; such a client (a laptop off for a month)
pays one fresh authenticated handshake, while an abandoned session stops
holding an epoch's secrets (which open that epoch's recorded traffic) on the
server's disk or Redis indefinitely.  Longer than any retry backoff or rekey
interval in use, short enough that a store does not grow with every client
ever seen.  ``None`` keeps sessions until deleted.
"""


def check_max_idle(max_idle_seconds: float | None) -> float | None:
    """``max_idle_seconds`` if it is None or positive and finite, else ConfigurationError."""
    if max_idle_seconds is not None and not (max_idle_seconds > 0 and math.isfinite(max_idle_seconds)):
        raise ConfigurationError(f"max_idle_seconds must be positive and finite (or None: never expire), "
                                 f"not {max_idle_seconds!r}")
    return max_idle_seconds


def check_private_folder(folder: Path, what: str) -> None:
    """Refuse a world-writable ``folder``, warn about a group-writable one.

    Whoever can write to the folder can put files in it (a session state we
    would resume, a key we would use, a lock we would wait on) or, without the
    sticky bit, swap ours: a folder we create is 0700, but a pre-existing one
    keeps its mode.  The sticky bit does not help (new names can still be
    planted), so it is not an exception.
    """
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
    except OSError as exc:
        raise StoreError(f"cannot inspect the {what} {folder}: {exc.strerror}") from None
    if mode & stat.S_IWOTH:
        raise ConfigurationError(f"the {what} {folder} is writable by every user (mode {mode:o}), who could plant "
                                 f"or replace files in it; run: chmod 700 {folder}")
    if mode & stat.S_IWGRP:
        log.warning("the %s %s is writable by its group (mode %o): group members can plant or replace files in "
                    "it; run: chmod 700 %s", what, folder, mode, folder)


class SessionStore(Protocol):
    """Opaque state per group id, with fenced (compare-and-set) writes.

    ``save`` replaces the stored state only if it is still ``replaces`` (None:
    no state stored), atomically, and raises :class:`StaleStateError`
    otherwise: of two connections that continue the same session, the one
    that lost the race learns it instead of overwriting the newer state.
    ``delete`` is fenced the same way.
    """

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None: ...

    def load(self, group_id: bytes) -> bytes | None: ...

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None: ...

    def group_ids(self) -> list[bytes]: ...


REPLICA_TIMEOUT = 0.05
"""Seconds a write waits for its replicas' acknowledgement (Redis WAIT) when replicas are asked for: a same-site
replica acknowledges in about a millisecond, and the wait holds the writer's event loop (mls2p.store_guard)."""


def open_store(location: str | os.PathLike[str], *, keyring: str | os.PathLike[str] | None = None,
               max_idle_seconds: float | None = DEFAULT_MAX_IDLE_SECONDS,
               deadline: float | None = None, replicas: int = 0,
               replica_timeout: float = REPLICA_TIMEOUT) -> SessionStore:
    """The store a server's ``--store`` names: a Redis URL (sealed with ``keyring``) or a folder.

    A Redis store is shared by a fleet and needs a sealing keyring
    (:mod:`mls2p.sealing`); it is checked to answer before this returns, and
    comes wrapped in a :class:`~mls2p.store_guard.GuardedStore`, so a Redis
    that hangs holds the caller's event loop for at most ``deadline`` seconds
    per cool-down (default :data:`~mls2p.store_guard.DEADLINE`).  Sessions not
    written for ``max_idle_seconds`` expire (None: never).  ``replicas``: Redis replicas that must
    acknowledge each write (WAIT, up to ``replica_timeout`` seconds) before it counts as stored.
    """
    from .redis_store import URL_SCHEMES, RedisSessionStore
    from .sealing import load_keyring
    from .store_guard import DEADLINE, GuardedStore

    text = os.fspath(location)
    if "://" in text and not text.startswith(URL_SCHEMES):
        raise ConfigurationError(f"unknown store URL scheme in {text.split('://', 1)[0]!r}://...: a store is a "
                                 f"folder or a Redis URL ({', '.join(URL_SCHEMES)})")
    if text.startswith(URL_SCHEMES):
        if keyring is None:
            raise ConfigurationError("a Redis store needs a sealing keyring (--store-keyring FILE): the session "
                                     "keys of every client are kept there, sealed ('mls-tunnel store-key' makes one)")
        store = RedisSessionStore.from_url(text, load_keyring(keyring), max_idle_seconds=max_idle_seconds,
                                           replicas=replicas, replica_timeout=replica_timeout)
        store.ping()
        default = DEADLINE + (replica_timeout if replicas else 0.0)  # a write waits for its replicas too
        return GuardedStore(store, deadline=default if deadline is None else deadline)
    if keyring is not None:
        raise ConfigurationError("--store-keyring seals a Redis store; a folder store is private to this machine "
                                 "(mode 0700) and is not sealed")
    return FileSessionStore(text, max_idle_seconds=max_idle_seconds)


def _check(group_id: bytes, current: bytes | None, replaces: bytes | None) -> None:
    if current != replaces:
        raise StaleStateError(f"the stored state of group {group_id.hex()} changed since this connection read "
                              "it: the session continued elsewhere")


class MemorySessionStore:
    """A dict: for tests and for processes that resume only while they live."""

    def __init__(self) -> None:
        self._states: dict[bytes, bytes] = {}

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        _check(group_id, self._states.get(bytes(group_id)), replaces)
        self._states[bytes(group_id)] = bytes(state)

    def load(self, group_id: bytes) -> bytes | None:
        return self._states.get(bytes(group_id))

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None:
        _check(group_id, self._states.get(bytes(group_id)), replaces)
        self._states.pop(bytes(group_id), None)

    def group_ids(self) -> list[bytes]:
        return list(self._states)


class FileSessionStore:
    """One file per group in a private folder (mode 0700, files 0600), written atomically.

    The compare-and-set holds across processes: it runs under an exclusive
    ``flock`` on the folder's lock file.  A folder writable by every user is
    refused, one writable by its group logged (:func:`check_private_folder`).

    Expiry: a file not written for ``max_idle_seconds`` (its mtime) reads as
    absent, by ``wall_clock`` (injectable, as in
    :class:`~mls2p.config.ProfileConfig`); :meth:`purge_expired` deletes such
    files, and the temporaries a crash left, when its owner calls it (a
    server at start and then daily, say): abandoned sessions are never read
    again, so reading alone would keep them forever.
    """

    SUFFIX = ".mlsstate"
    LOCK = ".lock"
    TEMPORARY = ".tmp-"

    def __init__(self, directory: str | os.PathLike[str], *,
                 max_idle_seconds: float | None = DEFAULT_MAX_IDLE_SECONDS,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_idle_seconds = check_max_idle(max_idle_seconds)
        self.wall_clock = wall_clock
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the session folder {self.directory}: {exc.strerror}") from None
        check_private_folder(self.directory, "session folder")

    def _path(self, group_id: bytes) -> Path:
        return self.directory / f"{group_id.hex()}{self.SUFFIX}"

    def _expired(self, mtime: float, now: float) -> bool:
        return self.max_idle_seconds is not None and now - mtime > self.max_idle_seconds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def save(self, group_id: bytes, state: bytes, *, replaces: bytes | None) -> None:
        target = self._path(group_id)
        try:
            with self._locked():
                _check(group_id, self._read(group_id, self.wall_clock()), replaces)
                fd, tmp = tempfile.mkstemp(prefix=self.TEMPORARY, dir=self.directory)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(state)
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                self._sync_directory()
        except OSError as exc:
            raise StoreError(f"cannot save session state to {target}: {exc}") from exc

    def load(self, group_id: bytes) -> bytes | None:
        """The state of ``group_id``; None if there is none or it expired (then its file is deleted)."""
        now = self.wall_clock()
        try:
            found = self._read_with_mtime(group_id)
            if found is None:
                return None
            state, mtime = found
            if not self._expired(mtime, now):
                return state
            with self._locked():  # our own policy, so deleting is safe; re-read: it may have been written since
                found = self._read_with_mtime(group_id)
                if found is None or not self._expired(found[1], now):
                    return None if found is None else found[0]
                self._path(group_id).unlink(missing_ok=True)
                self._sync_directory()
            return None
        except OSError as exc:
            raise StoreError(f"cannot read session state: {exc}") from exc

    def _read_with_mtime(self, group_id: bytes) -> tuple[bytes, float] | None:
        """The file's bytes and the mtime of that very file (a concurrent rename cannot mix the two)."""
        try:
            with self._path(group_id).open("rb") as handle:
                return handle.read(), os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return None

    def _read(self, group_id: bytes, now: float) -> bytes | None:
        found = self._read_with_mtime(group_id)
        return None if found is None or self._expired(found[1], now) else found[0]

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None:
        try:
            with self._locked():
                _check(group_id, self._read(group_id, self.wall_clock()), replaces)
                self._path(group_id).unlink(missing_ok=True)
                self._sync_directory()
        except OSError as exc:
            raise StoreError(f"cannot delete session state: {exc}") from exc

    def group_ids(self) -> list[bytes]:
        """The groups with a state that has not expired."""
        now = self.wall_clock()
        found = []
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            try:
                group_id = bytes.fromhex(path.name[: -len(self.SUFFIX)])
                if not self._expired(path.stat().st_mtime, now):
                    found.append(group_id)
            except (ValueError, FileNotFoundError):
                continue  # not one of ours, or deleted meanwhile
        return found

    def purge_expired(self, now: float) -> list[bytes]:
        """Delete every state not written for ``max_idle_seconds`` before ``now``; returns their group ids.

        ``now`` is seconds since the epoch (``time.time()``), compared with the
        files' mtimes.  Runs under the folder lock, so a state written
        meanwhile is never deleted.  Crash leftovers (temporaries) as old are
        deleted too.
        """
        if self.max_idle_seconds is None:
            return []
        purged: list[bytes] = []
        try:
            with self._locked():
                for path in sorted(self.directory.iterdir()):
                    name = path.name
                    ours = name.endswith(self.SUFFIX) or name.startswith(self.TEMPORARY)
                    try:
                        if not ours or not path.is_file() or not self._expired(path.stat().st_mtime, now):
                            continue
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    if name.endswith(self.SUFFIX):
                        with contextlib.suppress(ValueError):
                            purged.append(bytes.fromhex(name[: -len(self.SUFFIX)]))
                if purged:
                    self._sync_directory()
        except OSError as exc:
            raise StoreError(f"cannot purge expired session states in {self.directory}: {exc}") from exc
        return purged

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
