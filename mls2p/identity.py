"""Identities: our own signature key on disk, and who the peer of a session is.

Our key is created once (mode 0600), read back and fingerprinted for the
peer: the fingerprint (:func:`mlscore.credentials.key_fingerprint`) is what
the peer pins.  The file holds the raw private key of the suite's signature
scheme, as RFC 9420 encodes it; nothing else reads or logs it.

:func:`session_extra_info` answers the ``get_extra_info`` names both
transports share (``mls_peer_identity``, ``mls_peer_fingerprint``,
``mls_cipher_suite``...), so an mlstls stream and an mlsquic protocol report
a session the same way.
"""

from __future__ import annotations

import operator
import os
import stat
from pathlib import Path
from typing import Any, SupportsIndex

from mlscore import crypto
from mlscore.credentials import CredentialType, key_fingerprint
from mlscore.crypto import CipherSuite
from mlscore.errors import MLSError, UnsupportedError

from .errors import ConfigurationError, StoreError
from .session import TwoPartySession, peer_leaves
from .store import check_private_folder

SuiteLike = int | CipherSuite
"""A cipher suite as the library's functions take it: its number (an int or IntEnum) or the suite itself."""


def suite_of(suite: object, argument: str = "suite_id") -> CipherSuite:
    """``suite`` (a number, or a :class:`~mlscore.crypto.CipherSuite`) as a supported suite.

    Anything else, a bool (``True`` is 1 to Python, never meant as suite 1) or a str (a number read
    from a command line or file and not converted) included, is a ConfigurationError naming
    ``argument``, raised where the mistake is made, as is a number that is not a supported suite
    (get_suite's UnsupportedError is for a suite the *peer* names).
    """
    if isinstance(suite, CipherSuite):
        return suite
    if isinstance(suite, bool) or not isinstance(suite, SupportsIndex):
        raise ConfigurationError(f"{argument} must be a cipher suite number (an int) or a mlscore.crypto.CipherSuite, "
                                 f"not {type(suite).__name__} {suite!r}")
    number = operator.index(suite)
    try:
        return crypto.get_suite(number)
    except UnsupportedError:
        choices = ", ".join(map(str, crypto.SUPPORTED_SUITES))  # read now: register_suite may add suites
        raise ConfigurationError(f"{argument}: cipher suite {number} is not supported "
                                 f"(choose from {choices})") from None


def load_or_create_key(path: str | os.PathLike[str], suite_id: SuiteLike) -> bytes:
    """The signature private key in ``path``, generated (0600, atomically) if the file does not exist.

    ``suite_id`` is the suite's number or the :class:`~mlscore.crypto.CipherSuite` itself (:func:`suite_of`).
    The key's folder must not be writable by every user (ConfigurationError;
    group-writable is logged): whoever writes there can swap in a key of
    their own, and the peer would then pin theirs.
    """
    if not isinstance(path, str | os.PathLike):
        raise ConfigurationError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    file = Path(path)
    suite = suite_of(suite_id)
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
        raise ConfigurationError(f"{file} is not a cipher suite {suite.id} signature key") from None
    return private


def fingerprint(private: bytes, suite_id: SuiteLike) -> str:
    """The fingerprint a peer pins for this private key (``suite_id`` as for :func:`load_or_create_key`)."""
    if not isinstance(private, bytes):
        raise ConfigurationError(f"private must be the key's bytes (load_or_create_key), not {type(private).__name__}")
    return key_fingerprint(suite_of(suite_id).signature_public_key(private))


# -- who the peer is: the get_extra_info names both transports answer ----------------------------

SESSION_INFO = ("mls_session", "mls_group_id", "mls_cipher_suite", "mls_peer_identity", "mls_peer_credential",
                "mls_peer_fingerprint")
"""The names :func:`session_extra_info` answers; a transport adds its own (``mls_epoch``: the epoch of the keys
it uses now, which during a rekey can differ from the session's newest)."""


def session_extra_info(session: TwoPartySession | None, name: str, default: Any = None) -> Any:
    """``get_extra_info(name)`` for the session behind a connection; ``default`` for other names and while
    there is no group yet (before the handshake).

    - ``mls_session``: the :class:`~mls2p.session.TwoPartySession` itself;
    - ``mls_group_id``: its group id (bytes: the name its stored state is kept under);
    - ``mls_cipher_suite``: the suite's number (int; ``mlscore.crypto.get_suite(n).name`` names it);
    - ``mls_peer_credential``: the peer's :class:`~mlscore.credentials.Credential` as it is in the group;
    - ``mls_peer_identity``: the identity of a basic credential (bytes), None for an X.509 one (its chain
      is in ``mls_peer_credential``);
    - ``mls_peer_fingerprint``: ``sha256:<hex>`` of the peer's signature key, the form peers pin.

    All are read from the current group, so they describe the peer as authenticated at the last epoch.
    """
    if name not in SESSION_INFO or session is None:
        return default
    if name == "mls_session":
        return session
    group = session.group
    if group is None:
        return default
    if name == "mls_group_id":
        return group.group_id
    if name == "mls_cipher_suite":
        return group.suite.id
    leaves = peer_leaves(group)
    if not leaves:
        return default
    leaf = leaves[0]  # the profile's group has exactly two members
    if name == "mls_peer_fingerprint":
        return key_fingerprint(leaf.signature_key)
    if name == "mls_peer_credential":
        return leaf.credential
    return leaf.credential.identity if leaf.credential.credential_type == CredentialType.BASIC else None
