"""Where two-party sessions keep their state between connections.

The profile requires both sides to persist the group state, the initial role,
the last applied commit (we keep its hash) and any pending commit with its
type.  A :class:`SessionStore` keeps that as opaque bytes per group id.  The
file store writes atomically (temporary file, fsync, rename, fsync of the
folder), so a crash leaves either the old state or the new one, never half
of one.

This module is the one place in ``mls2p`` that does I/O; the session never
calls it (the bootstrap does, on the transport's behalf).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .errors import ConfigurationError, StaleStateError, StoreError


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


def open_store(location: str | os.PathLike[str], *, keyring: str | os.PathLike[str] | None = None
               ) -> SessionStore:
    """The store a server's ``--store`` names: a Redis URL (sealed with ``keyring``) or a folder.

    A Redis store is shared by a fleet and needs a sealing keyring
    (:mod:`mls2p.sealing`); it is checked to answer before this returns.
    """
    from .redis_store import URL_SCHEMES, RedisSessionStore
    from .sealing import load_keyring

    text = os.fspath(location)
    if "://" in text and not text.startswith(URL_SCHEMES):
        raise ConfigurationError(f"unknown store URL scheme in {text.split('://', 1)[0]!r}://...: a store is a "
                                 f"folder or a Redis URL ({', '.join(URL_SCHEMES)})")
    if text.startswith(URL_SCHEMES):
        if keyring is None:
            raise ConfigurationError("a Redis store needs a sealing keyring (--store-keyring FILE): the session "
                                     "keys of every client are kept there, sealed ('mls-tunnel store-key' makes one)")
        store = RedisSessionStore.from_url(text, load_keyring(keyring))
        store.ping()
        return store
    if keyring is not None:
        raise ConfigurationError("--store-keyring seals a Redis store; a folder store is private to this machine "
                                 "(mode 0700) and is not sealed")
    return FileSessionStore(text)


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
    ``flock`` on the folder's lock file.
    """

    SUFFIX = ".mlsstate"
    LOCK = ".lock"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the session folder {self.directory}: {exc.strerror}") from None

    def _path(self, group_id: bytes) -> Path:
        return self.directory / f"{group_id.hex()}{self.SUFFIX}"

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
                _check(group_id, self.load(group_id), replaces)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
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
        try:
            return self._path(group_id).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read session state: {exc}") from exc

    def delete(self, group_id: bytes, *, replaces: bytes | None) -> None:
        try:
            with self._locked():
                _check(group_id, self.load(group_id), replaces)
                self._path(group_id).unlink(missing_ok=True)
                self._sync_directory()
        except OSError as exc:
            raise StoreError(f"cannot delete session state: {exc}") from exc

    def group_ids(self) -> list[bytes]:
        found = []
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            try:
                found.append(bytes.fromhex(path.name[: -len(self.SUFFIX)]))
            except ValueError:
                continue  # not one of ours
        return found

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
