"""Our own signature key on disk: created once (mode 0600), read back, fingerprinted for the peer.

The fingerprint (:func:`mlscore.credentials.key_fingerprint`) is what the
peer pins.  The file holds the raw private key of the suite's signature
scheme, as RFC 9420 encodes it; nothing else reads or logs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mlscore.credentials import key_fingerprint
from mlscore.crypto import get_suite
from mlscore.errors import MLSError

from .errors import ConfigurationError, StoreError
from .store import check_private_folder


def load_or_create_key(path: str | os.PathLike[str], suite_id: int) -> bytes:
    """The signature private key in ``path``, generated (0600, atomically) if the file does not exist.

    The key's folder must not be writable by every user (ConfigurationError;
    group-writable is logged): whoever writes there can swap in a key of
    their own, and the peer would then pin theirs.
    """
    file = Path(path)
    suite = get_suite(suite_id)
    checked = file.parent.is_dir()
    if checked:  # before anything is created in it
        check_private_folder(file.parent, "key folder")
    if not file.exists():
        private, _ = suite.generate_signature_key_pair()
        try:
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(private)
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            pass  # created by someone else meanwhile: read theirs
        except OSError as exc:
            raise StoreError(f"cannot create the key file {file}: {exc.strerror}") from None
    if not checked:  # made just now (0700), or by someone else meanwhile
        check_private_folder(file.parent, "key folder")
    try:
        mode = file.stat().st_mode
        private = file.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read the key file {file}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"the key file {file} is readable by others (mode {mode & 0o777:o}); "
                                 f"run: chmod 600 {file}")
    try:
        suite.signature_public_key(private)
    except MLSError:
        raise ConfigurationError(f"{file} is not a cipher suite {suite_id} signature key") from None
    return private


def fingerprint(private: bytes, suite_id: int) -> str:
    """The fingerprint a peer pins for this private key."""
    return key_fingerprint(get_suite(suite_id).signature_public_key(private))
