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

import os
import tempfile
from pathlib import Path
from typing import Protocol

from .errors import StoreError


class SessionStore(Protocol):
    """Opaque state per group id.  ``save`` must be atomic: old state or new, never half."""

    def save(self, group_id: bytes, state: bytes) -> None: ...

    def load(self, group_id: bytes) -> bytes | None: ...

    def delete(self, group_id: bytes) -> None: ...

    def group_ids(self) -> list[bytes]: ...


class MemorySessionStore:
    """A dict: for tests and for processes that resume only while they live."""

    def __init__(self) -> None:
        self._states: dict[bytes, bytes] = {}

    def save(self, group_id: bytes, state: bytes) -> None:
        self._states[bytes(group_id)] = bytes(state)

    def load(self, group_id: bytes) -> bytes | None:
        return self._states.get(bytes(group_id))

    def delete(self, group_id: bytes) -> None:
        self._states.pop(bytes(group_id), None)

    def group_ids(self) -> list[bytes]:
        return list(self._states)


class FileSessionStore:
    """One file per group in a private folder (mode 0700, files 0600), written atomically."""

    SUFFIX = ".mlsstate"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the session folder {self.directory}: {exc.strerror}") from None

    def _path(self, group_id: bytes) -> Path:
        return self.directory / f"{group_id.hex()}{self.SUFFIX}"

    def save(self, group_id: bytes, state: bytes) -> None:
        target = self._path(group_id)
        try:
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

    def delete(self, group_id: bytes) -> None:
        try:
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
