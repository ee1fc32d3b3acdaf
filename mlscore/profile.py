"""The MLS two-party profile session (draft-kohbrok-mls-two-party-profile-01).

One sans-I/O object runs the profile for one two-member group across any
number of connections: key establishment (ClientHello/ServerHello), ping-pong
PCS rekeying (ConnectionUpdate/EpochKeyUpdate) and resumption
(ResumptionRequest/ResumptionResponse).  The transports (``mlsquic``,
``mlstls``) feed it whole :class:`~mlscore.profile_wire.ProfileMessage`
bytes and the current time, and act on what it returns, in order:

* :class:`SendMessage`: write these bytes to the peer under the transport keys
  currently in use;
* :class:`KeysChanged`: from now on protect and unprotect with keys exported
  from ``epoch`` (the draft's key-switch points: the replier after sending its
  EpochKeyUpdate, the committer after receiving it);
* :class:`ResumptionIgnored`: a colliding resumption lost the tie-break.

Any message not allowed in the current state and any validation failure is
fatal (section 4 of the draft): the session deletes its group state, so it can
never be resumed, and raises the error for the transport to close with.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from . import safe_app
from .codec import Reader, Writer, decode_enum
from .credentials import AuthenticationService, BasicCredentialPolicy, Credential
from .errors import DecodeError, EpochError, MLSError, StateError, ValidationError
from .extensions import Extension, ExtensionType, RequiredCapabilities
from .framing import MLSMessage, PrivateMessage, PublicMessage, WireFormat
from .group import ApplicationMessage, CommitMessage, Group, GroupConfig
from .key_package import NO_EXPIRY, KeyPackageBundle, create_key_package, default_capabilities
from .leaf_node import Lifetime
from .messages import KeyPackage, Welcome
from .profile_wire import EpochKeyUpdate, ProfileMessage, ProfileMessageType, TwoPartyMessageType
from .store import SessionStore

log = logging.getLogger(__name__)

TWO_PARTY_PROFILE_COMPONENT = safe_app.TWO_PARTY_PROFILE_DEFAULT
"""Private-use component ID standing in for the draft's TBD1 (configurable)."""


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Role:
        return Role.RESPONDER if self is Role.INITIATOR else Role.INITIATOR


class State(Enum):
    AWAITING_CLIENT_HELLO = "awaiting ClientHello"
    AWAITING_SERVER_HELLO = "awaiting ServerHello"
    SYNCED = "synced"
    AWAITING_EPOCH_KEY_UPDATE = "awaiting EpochKeyUpdate"
    AWAITING_RESUMPTION_RESPONSE = "awaiting ResumptionResponse"
    CLOSED = "closed"


# -- actions for the transport -------------------------------------------------

@dataclass(frozen=True)
class SendMessage:
    data: bytes
    msg_type: ProfileMessageType


@dataclass(frozen=True)
class KeysChanged:
    """Switch the transport to keys exported from this epoch."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class ResumptionIgnored:
    """The peer's colliding ResumptionRequest lost the tie-break (we are the initial initiator)."""

    epoch: int


Action = SendMessage | KeysChanged | ResumptionIgnored


@dataclass(frozen=True)
class RekeyPolicy:
    """When to send a ConnectionUpdate by ourselves; ``None`` disables that trigger."""

    max_bytes: int | None = None
    max_seconds: float | None = None


@dataclass(frozen=True)
class ProfileConfig:
    """Everything a session needs that is not protocol state."""

    credential: Credential
    signature_priv: bytes = field(repr=False)
    cipher_suite: int = 1
    authentication_service: AuthenticationService = field(default_factory=BasicCredentialPolicy)
    component_id: int = TWO_PARTY_PROFILE_COMPONENT
    handshake_wire_format: WireFormat = WireFormat.PRIVATE_MESSAGE
    accepted_suites: tuple[int, ...] = ()
    lifetime: Lifetime = NO_EXPIRY
    rekey: RekeyPolicy = RekeyPolicy()
    leaf_extensions: tuple[Extension, ...] = ()

    def group_config(self, now: int | None) -> GroupConfig:
        return GroupConfig(authentication_service=self.authentication_service,
                           handshake_wire_format=self.handshake_wire_format, now=now)


