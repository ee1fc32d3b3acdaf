"""AWS mls-rs as an independent RFC 9420 peer, speaking MLSMessage bytes.

The PyPI wheel ``agentvault-mls-rs-uniffi`` (module ``mls_rs_uniffi``) wraps
mls-rs through UniFFI.  Its API is object based (``Message``, ``Group``,
``CommitOutput``...); :class:`MlsRsPeer` hides that behind bytes in, bytes out,
so our own implementation can be tested against a stack it shares no code
with.  Everything mls-rs can do through this wheel is fixed by the wheel:
cipher suite 1 only, basic credentials, PublicMessage commits,
PrivateMessage application messages (the wheel's own docstrings list the API).

Commits are created and merged in two explicit steps (``add``/``commit_update``
then ``merge_pending``), as RFC 9420 section 12.4 describes them, so a test can
deliver a commit to the other side before or after the sender moves on.

The wheel exists for a few platforms only; importing this module never fails:
check :data:`MLSRS_AVAILABLE` (and :data:`MLSRS_REASON` for why not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlscore.codec import Reader
from mlscore.errors import (
    CredentialError,
    CryptoError,
    DecodeError,
    EpochError,
    InvalidSignatureError,
    MLSError,
    ReplayError,
    StateError,
    TreeError,
    UnsupportedError,
    ValidationError,
)

try:
    import mls_rs_uniffi as _mlsrs

    MLSRS_AVAILABLE = True
    MLSRS_REASON = ""
except (ImportError, OSError) as exc:  # no wheel for this platform, or its shared library does not load
    _mlsrs = None
    MLSRS_AVAILABLE = False
    MLSRS_REASON = f"mls-rs (PyPI agentvault-mls-rs-uniffi) is not usable here: {exc}"

SUITE = 1
"""The only suite the wheel exposes: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519."""

_PROTOCOL_VERSION_MLS10 = 1
_EPOCH_RECORDS_KEPT = 8

# mls-rs reports every failure as one exception type carrying a message
# (``MlsError`` Display strings); the first matching fragment picks our class.
_ERROR_CLASSES: tuple[tuple[str, type[MLSError]], ...] = (
    ("incorrect epoch", EpochError),
    ("epoch not found", EpochError),
    ("groupid mismatch", EpochError),
    ("signature", InvalidSignatureError),
    ("membership tag", CryptoError),
    ("confirmation tag", CryptoError),
    ("openssl", CryptoError),
    ("decrypt", CryptoError),
    ("key not available", ReplayError),
    ("already consumed", ReplayError),
    ("too far ahead", ReplayError),
    ("pending", StateError),
    ("message from self", StateError),
    ("group not found", StateError),
    ("reinit", StateError),
    ("unsupported", UnsupportedError),
    ("lifetime", ValidationError),
    ("credential", CredentialError),
    ("ratchet tree", TreeError),
    ("tree hash", TreeError),
    ("parent hash", TreeError),
    ("unmerged leaves", TreeError),
    ("trailing blanks", TreeError),
    ("empty tree", TreeError),
    ("update path", TreeError),
    ("duplicate signature key", TreeError),
    ("unexpectedeof", DecodeError),
    ("varint", DecodeError),
)


def _error_class(message: str) -> type[MLSError]:
    lowered = message.lower()
    for fragment, cls in _ERROR_CLASSES:
        if fragment in lowered:
            return cls
    return ValidationError


@contextmanager
def _mlsrs_errors(action: str) -> Iterator[None]:
    """Re-raise the wheel's exceptions as ours, keeping mls-rs's own words in the message."""
    try:
        yield
    except _mlsrs.Error.MlsCodecError as exc:
        raise DecodeError(f"mls-rs could not {action}: {exc}") from exc
    except (_mlsrs.Error, _mlsrs.InternalError) as exc:
        raise _error_class(str(exc))(f"mls-rs could not {action}: {exc}") from exc


def _require_wheel() -> None:
    if not MLSRS_AVAILABLE:
        raise UnsupportedError(MLSRS_REASON)


def _epoch_from_snapshot(group_id: bytes, snapshot: bytes) -> int:
    """The epoch of a serialized mls-rs group state.

    The wheel has no epoch accessor; mls-rs's snapshot starts with a u16
    format version followed by the RFC 9420 GroupContext, whose version, suite
    and group id are checked before its epoch is trusted.
    """
    reader = Reader(snapshot)
    reader.u16()  # snapshot format version, internal to mls-rs
    version, suite, stored_group_id = reader.u16(), reader.u16(), reader.opaque()
    if (version, suite, stored_group_id) != (_PROTOCOL_VERSION_MLS10, SUITE, group_id):
        raise UnsupportedError("mls-rs group state no longer starts with the GroupContext; cannot read the epoch")
    return reader.u64()


class _SnapshotStorage(_mlsrs.GroupStateStorage if _mlsrs is not None else object):  # type: ignore[misc]
    """In-memory GroupStateStorage that keeps the latest snapshot where we can read it.

    mls-rs writes the whole group state here on ``write_to_storage``; reading
    it back is the only way the wheel reveals the group id and epoch.  Past
    epochs are kept (a few) because mls-rs may ask for them to open late
    messages.
    """

    def __init__(self) -> None:
        self._states: dict[bytes, bytes] = {}
        self._epochs: dict[bytes, dict[int, bytes]] = {}
        self.last_group_id: bytes | None = None

    def state(self, group_id: bytes) -> bytes | None:
        return self._states.get(group_id)

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self._epochs.get(group_id, {}).get(epoch_id)

    def write(self, group_id: bytes, group_state: bytes, epoch_inserts: list[Any], epoch_updates: list[Any]) -> None:
        self._states[group_id] = group_state
        self.last_group_id = group_id
        records = self._epochs.setdefault(group_id, {})
        for record in [*epoch_inserts, *epoch_updates]:
            records[record.id] = record.data
        for old in sorted(records)[:-_EPOCH_RECORDS_KEPT]:
            del records[old]

    def max_epoch_id(self, group_id: bytes) -> int | None:
        records = self._epochs.get(group_id)
        return max(records) if records else None


def _message(data: bytes) -> Any:
    """Parse an MLSMessage strictly: mls-rs itself silently ignores trailing bytes."""
    data = bytes(data)
    with _mlsrs_errors("decode the MLSMessage"):
        message = _mlsrs.Message.from_bytes(data)
        canonical = message.to_bytes()
    if canonical != data:
        raise DecodeError(f"MLSMessage has {len(data) - len(canonical)} bytes of trailing or non-canonical data")
    return message


class MlsRsPeer:
    """One mls-rs client (basic credential, suite 1) and at most one group of it.

    Every input and output is an RFC 9420 ``MLSMessage`` encoding, except the
    ratchet tree (the ``ratchet_tree`` extension's data, i.e. ``optional<Node>
    ratchet_tree<V>``) and exporter output.
    """

    def __init__(self, client: Any, storage: _SnapshotStorage, identity: bytes, signature_key: bytes) -> None:
        self._client = client
        self._storage = storage
        self._identity = identity
        self._signature_key = signature_key
        self._group: Any = None
        self._pending: Any = None

    @classmethod
    def new(cls, identity: bytes, *, ratchet_tree_extension: bool = True) -> MlsRsPeer:
        """A fresh client with a new Ed25519 key and a basic credential naming ``identity``.

        With ``ratchet_tree_extension`` the Welcomes it sends carry the tree;
        without, the joiner needs :meth:`ratchet_tree` out of band.
        """
        _require_wheel()
        storage = _SnapshotStorage()
        config = _mlsrs.ClientConfig(group_state_storage=storage, use_ratchet_tree_extension=ratchet_tree_extension)
        with _mlsrs_errors("create a client"):
            keypair = _mlsrs.generate_signature_keypair(_mlsrs.CipherSuite.CURVE25519_AES128)
            client = _mlsrs.Client(bytes(identity), keypair, config)
        return cls(client, storage, bytes(identity), keypair.public_key.bytes)

    @property
    def identity(self) -> bytes:
        return self._identity

    @property
    def signature_key(self) -> bytes:
        """Our Ed25519 public key, as it appears in our LeafNode."""
        return self._signature_key

    @property
    def in_group(self) -> bool:
        return self._group is not None

    @property
    def has_pending_commit(self) -> bool:
        return self._pending is not None

    def _require_group(self) -> Any:
        if self._group is None:
            raise StateError("this mls-rs peer is not in a group yet: create_group() or join() first")
        return self._group

    def _require_no_group(self) -> None:
        if self._group is not None:
            raise StateError("this mls-rs peer already has a group; use a new MlsRsPeer for another one")

    def key_package(self) -> bytes:
        """A new KeyPackage (MLSMessage); mls-rs keeps its private keys for a later Welcome."""
        with _mlsrs_errors("generate a KeyPackage"):
            return self._client.generate_key_package_message().to_bytes()

    def create_group(self, group_id: bytes | None = None) -> None:
        """A one-member group at epoch 0; mls-rs picks a random group id when none is given."""
        self._require_no_group()
        with _mlsrs_errors("create a group"):
            self._group = self._client.create_group(None if group_id is None else bytes(group_id))

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> None:
        """Join from a Welcome; ``ratchet_tree`` is required if the GroupInfo does not carry one."""
        self._require_no_group()
        message = _message(welcome)
        tree = None if ratchet_tree is None else _mlsrs.RatchetTree(bytes=bytes(ratchet_tree))
        with _mlsrs_errors("join from the Welcome"):
            self._group = self._client.join_group(tree, message).group

    def _commit(self, action: str, make: Any) -> Any:
        if self._pending is not None:
            raise StateError("a commit is already pending: merge_pending() or process the peer's commit first")
        with _mlsrs_errors(action):
            output = make()
        self._pending = output.commit_message
        return output

    def add(self, key_package: bytes) -> tuple[bytes, bytes]:
        """Commit an Add of ``key_package``: returns (commit, Welcome); the commit stays pending."""
        group = self._require_group()
        message = _message(key_package)
        output = self._commit("commit the Add", lambda: group.add_members([message]))
        return output.commit_message.to_bytes(), output.welcome_message.to_bytes()

    def commit_update(self) -> bytes:
        """An empty commit, which by RFC 9420 carries a fresh UpdatePath; it stays pending.

        mls-rs commits any proposals it has received by reference too.
        """
        group = self._require_group()
        return self._commit("create a commit", group.commit).commit_message.to_bytes()

    def merge_pending(self) -> None:
        """Move to the epoch of our pending commit (once the delivery service accepted it)."""
        group = self._require_group()
        if self._pending is None:
            raise StateError("no pending commit to merge")
        with _mlsrs_errors("merge the pending commit"):
            group.process_incoming_message(self._pending)
        self._pending = None

    def process(self, message: bytes) -> bytes | None:
        """Process a message from the group.

        Returns the plaintext of an application message, or None for a
        commit (now applied; any pending commit of ours is dropped, as mls-rs
        does) or a proposal (cached for our next commit).
        """
        group = self._require_group()
        parsed = _message(message)
        with _mlsrs_errors("process the message"):
            received = group.process_incoming_message(parsed)
        if received.is_application_message():
            return received.data
        if received.is_commit():
            self._pending = None
            return None
        if received.is_received_proposal():
            return None
        raise StateError(f"not a message for a group (mls-rs says {type(received).__name__})")

    def encrypt(self, plaintext: bytes) -> bytes:
        """An application message (PrivateMessage) in the current epoch."""
        group = self._require_group()
        with _mlsrs_errors("encrypt the application message"):
            return group.encrypt_application_message(bytes(plaintext)).to_bytes()

    def export(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of the current epoch (RFC 9420 section 8.5)."""
        group = self._require_group()
        with _mlsrs_errors("export a secret"):
            return group.export_secret(bytes(label), bytes(context), length)

    def ratchet_tree(self) -> bytes:
        """The current epoch's ratchet tree, to give a joiner when Welcomes omit it.

        After an ``add``, call :meth:`merge_pending` first: before, this is the old tree.
        """
        group = self._require_group()
        with _mlsrs_errors("export the ratchet tree"):
            return group.export_tree().bytes

    def _snapshot(self) -> tuple[bytes, bytes]:
        group = self._require_group()
        with _mlsrs_errors("serialize the group state"):
            group.write_to_storage()
        group_id = self._storage.last_group_id
        if group_id is None:
            raise StateError("mls-rs wrote no group state")
        return group_id, self._storage.state(group_id) or b""

    @property
    def group_id(self) -> bytes:
        return self._snapshot()[0]

    @property
    def epoch(self) -> int:
        """mls-rs's own idea of the current epoch (read from its serialized state, not counted here)."""
        return _epoch_from_snapshot(*self._snapshot())