@dataclass(frozen=True)
class PendingCommit:
    """A commit we sent and the epoch it creates, kept until the peer confirms it."""

    message: bytes  # the encoded MLSMessage, resent byte for byte on resumption
    msg_type: TwoPartyMessageType
    group: Group


# -- the session ----------------------------------------------------------------

class TwoPartySession:
    """One side of a two-party MLS group, across connections."""

    def __init__(self, config: ProfileConfig, *, state: State, initial_role: Role, current_role: Role,
                 group: Group | None = None, pending: PendingCommit | None = None,
                 last_applied_commit: bytes | None = None,
                 on_state_change: Callable[[TwoPartySession], None] | None = None) -> None:
        self.config = config
        self.state = state
        self.initial_role = initial_role
        self.current_role = current_role
        self.group = group
        self.pending = pending
        self.last_applied_commit = last_applied_commit  # hash of the last peer commit we applied
        self._key_package: KeyPackageBundle | None = None
        self._on_state_change = on_state_change
        self._rekey_bytes = 0
        self._rekey_since: float | None = None
        self._request_received = False  # a ResumptionRequest arrived on the current connection

    def __repr__(self) -> str:
        epoch = self.group.epoch if self.group else None
        return (f"TwoPartySession(state={self.state.value!r}, epoch={epoch}, "
                f"initial_role={self.initial_role.value}, current_role={self.current_role.value})")

    # -- construction --------------------------------------------------------

    @classmethod
    def initiator(cls, config: ProfileConfig, *, now: int | None = None,
                  on_state_change: Callable[[TwoPartySession], None] | None = None
                  ) -> tuple[TwoPartySession, list[Action]]:
        """Start phase 1: build our KeyPackage and the ClientHello to send."""
        session = cls(config, state=State.AWAITING_SERVER_HELLO, initial_role=Role.INITIATOR,
                      current_role=Role.INITIATOR, on_state_change=on_state_change)
        session._key_package = create_key_package(
            config.cipher_suite, config.credential, config.signature_priv, lifetime=config.lifetime,
            capabilities=session._capabilities(), leaf_extensions=session._leaf_extensions())
        hello = MLSMessage(session._key_package.key_package).to_bytes()
        return session, [session._send(ProfileMessageType.CLIENT_HELLO, hello)]

    @classmethod
    def responder(cls, config: ProfileConfig, *,
                  on_state_change: Callable[[TwoPartySession], None] | None = None) -> TwoPartySession:
        """Wait for a ClientHello."""
        return cls(config, state=State.AWAITING_CLIENT_HELLO, initial_role=Role.RESPONDER,
                   current_role=Role.RESPONDER, on_state_change=on_state_change)

    # -- persistence (what the draft requires both sides to keep) ---------------

    STATE_FORMAT = 1

    def to_state(self) -> bytes | None:
        """The resumable state, or None before phase 1 completes (nothing to resume then)."""
        if self.group is None or self.state is State.CLOSED:
            return None
        w = Writer().u16(self.STATE_FORMAT)
        w.u8(_STATE_CODES[self.state]).u8(_ROLE_CODES[self.initial_role]).u8(_ROLE_CODES[self.current_role])
        w.opaque(self.group.to_state()).optional(self.last_applied_commit, Writer.opaque)
        w.optional(self.pending, lambda w2, p: w2.opaque(p.message).u8(p.msg_type).opaque(p.group.to_state()))
        return w.getvalue()

    @classmethod
    def from_state(cls, data: bytes, config: ProfileConfig, *,
                   on_state_change: Callable[[TwoPartySession], None] | None = None) -> TwoPartySession:
        r = Reader(data)
        if r.u16() != cls.STATE_FORMAT:
            raise DecodeError("unknown session state format")
        state = _decode_code(_STATE_CODES, r.u8(), "state")
        initial_role = _decode_code(_ROLE_CODES, r.u8(), "role")
        current_role = _decode_code(_ROLE_CODES, r.u8(), "role")
        group_config = config.group_config(None)
        group = Group.from_state(r.opaque(), group_config)
        last_applied = r.optional(Reader.opaque)

        def pending(r2: Reader) -> PendingCommit:
            message = r2.opaque()
            msg_type = decode_enum(TwoPartyMessageType, r2.u8(), "two-party message type")
            return PendingCommit(message, msg_type, Group.from_state(r2.opaque(), group_config))

        pending_commit = r.optional(pending)
        r.finish()
        return cls(config, state=state, initial_role=initial_role, current_role=current_role, group=group,
                   pending=pending_commit, last_applied_commit=last_applied, on_state_change=on_state_change)

    # -- properties ----------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        return self.group.epoch if self.group else None

    @property
    def group_id(self) -> bytes | None:
        return self.group.group_id if self.group else None

    @property
    def established(self) -> bool:
        return self.group is not None and self.state is not State.CLOSED

    def export_secret(self, label: bytes | str, context: bytes, length: int) -> bytes:
        """MLS-Exporter of the epoch whose keys are in use."""
        if self.group is None or self.state is State.CLOSED:
            raise StateError(f"no keys in state {self.state.value}")
        return self.group.export_secret(label, context, length)

    def safe_export(self) -> bytes:
        """This profile's safe-exporter secret for the current epoch (once per epoch)."""
        if self.group is None or self.state is State.CLOSED:
            raise StateError(f"no keys in state {self.state.value}")
        return self.group.safe_export(self.config.component_id)

    # -- incoming --------------------------------------------------------------

    def receive(self, data: bytes | ProfileMessage, *, now: int | None = None) -> list[Action]:
        """Process one profile message; fatal errors close the session and re-raise."""
        if self.state is State.CLOSED:
            raise StateError("the session is closed")
        try:
            message = data if isinstance(data, ProfileMessage) else ProfileMessage.from_bytes(data)
            handler = self._HANDLERS.get(message.msg_type)
            if handler is None:
                raise StateError(f"{message.msg_type.name} is never sent to this side")
            actions = handler(self, message.body, now)
        except MLSError as exc:
            self._fail(exc)
            raise
        self._changed()
        return actions

    def _on_client_hello(self, body: bytes, now: int | None) -> list[Action]:
        self._expect(State.AWAITING_CLIENT_HELLO, "ClientHello")
        key_package = self._decode(body, KeyPackage, "ClientHello")
        suite_id = key_package.cipher_suite
        if suite_id not in (self.config.accepted_suites or (self.config.cipher_suite,)):
            raise ValidationError(f"cipher suite {suite_id} is not accepted")
        safe_app.require_components(key_package.leaf_node.extensions, [self.config.component_id],
                                    "the initiator's KeyPackage")
        own = create_key_package(suite_id, self.config.credential, self.config.signature_priv,
                                 lifetime=self.config.lifetime, capabilities=self._capabilities(suite_id),
                                 leaf_extensions=self._leaf_extensions())
        group = Group.create(own, extensions=self._group_extensions(),
                             config=self.config.group_config(now))
        from .messages import Add

        result = group.commit([Add(key_package)], force_path=False, include_tree_in_welcome=True)
        group.destroy()
        assert result.welcome is not None
        self.group = result.group
        self.state = State.SYNCED
        return [self._send(ProfileMessageType.SERVER_HELLO, result.welcome.to_bytes()),
                KeysChanged(self.group.epoch, "key establishment")]

    def _on_server_hello(self, body: bytes, now: int | None) -> list[Action]:
        self._expect(State.AWAITING_SERVER_HELLO, "ServerHello")
        assert self._key_package is not None
        welcome = self._decode(body, Welcome, "ServerHello")
        group = Group.join(welcome, self._key_package, config=self.config.group_config(now))
        members = group.members()
        if len(members) != 2:
            raise ValidationError(f"the group has {len(members)} members, the profile needs exactly two")
        if group.own_leaf_node.encryption_key != self._key_package.key_package.leaf_node.encryption_key:
            raise ValidationError("our leaf in the group is not the KeyPackage we sent")
        safe_app.require_components(group.context.extensions, [self.config.component_id],
                                    "the GroupContext")
        self._key_package = None
        self.group = group
        self.state = State.SYNCED
        return [KeysChanged(group.epoch, "key establishment")]

    def _on_connection_update(self, body: bytes, now: int | None) -> list[Action]:
        if self.state is State.AWAITING_EPOCH_KEY_UPDATE:
            if self.current_role is Role.INITIATOR:
                log.debug("ignoring concurrent ConnectionUpdate: the current initiator's commit wins")
                return []
            self._drop_pending()
        elif self.state is not State.SYNCED:
            raise StateError(f"ConnectionUpdate not allowed in state {self.state.value}")
        assert self.group is not None
        message = self._checked_commit(body, {TwoPartyMessageType.CONNECTION_UPDATE})
        new_group = self._apply_peer_commit(self.group, message, body)
        return self._confirm(new_group, "peer ConnectionUpdate")

    def _on_epoch_key_update(self, body: bytes, now: int | None) -> list[Action]:
        self._expect(State.AWAITING_EPOCH_KEY_UPDATE, "EpochKeyUpdate")
        assert self.pending is not None
        pending = self.pending.group
        message = self._decode(body, None, "EpochKeyUpdate")
        if not isinstance(message.body, PrivateMessage):
            raise ValidationError("an EpochKeyUpdate must be a PrivateMessage")
        self._check_type(message.body.authenticated_data, {TwoPartyMessageType.EPOCH_KEY_UPDATE})
        if message.body.epoch != pending.epoch:
            raise EpochError(f"EpochKeyUpdate for epoch {message.body.epoch}, expected {pending.epoch}")
        processed = pending.process(message)
        if not isinstance(processed, ApplicationMessage):
            raise ValidationError("an EpochKeyUpdate must be an application message")
        update = EpochKeyUpdate.from_bytes(processed.data)
        if update.epoch != pending.epoch:
            raise EpochError(f"EpochKeyUpdate names epoch {update.epoch}, expected {pending.epoch}")
        self._adopt(pending)
        self.pending = None
        self.state = State.SYNCED
        return [KeysChanged(pending.epoch, "peer confirmed our commit")]

    def _on_resumption_request(self, body: bytes, now: int | None) -> list[Action]:
        allowed = {TwoPartyMessageType.RESUMPTION_REQUEST, TwoPartyMessageType.CONNECTION_UPDATE,
                   TwoPartyMessageType.RESUMPTION_RESPONSE}
        if self.state not in (State.SYNCED, State.AWAITING_EPOCH_KEY_UPDATE,
                              State.AWAITING_RESUMPTION_RESPONSE):
            raise StateError(f"ResumptionRequest not allowed in state {self.state.value}")
        assert self.group is not None
        if self._request_received:
            # A ResumptionRequest starts a connection; a second one on it is a replay.
            raise StateError("a second ResumptionRequest on the same connection")
        self._request_received = True
        message = self._checked_commit(body, allowed)
        epoch = _message_epoch(message)
        digest = _commit_hash(body)
        colliding = self.state is State.AWAITING_RESUMPTION_RESPONSE
        if colliding and self.initial_role is Role.INITIATOR:
            # Both requests crossed, so the peer is processing ours: exactly one side may
            # process, and it is the initial responder (docs/profile.md, "Crossed resumptions").
            log.info("crossed resumption: we are the initial initiator, ignoring the peer's request")
            return [ResumptionIgnored(self.group.epoch)]
        if digest == self.last_applied_commit:
            # Rule 1: we applied it before the break; its confirmation was lost.
            self._drop_pending()
        elif self.pending is not None and epoch == self.pending.group.epoch:
            # Rule 2: the peer applied our pending commit; its confirmation was lost.
            self._adopt(self.pending.group)
            self.pending = None
            self._adopt(self._apply_peer_commit(self.group, message, body))
        else:
            if epoch != self.group.epoch:
                raise EpochError(f"ResumptionRequest commit for epoch {epoch}, we are at {self.group.epoch}")
            self._drop_pending()
            self._adopt(self._apply_peer_commit(self.group, message, body))
        self.current_role = Role.RESPONDER
        return [self._commit(TwoPartyMessageType.RESUMPTION_RESPONSE)]

    def _on_resumption_response(self, body: bytes, now: int | None) -> list[Action]:
        self._expect(State.AWAITING_RESUMPTION_RESPONSE, "ResumptionResponse")
        assert self.pending is not None
        message = self._checked_commit(body, {TwoPartyMessageType.RESUMPTION_RESPONSE})
        own = self.pending.group
        new_group = self._apply_peer_commit(own, message, body)
        self._adopt(own)
        self.pending = None
        return self._confirm(new_group, "resumption")

    _HANDLERS: dict[ProfileMessageType, Callable[[TwoPartySession, bytes, int | None], list[Action]]] = {
        ProfileMessageType.CLIENT_HELLO: _on_client_hello,
        ProfileMessageType.SERVER_HELLO: _on_server_hello,
        ProfileMessageType.CONNECTION_UPDATE: _on_connection_update,
        ProfileMessageType.EPOCH_KEY_UPDATE: _on_epoch_key_update,
        ProfileMessageType.RESUMPTION_REQUEST: _on_resumption_request,
        ProfileMessageType.RESUMPTION_RESPONSE: _on_resumption_response,
    }

    # -- outgoing --------------------------------------------------------------

    def update(self) -> list[Action]:
        """Send a ConnectionUpdate (a commit with a fresh UpdatePath) if Synced."""
        if self.state is not State.SYNCED:
            raise StateError(f"cannot start a rekey in state {self.state.value}")
        actions = [self._commit(TwoPartyMessageType.CONNECTION_UPDATE)]
        self._changed()
        return actions

    def resume(self) -> list[Action]:
        """Start phase 3 on a new connection: we become the current initiator."""
        if self.state not in (State.SYNCED, State.AWAITING_EPOCH_KEY_UPDATE,
                              State.AWAITING_RESUMPTION_RESPONSE):
            raise StateError(f"cannot resume in state {self.state.value}")
        self.current_role = Role.INITIATOR
        self._request_received = False
        if self.pending is not None:
            self.state = State.AWAITING_RESUMPTION_RESPONSE
            action = self._send(ProfileMessageType.RESUMPTION_REQUEST, self.pending.message)
        else:
            action = self._commit(TwoPartyMessageType.RESUMPTION_REQUEST)
        self._changed()
        return [action]

    def connection_lost(self) -> None:
        """The transport broke: forget per-connection counters, keep the group state."""
        self._rekey_bytes = 0
        self._rekey_since = None
        self._request_received = False
        if self.group is None and self.state is not State.CLOSED:
            # A break in phase 1 discards the partial state (section 5 of the draft).
            self.state = State.CLOSED
            self._key_package = None

    def rekey_due(self, now: float, bytes_sent: int = 0) -> bool:
        """Count traffic and time; True when the policy asks for a ConnectionUpdate now."""
        self._rekey_bytes += bytes_sent
        if self._rekey_since is None:
            self._rekey_since = now
        policy = self.config.rekey
        if self.state is not State.SYNCED:
            return False
        due_bytes = policy.max_bytes is not None and self._rekey_bytes >= policy.max_bytes
        due_time = policy.max_seconds is not None and now - self._rekey_since >= policy.max_seconds
        if due_bytes or due_time:
            self._rekey_bytes = 0
            self._rekey_since = now
            return True
        return False

    def close(self) -> None:
        """End the relationship: the group state is deleted and can never be resumed.

        To keep it for a later resumption, call :meth:`connection_lost` instead.
        """
        self._forget()
        self.state = State.CLOSED
        self._changed()

    # -- internals ---------------------------------------------------------------

    def _commit(self, msg_type: TwoPartyMessageType) -> SendMessage:
        assert self.group is not None
        aad = self._safe_aad(msg_type)
        result = self.group.commit(force_path=True, authenticated_data=aad)
        encoded = result.message.to_bytes()
        self.pending = PendingCommit(encoded, msg_type, result.group)
        if msg_type is TwoPartyMessageType.RESUMPTION_REQUEST:
            self.state = State.AWAITING_RESUMPTION_RESPONSE
            wire = ProfileMessageType.RESUMPTION_REQUEST
        else:
            self.state = State.AWAITING_EPOCH_KEY_UPDATE
            wire = (ProfileMessageType.CONNECTION_UPDATE if msg_type is TwoPartyMessageType.CONNECTION_UPDATE
                    else ProfileMessageType.RESUMPTION_RESPONSE)
        return self._send(wire, encoded)

    def _confirm(self, new_group: Group, reason: str) -> list[Action]:
        """Reply with EpochKeyUpdate in the new epoch, then switch (replier switches after sending)."""
        aad = self._safe_aad(TwoPartyMessageType.EPOCH_KEY_UPDATE)
        ack = new_group.protect(EpochKeyUpdate(new_group.epoch).to_bytes(), authenticated_data=aad)
        self._adopt(new_group)
        self.state = State.SYNCED
        return [self._send(ProfileMessageType.EPOCH_KEY_UPDATE, ack.to_bytes()),
                KeysChanged(new_group.epoch, reason)]

    def _apply_peer_commit(self, group: Group, message: MLSMessage, encoded: bytes) -> Group:
        """Validate a peer commit against ``group``: empty proposals, UpdatePath, components."""
        processed = group.process(message)
        if not isinstance(processed, CommitMessage):
            raise ValidationError("expected a commit")
        commit = processed.commit
        if commit.proposals or commit.path is None:
            raise ValidationError("profile commits must have no proposals and an UpdatePath")
        safe_app.require_components(commit.path.leaf_node.extensions, [self.config.component_id],
                                    "the peer's new LeafNode")
        self.last_applied_commit = _commit_hash(encoded)
        return processed.group

    def _checked_commit(self, body: bytes, allowed: set[TwoPartyMessageType]) -> MLSMessage:
        message = self._decode(body, None, "commit")
        inner = message.body
        if not isinstance(inner, (PublicMessage, PrivateMessage)):
            raise ValidationError(f"expected a commit, got {message.wire_format.name}")
        aad = inner.content.authenticated_data if isinstance(inner, PublicMessage) else inner.authenticated_data
        self._check_type(aad, allowed)
        return message

    def _check_type(self, authenticated_data: bytes, allowed: set[TwoPartyMessageType]) -> None:
        safe_aad, _ = safe_app.split_authenticated_data(authenticated_data)
        item = safe_app.safe_aad_item(safe_aad, self.config.component_id)
        if item is None:
            raise ValidationError("message lacks the two-party profile Safe AAD item")
        reader = Reader(item)
        value = decode_enum(TwoPartyMessageType, reader.u8(), "two-party message type")
        reader.finish()
        if value not in allowed:
            raise ValidationError(f"Safe AAD message type {value.name} not allowed here")

    def _safe_aad(self, msg_type: TwoPartyMessageType) -> bytes:
        item = safe_app.SafeAADItem(self.config.component_id, Writer().u8(msg_type).getvalue())
        return safe_app.encode_authenticated_data(safe_app.SafeAAD((item,)))

    def _decode(self, body: bytes, expected: type | None, what: str) -> MLSMessage:
        message = MLSMessage.from_bytes(body)
        if expected is None:
            return message
        if not isinstance(message.body, expected):
            raise ValidationError(f"{what} must carry a {expected.__name__}, got {message.wire_format.name}")
        return message.body  # type: ignore[return-value]

    def _adopt(self, group: Group) -> None:
        if self.group is not None and self.group is not group:
            self.group.destroy()
        self.group = group

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.pending.group.destroy()
            self.pending = None

    def _expect(self, state: State, what: str) -> None:
        if self.state is not state:
            raise StateError(f"{what} not allowed in state {self.state.value}")

    def _send(self, msg_type: ProfileMessageType, body: bytes) -> SendMessage:
        return SendMessage(ProfileMessage(msg_type, body).to_bytes(), msg_type)

    def _fail(self, exc: Exception) -> None:
        log.warning("two-party session failed: %s: %s", type(exc).__name__, exc)
        self._forget()
        self.state = State.CLOSED
        self._changed()

    def _forget(self) -> None:
        self._drop_pending()
        if self.group is not None:
            self.group.destroy()
        self.group = None
        self.last_applied_commit = None
        self._key_package = None

    def _changed(self) -> None:
        if self._on_state_change is not None:
            self._on_state_change(self)

    def _capabilities(self, suite_id: int | None = None):
        return default_capabilities(suite_id or self.config.cipher_suite,
                                    extensions=(ExtensionType.APP_DATA_DICTIONARY,))

    def _leaf_extensions(self) -> tuple[Extension, ...]:
        return (safe_app.app_data_dictionary_extension([self.config.component_id]),
                *self.config.leaf_extensions)

    def _group_extensions(self) -> tuple[Extension, ...]:
        required = RequiredCapabilities(extension_types=(ExtensionType.APP_DATA_DICTIONARY,))
        return (safe_app.app_data_dictionary_extension([self.config.component_id]),
                Extension(ExtensionType.REQUIRED_CAPABILITIES, required.to_bytes()))


_STATE_CODES = {state: code for code, state in enumerate(State, start=1)}
_ROLE_CODES = {Role.INITIATOR: 1, Role.RESPONDER: 2}


def _decode_code(codes: dict, value: int, what: str):
    for item, code in codes.items():
        if code == value:
            return item
    raise DecodeError(f"unknown {what} code {value}")


def persist_to(store: SessionStore) -> Callable[[TwoPartySession], None]:
    """An ``on_state_change`` callback that keeps ``store`` in step with the session.

    A closed session's state is deleted, so a failed group can never be resumed.
    """
    known: dict[int, bytes] = {}

    def save(session: TwoPartySession) -> None:
        state = session.to_state()
        if state is not None and session.group_id is not None:
            known[id(session)] = session.group_id
            store.save(session.group_id, state)
        elif session.state is State.CLOSED and id(session) in known:
            store.delete(known.pop(id(session)))

    return save


def _commit_hash(encoded: bytes) -> bytes:
    """Collision-resistant digest of a commit as received (the draft lets us keep a hash)."""
    return hashlib.sha256(encoded).digest()


def _message_epoch(message: MLSMessage) -> int:
    body = message.body
    if isinstance(body, PublicMessage):
        return body.content.epoch
    if isinstance(body, PrivateMessage):
        return body.epoch
    raise DecodeError("not a group message")


__all__ = [
    "Action",
    "KeysChanged",
    "ProfileConfig",
    "RekeyPolicy",
    "ResumptionIgnored",
    "Role",
    "SendMessage",
    "State",
    "TwoPartySession",
    "persist_to",
]
